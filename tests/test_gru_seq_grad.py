"""The GRU's written-out backward (d2m_jax/nn/gru_seq_grad.py) against autodiff of the scan and
against central differences of the float64 numpy GRU (PyTorch's equations)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.nn import GRU, gru_reference_numpy
from d2m_jax.nn import gru_seq_grad, rnn


def _inputs(seed, T, B, H, const):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  xp = jax.random.normal(k[0], (B, 3 * H) if const else (T, B, 3 * H))
  h0 = jax.random.normal(k[1], (B, H))
  w = 0.4 * jax.random.normal(k[2], (H, 3 * H))
  b = 0.3 * jax.random.normal(k[3], (3 * H,))
  return xp, h0, w, b


def _loss(seq_grad, T, const, reverse, dtype, xp, h0, w, b, unroll=1):
  ys, h_t = rnn.recurrent_scan("gru", xp, h0, w, b, reverse=reverse, dtype=dtype,
                               length=T if const else None, seq_grad=seq_grad, unroll=unroll)
  return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(jnp.sin(3.0 * h_t))


@pytest.mark.parametrize("const,reverse,unroll", [(False, False, 1), (False, True, 1),
                                                  (True, False, 1), (True, True, 1),
                                                  (False, True, 3)])
def test_seq_grad_equals_autodiff_f32(const, reverse, unroll):
  T, B, H = 7, 3, 5
  args = _inputs(0, T, B, H, const)

  def grads(sg):
    f = functools.partial(_loss, sg, T, const, reverse, jnp.float32, unroll=unroll)
    ys_fn = lambda *a: rnn.recurrent_scan(  # noqa: E731
        "gru", *a, reverse=reverse, length=T if const else None, seq_grad=sg, unroll=unroll)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(*args), jax.jit(ys_fn)(*args)

  (va, ga), (ya, ha) = grads("on")
  (vb, gb), (yb, hb) = grads("off")
  np.testing.assert_allclose(ya, yb, rtol=1e-6, atol=1e-7)   # the forward is the same scan
  np.testing.assert_allclose(ha, hb, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(va, vb, rtol=1e-6)
  for a, c in zip(ga, gb):                # only the order of the float32 sums differs
    np.testing.assert_allclose(a, c, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_per_step_bias_of_a_constant_input_equals_autodiff(reverse):
  """A constant input plus a per-step term shared by the batch (x_bias (T, 3H), the beat-phase
  clock): the written-out backward (input kept constant, the term's gradient summed over the
  batch in the reverse scan) against autodiff of the broadcast time-major projection, outputs
  and the gradients of all five inputs, the (T, 3H) term's included."""
  T, B, H = 6, 3, 4
  xp, h0, w, b = _inputs(1, T, B, H, True)
  bx = jax.random.normal(jax.random.PRNGKey(9), (T, 3 * H))

  def run(sg):
    def f(xp, h0, w, b, bx):
      ys, h_t = rnn.recurrent_scan("gru", xp, h0, w, b, reverse=reverse, length=T,
                                   seq_grad=sg, x_bias=bx)
      return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(jnp.sin(3.0 * h_t)), ys
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4), has_aux=True))(
        xp, h0, w, b, bx)

  (va, ya), ga = run("on")
  (vb, yb), gb = run("off")
  ref, _ = rnn.recurrent_scan("gru", xp[None] + bx[:, None], h0, w, b, reverse=reverse,
                              seq_grad="off")
  np.testing.assert_allclose(ya, ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(yb, ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(va, vb, rtol=1e-6)
  assert ga[4].shape == (T, 3 * H)
  for a, c in zip(ga, gb):
    np.testing.assert_allclose(a, c, rtol=2e-5, atol=2e-6)


def test_seq_grad_matches_float64_central_differences():
  """d(loss)/d(params) of the GRU module (the CPU default takes the written-out backward)
  against central differences of the float64 numpy reference, every parameter entry."""
  B, T, D, H = 2, 4, 3, 4
  rng = np.random.default_rng(5)
  x = rng.normal(size=(B, T, D))
  h0 = rng.normal(size=(2, B, H))
  c = rng.normal(size=(B, T, 2 * H))
  m = GRU(hidden=H, bidirectional=True)
  assert rnn.use_seq_grad("auto", "cpu")
  params = m.init(jax.random.key(0), x.astype(np.float32), h0.astype(np.float32))["params"]

  def loss_jax(p):
    out, hn = m.apply({"params": p}, jnp.asarray(x, jnp.float32), jnp.asarray(h0, jnp.float32))
    return jnp.sum(out * c) + jnp.sum(hn ** 2)

  grads = jax.jit(jax.grad(loss_jax))(params)
  p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}

  def loss_ref(p):
    out, hn = gru_reference_numpy(p, x, h0, bidirectional=True)
    return float(np.sum(out * c) + np.sum(hn ** 2))

  eps = 1e-6
  for name, value in p64.items():
    num = np.zeros_like(value)
    for idx in np.ndindex(value.shape):
      hi, lo = dict(p64), dict(p64)
      hi[name] = value.copy(); hi[name][idx] += eps
      lo[name] = value.copy(); lo[name][idx] -= eps
      num[idx] = (loss_ref(hi) - loss_ref(lo)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grads[name]), num, rtol=1e-4, atol=1e-4,
                               err_msg=name)


def test_seq_grad_second_order_equals_autodiff():
  """A gradient penalty differentiates the gradient again (WGAN-GP critics with a GRU)."""
  T, B, H = 5, 2, 4
  xp, h0, w, b = _inputs(1, T, B, H, False)

  def penalty(sg, w):
    g = jax.grad(lambda x: jnp.sum(rnn.recurrent_scan("gru", x, h0, w, b, seq_grad=sg)[0] ** 2))
    return jnp.sum(g(xp) ** 2)

  np.testing.assert_allclose(jax.grad(functools.partial(penalty, "on"))(w),
                             jax.grad(functools.partial(penalty, "off"))(w), rtol=1e-4,
                             atol=1e-6)


