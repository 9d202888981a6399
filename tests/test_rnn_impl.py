"""The recurrence implementations (scan | unrolled | pallas | auto) against the scan and float64.

The Pallas GRU kernel runs in interpret mode on CPU; its GPU (Triton) lowering is checked by
lowering the forward and backward kernels for the ``cuda`` platform without running them.
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.nn import GRU, LSTM, gru_reference_numpy, rnn, rnn_pallas

B, T, D, H = 20, 6, 4, 12   # B=20 with block_b 16 -> two programs (partial dW summed), padding


def _data(layers, dirs, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  h0 = rng.normal(size=(layers * dirs, B, H)).astype(np.float32)
  return x, h0


def _loss_and_grads(module, params, x, h0, with_outputs=False):
  """A loss that weights every output and the final state differently; grads wrt all of
  (params, x, h0) (and the outputs (out, h_n), from the same compiled program)."""
  def loss(params, x, h0):
    out, hn = module.apply(params, x, h0)
    hn = hn[0] if isinstance(hn, tuple) else hn
    return jnp.sum(out * jnp.cos(out)) + jnp.sum(hn * jnp.sin(hn)), (out, hn)
  (l, outs), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      params, x, h0)
  return (l, g, outs) if with_outputs else (l, g)


def _assert_tree_close(a, b, atol, rtol=0.0):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u, np.float32), np.asarray(v, np.float32), atol=atol,
                               rtol=rtol)


def _rel_err(a, b):
  a = np.concatenate([np.ravel(np.asarray(u, np.float64)) for u in jax.tree.leaves(a)])
  b = np.concatenate([np.ravel(np.asarray(u, np.float64)) for u in jax.tree.leaves(b)])
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("impl,layers", [("unrolled", 1), ("pallas", 2)])
def test_gru_impls_match_scan_f32(impl, layers):
  """Bidirectional with h0; two layers for the kernel (its dx feeds the layer below)."""
  x, h0 = _data(layers, 2)
  ref = GRU(hidden=H, num_layers=layers, bidirectional=True, impl="scan")
  params = jax.jit(ref.init)(jax.random.key(0), x, h0)
  mod = GRU(hidden=H, num_layers=layers, bidirectional=True, impl=impl)
  l0, g0 = _loss_and_grads(ref, params, x, h0)
  l1, g1, (out, hn) = _loss_and_grads(mod, params, x, h0, with_outputs=True)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  _assert_tree_close(g1, g0, atol=2e-5)
  # and the values against PyTorch's equations in float64
  ref_out, ref_hn = gru_reference_numpy({k: np.asarray(v) for k, v in params["params"].items()},
                                        x, h0, num_layers=layers, bidirectional=True)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(hn, ref_hn, atol=1e-5)


@pytest.mark.parametrize("impl", ["unrolled", "pallas"])
def test_gru_impls_match_scan_bf16(impl):
  x, h0 = _data(1, 1, seed=1)
  ref32 = GRU(hidden=H, impl="scan")
  params = jax.jit(ref32.init)(jax.random.key(1), x, h0)
  ref = GRU(hidden=H, impl="scan", dtype=jnp.bfloat16)
  mod = GRU(hidden=H, impl=impl, dtype=jnp.bfloat16)
  (_, g32), (l0, g0), (l1, g1) = (_loss_and_grads(m, params, x, h0) for m in (ref32, ref, mod))
  np.testing.assert_allclose(l1, l0, rtol=2e-2)
  # bf16 operands: close to the bf16 scan, and no further from float32 than the bf16 scan is
  assert _rel_err(g1, g0) < 3e-2
  assert _rel_err(g1, g32) < 2 * _rel_err(g0, g32) + 1e-2
  if impl == "unrolled":   # same ops (XLA may fuse them differently)
    assert _rel_err(g1, g0) < 5e-3


@pytest.mark.parametrize("impl", ["pallas"])   # (unrolled: the scan's own constant-input path)
def test_gru_constant_input_reverse(impl):
  """The decoders' constant input (projected once, broadcast for the kernel) in both
  directions, gradients."""
  z = np.random.default_rng(2).normal(size=(B, D)).astype(np.float32)
  ref = GRU(hidden=H, bidirectional=True, impl="scan")
  params = ref.init(jax.random.key(2), z, constant_input=True, length=T)  # (no scan: cheap)
  mod = GRU(hidden=H, bidirectional=True, impl=impl)

  def loss(m, params, z):
    out, hn = m.apply(params, z, constant_input=True, length=T)
    return jnp.sum(out * jnp.cos(out)) + jnp.sum(hn)
  g0 = jax.jit(jax.grad(lambda p, z: loss(ref, p, z), argnums=(0, 1)))(params, z)
  g1 = jax.jit(jax.grad(lambda p, z: loss(mod, p, z), argnums=(0, 1)))(params, z)
  # (rtol: on CPU the scan's gradient sums over time in another order, gru_seq_grad.py; entries
  # of ~100 differ by ~2 ulp)
  _assert_tree_close(g1, g0, atol=2e-5, rtol=1e-6)


def test_lstm_unrolled_matches_scan_and_pallas_falls_back_to_it(caplog):
  x, h0 = _data(1, 2, seed=3)
  state = (h0, -h0)
  ref = LSTM(hidden=H, bidirectional=True, impl="scan")
  params = jax.jit(ref.init)(jax.random.key(3), x, state)

  def grad_fn(m):
    def loss(p, x):
      out, (hn, cn) = m.apply(p, x, state)
      return jnp.sum(out * jnp.cos(out)) + jnp.sum(cn)
    return jax.value_and_grad(loss, argnums=(0, 1))
  l0, g0 = jax.jit(grad_fn(ref))(params, x)
  l1, g1 = jax.jit(grad_fn(LSTM(hidden=H, bidirectional=True, impl="unrolled")))(params, x)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  _assert_tree_close(g1, g0, atol=1e-5, rtol=1e-5)
  # 'pallas' for an LSTM is exactly the unrolled program, with one notice per process
  rnn._NOTICES.clear()
  unrolled = jax.make_jaxpr(grad_fn(LSTM(hidden=H, bidirectional=True, impl="unrolled")))
  pallas = jax.make_jaxpr(grad_fn(LSTM(hidden=H, bidirectional=True, impl="pallas")))
  with caplog.at_level(logging.WARNING, logger="d2m_jax.nn.rnn"):
    assert str(pallas(params, x)) == str(unrolled(params, x))
    pallas(params, x)
  notices = [r.getMessage() for r in caplog.records if "no Pallas LSTM" in r.getMessage()]
  assert len(notices) == 1


def test_resolve_impl_per_backend_and_fallbacks():
  r = rnn.resolve_impl
  assert r("auto", "gru", 1024, backend="cpu") == "scan"
  assert r("auto", "gru", 1024, backend="gpu") == "unrolled"
  assert r("auto", "lstm", 512, backend="tpu") == "scan"
  assert r("scan", "gru", 30, backend="gpu") == "scan"
  assert r("pallas", "gru", 64, backend="gpu") == "pallas"
  assert r("pallas", "gru", 30, backend="cpu") == "pallas"       # interpret mode
  assert r("pallas", "gru", 65, backend="gpu") == "unrolled"     # W_hh too big for on chip
  assert r("pallas", "gru", 1024, backend="gpu") == "unrolled"
  assert r("pallas", "lstm", 32, backend="gpu") == "unrolled"
  assert r("pallas", "gru", 32, backend="tpu") == "unrolled"
  with pytest.raises(ValueError, match="rnn_impl"):
    r("cudnn", "gru", 32)


def test_scan_unroll_defaults():
  assert rnn.scan_unroll("scan", 32) == 1
  assert rnn.scan_unroll("unrolled", 32) == 32                  # the D2M unit GRUs: full
  assert rnn.scan_unroll("unrolled", rnn.FULL_UNROLL_MAX_STEPS + 1) == rnn.LONG_UNROLL
  assert rnn.scan_unroll("unrolled", 120, unroll=4) == 4
  assert rnn.scan_unroll("scan", 120, unroll=2) == 2


def test_pallas_padding_helpers():
  assert [rnn_pallas.padded_hidden(h) for h in (1, 12, 16, 30, 50, 64)] == [16, 16, 16, 32, 64,
                                                                            64]
  assert rnn_pallas.supports(64) and not rnn_pallas.supports(65)
  assert rnn_pallas.supports(1024, max_hidden=None)
  assert [rnn_pallas.default_block_b(b) for b in (1, 20, 64, 256)] == [16, 32, 64, 64]
  with pytest.raises(ValueError, match="block_b"):
    rnn_pallas.gru_layer_pallas(jnp.zeros((2, 3, 6)), jnp.zeros((3, 2)), jnp.zeros((2, 6)),
                                jnp.zeros((6,)), block_b=24)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pallas_gru_lowers_to_triton_for_gpu(monkeypatch, dtype):
  """The forward and backward kernels pass the Pallas -> Triton lowering (block shapes, loads,
  stores, dots, the in-kernel fori_loop): two Triton calls in the gradient's HLO for CUDA.
  (Compiling Triton to PTX needs a GPU; rnn.pallas_gpu_smoke() does that there.)"""
  monkeypatch.setattr(rnn_pallas, "_use_interpret", lambda: False)
  xp, h0 = jnp.ones((T, B, 3 * 50)), jnp.ones((B, 50))
  w, b = jnp.ones((50, 3 * 50)), jnp.ones((150,))

  def f(xp, h0, w, b):
    return jnp.sum(rnn_pallas.gru_layer_pallas(xp, h0, w, b, dtype=dtype, reverse=True)[0])
  try:
    lowered = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3))).trace(xp, h0, w, b).lower(
        lowering_platforms=("cuda",))
  except (NotImplementedError, RuntimeError) as e:
    if "cuda" in str(e).lower() and "platform" in str(e).lower():
      pytest.skip(f"this jaxlib cannot lower for CUDA: {e}")
    raise
  assert lowered.as_text().count("xla.gpu.triton") == 2


def test_config_rnn_impl_reaches_the_models():
  """``config.model.rnn_impl`` selects the kernel in the models the tasks build."""
  import pathlib
  import sys
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from configs import d2m_decomposition, style_paper, wgan_seq  # noqa: E402
  from d2m_jax.tasks import get_task
  from d2m_jax.tasks.d2m_decomposition import build_modules

  def init_jaxpr(config):
    task = get_task(config)
    return str(jax.make_jaxpr(lambda r: task.init_state(r, None, None))(jax.random.PRNGKey(0)))
  c = style_paper.get_config()                    # GRU-30: the fused kernel when asked for
  assert c.model.rnn_impl == "auto" and "pallas_call" not in init_jaxpr(c)
  c.model.rnn_impl = "pallas"
  assert "pallas_call" in init_jaxpr(c)
  c = d2m_decomposition.get_config()
  c.model.rnn_impl = "unrolled"
  mods = build_modules(c.model, jnp.float32)
  assert mods["movement_enc"].rnn_impl == mods["stdp_dec"].rnn_impl == "unrolled"
  c = wgan_seq.get_config()
  c.model.rnn_impl = "scan"
  assert get_task(c)._gen().rnn_impl == "scan"  # pylint: disable=protected-access
