"""GRU/LSTM scans against float64 numpy references with PyTorch's gate equations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.nn import GRU, LSTM, gru_reference_numpy, lstm_reference_numpy


def _flat(params):
  return {k: np.asarray(v) for k, v in params["params"].items()}


@pytest.mark.parametrize("layers,bidir", [(1, False), (2, False), (1, True), (2, True)])
def test_gru_matches_numpy(layers, bidir):
  B, T, D, H = 3, 7, 5, 6
  x = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)
  h0 = np.random.default_rng(1).normal(size=(layers * (2 if bidir else 1), B, H)).astype(np.float32)
  m = GRU(hidden=H, num_layers=layers, bidirectional=bidir)
  params = m.init(jax.random.key(0), x, h0)
  out, hn = m.apply(params, x, h0)
  ref_out, ref_hn = gru_reference_numpy(_flat(params), x, h0, num_layers=layers,
                                        bidirectional=bidir)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(hn, ref_hn, atol=1e-5)


def test_gru_param_count_matches_pytorch():
  # PyTorch nn.GRU(28, 1024, bidirectional=True): 2 * (3*1024*28 + 3*1024*1024 + 6*1024).
  m = GRU(hidden=1024, bidirectional=True)
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 32, 28)))
  n = sum(np.prod(s.shape) for s in jax.tree.leaves(shapes))
  assert n == 2 * (3 * 1024 * 28 + 3 * 1024 * 1024 + 6 * 1024) == 6_475_776


def test_gru_constant_input_equals_repeated_input():
  B, T, D, H = 2, 5, 4, 3
  z = np.random.default_rng(0).normal(size=(B, D)).astype(np.float32)
  m = GRU(hidden=H)
  params = m.init(jax.random.key(0), np.repeat(z[:, None], T, 1))
  a, ha = m.apply(params, np.repeat(z[:, None], T, 1))
  b, hb = m.apply(params, z, constant_input=True, length=T)
  np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(ha, hb, atol=1e-6)


@pytest.mark.parametrize("seq_grad,bidir", [("on", False), ("on", True), ("off", True)])
def test_gru_step_input_equals_concatenated_input(monkeypatch, seq_grad, bidir):
  """constant z plus a shared per-step clock == the GRU on concat(z, clock[t]) at every step
  (the beat-phase decoder's input), outputs and gradients; with the written-out backward (the
  CPU default: the clock as a per-step bias of a constant input) and with autodiff."""
  from d2m_jax.nn import rnn
  monkeypatch.setattr(rnn, "SEQ_GRAD_DEFAULT", seq_grad)
  B, T, D, D2, H = 2, 5, 4, 3, 6
  rng = np.random.default_rng(1)
  z = rng.normal(size=(B, D)).astype(np.float32)
  clock = rng.normal(size=(T, D2)).astype(np.float32)
  full = np.concatenate([np.repeat(z[:, None], T, 1), np.repeat(clock[None], B, 0)], -1)
  m = GRU(hidden=H, num_layers=2, bidirectional=bidir)
  params = m.init(jax.random.key(0), full)

  def loss_full(p):
    out, hn = m.apply(p, full)
    return jnp.sum(jnp.sin(out)) + jnp.sum(hn ** 2), out

  def loss_step(p):
    out, hn = m.apply(p, z, constant_input=True, length=T, step_input=clock)
    return jnp.sum(jnp.sin(out)) + jnp.sum(hn ** 2), out

  (la, a), ga = jax.value_and_grad(loss_full, has_aux=True)(params)
  (lb, b), gb = jax.value_and_grad(loss_step, has_aux=True)(params)
  np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(la, lb, rtol=1e-6)
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="step_input needs constant_input"):
    m.apply(params, full, step_input=clock)


@pytest.mark.parametrize("layers,bidir", [(2, False), (2, True)])
def test_lstm_matches_numpy(layers, bidir):
  B, T, D, H = 2, 6, 4, 5
  rng = np.random.default_rng(3)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  n = layers * (2 if bidir else 1)
  state = (rng.normal(size=(n, B, H)).astype(np.float32),
           rng.normal(size=(n, B, H)).astype(np.float32))
  m = LSTM(hidden=H, num_layers=layers, bidirectional=bidir)
  params = m.init(jax.random.key(0), x, state)
  out, (hn, cn) = m.apply(params, x, state)
  ref_out, (ref_h, ref_c) = lstm_reference_numpy(_flat(params), x, state, num_layers=layers,
                                                 bidirectional=bidir)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(hn, ref_h, atol=1e-5)
  np.testing.assert_allclose(cn, ref_c, atol=1e-5)


def test_gru_bfloat16_close_to_float32():
  x = np.random.default_rng(0).normal(size=(4, 10, 8)).astype(np.float32)
  m32, m16 = GRU(hidden=16), GRU(hidden=16, dtype=jnp.bfloat16)
  params = m32.init(jax.random.key(0), x)
  a, _ = m32.apply(params, x)
  b, _ = m16.apply(params, x)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=3e-2)