def test_seq_grad_bfloat16_close_to_autodiff():
  T, B, H = 6, 3, 8
  args = _inputs(2, T, B, H, False)
  ga = jax.grad(functools.partial(_loss, "on", T, False, False, jnp.bfloat16),
                argnums=(0, 2))(*args)
  gb = jax.grad(functools.partial(_loss, "off", T, False, False, jnp.bfloat16),
                argnums=(0, 2))(*args)
  for a, c in zip(ga, gb):
    assert float(jnp.max(jnp.abs(a - c))) <= 0.05 * float(jnp.max(jnp.abs(c)))


def test_use_seq_grad_per_backend():
  assert rnn.use_seq_grad("auto", "cpu")
  assert not rnn.use_seq_grad("auto", "gpu")
  assert not rnn.use_seq_grad("auto", "tpu")
  assert rnn.use_seq_grad("on", "gpu")
  assert not rnn.use_seq_grad("off", "cpu")
  with pytest.raises(ValueError, match="GRU gradient choice"):
    rnn.use_seq_grad("fast")


def test_process_default_overrides_auto_only(monkeypatch):
  """``$D2M_GRU_GRAD`` (``rnn.SEQ_GRAD_DEFAULT``) decides what ``auto`` means; an explicit
  choice still wins; a bad value is a clear error naming the variable."""
  monkeypatch.setattr(rnn, "SEQ_GRAD_DEFAULT", "off")
  assert not rnn.use_seq_grad("auto", "cpu") and rnn.use_seq_grad("on", "cpu")
  monkeypatch.setattr(rnn, "SEQ_GRAD_DEFAULT", "on")
  assert rnn.use_seq_grad("auto", "gpu") and not rnn.use_seq_grad("off", "gpu")
  monkeypatch.setattr(rnn, "SEQ_GRAD_DEFAULT", "fast")
  with pytest.raises(ValueError, match="D2M_GRU_GRAD"):
    rnn.use_seq_grad("auto", "cpu")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_input_projection_equals_the_einsum_and_its_autodiff(dtype):
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 4))     # time-major (T, B, D)
  w = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
  c = jax.random.normal(jax.random.PRNGKey(2), (5, 3, 6))
  new = lambda x, w: gru_seq_grad.input_projection(x, w, dtype)  # noqa: E731
  old = lambda x, w: rnn.mixed_dot(x, w, dtype, "tbd,dg->tbg")  # noqa: E731
  np.testing.assert_allclose(new(x, w), old(x, w), rtol=1e-6)
  ga = jax.grad(lambda x, w: jnp.sum(new(x, w) * c), argnums=(0, 1))(x, w)
  gb = jax.grad(lambda x, w: jnp.sum(old(x, w) * c), argnums=(0, 1))(x, w)
  # the same products (float32 up to summation order); and against numpy float64.
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == jnp.float32 else 2e-2, atol=1e-5)
  if dtype == jnp.float32:
    cx = np.asarray(c, np.float64)
    np.testing.assert_allclose(ga[0], np.einsum("tbg,dg->tbd", cx, np.asarray(w, np.float64)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ga[1], np.einsum("tbd,tbg->dg", np.asarray(x, np.float64), cx),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("constant_input", [False, True])
def test_time_major_stack_equals_the_autodiff_path(monkeypatch, constant_input):
  """The whole GRU module (2 bidirectional layers, inter-layer dropout on) with the written-out
  backward -- run time-major, input bias added inside the steps, a constant input's gradient
  summed in the reverse scan's carry -- against the batch-major autodiff path: the same
  outputs, final states and dropout masks, and gradients equal up to float32 summation order."""
  B, T, D, H = 3, 5, 2, 4
  x = jax.random.normal(jax.random.PRNGKey(0), (B, D) if constant_input else (B, T, D))
  h0 = jax.random.normal(jax.random.PRNGKey(1), (4, B, H))
  c = jax.random.normal(jax.random.PRNGKey(2), (B, T, 2 * H))
  m = GRU(hidden=H, num_layers=2, bidirectional=True, dropout_rate=0.3)
  kw = dict(constant_input=constant_input, length=T if constant_input else None)
  params = m.init(jax.random.key(3), x, h0, **kw)["params"]

  def run(choice):
    monkeypatch.setattr(rnn, "SEQ_GRAD_DEFAULT", choice)

    def loss(p, x):
      out, hn = m.apply({"params": p}, x, h0, deterministic=False,
                        rngs={"dropout": jax.random.key(4)}, **kw)
      return jnp.sum(out * jnp.cos(out) * c) + jnp.sum(hn ** 2), (out, hn)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)

  (va, (oa, ha)), ga = run("on")
  (vb, (ob, hb)), gb = run("off")
  np.testing.assert_allclose(oa, ob, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(ha, hb, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(va, vb, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_input_projection_second_order_equals_autodiff():
  """A gradient penalty differentiates the projection's written-out backward again."""
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (4, 6))

  def penalty(f, w):
    g = jax.grad(lambda x: jnp.sum(jnp.sin(f(x, w))))(x)
    return jnp.sum(g ** 2)

  new = lambda x, w: gru_seq_grad.input_projection(x, w, jnp.float32)  # noqa: E731
  old = lambda x, w: rnn.mixed_dot(x, w, jnp.float32, "tbd,dg->tbg")  # noqa: E731
  np.testing.assert_allclose(jax.grad(functools.partial(penalty, new))(w),
                             jax.grad(functools.partial(penalty, old))(w), rtol=1e-5, atol=1e-5)
