"""The im2col 1-D convolution (d2m_jax.models.wgan_layers.Im2ColConv1d) against flax/lax conv and
a float64 numpy reference: same parameters, outputs, first and second-order gradients."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.models.wgan_audio import ENCODERS, AudioSeqCritic, make_encoder
from d2m_jax.models.wgan_layers import conv1d, conv_out_len, im2col_patches, resolve_conv_impl

# (length, c_in, c_out, kernel, stride, pad): the layer shapes the WGAN models use, on short inputs.
SHAPES = [
    (203, 1, 4, 25, 4, 11),     # critic audio branch
    (260, 2, 3, 250, 50, 124),  # default encoder conv0 (lengths 260 -> 6)
    (17, 3, 5, 4, 2, 1),        # encoder stride-2 blocks
    (30, 4, 3, 30, 1, 0),       # final conv spanning the whole length (k=T, e.g. 120 / 75)
    (40, 3, 4, 25, 1, 12),      # stick branch conv_in (same padding; also the k3/k7 blocks)
    (85, 1, 2, 160, 4, 79),     # unet encoder conv0
]


def _conv_ref(x, w, b, stride, pad):
  """float64 numpy ``y[n, t, o] = sum_{j, c} xpad[n, stride t + j, c] w[j, c, o] + b[o]``."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  xp = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
  k = w.shape[0]
  t_out = conv_out_len(x.shape[1], k, stride, pad)
  y = np.zeros((x.shape[0], t_out, w.shape[2]))
  for t in range(t_out):
    y[:, t] = np.einsum("njc,jco->no", xp[:, stride * t:stride * t + k], w)
  return y + np.asarray(b, np.float64)


class _Wrap(nn.Module):
  features: int
  kernel: int
  stride: int
  pad: int
  impl: str

  @nn.compact
  def __call__(self, x):
    return conv1d(x, self.features, self.kernel, self.stride, self.pad, name="c", impl=self.impl)


@pytest.mark.parametrize("length,c_in,c_out,k,s,p", SHAPES)
def test_im2col_matches_xla_conv(length, c_in, c_out, k, s, p):
  x = jax.random.normal(jax.random.key(0), (2, length, c_in))
  mods = {i: _Wrap(c_out, k, s, p, i) for i in ("xla", "im2col")}
  r = jnp.cos(jnp.arange(conv_out_len(length, k, s, p) * c_out, dtype=jnp.float32))

  @jax.jit
  def both(x):   # one compile per shape: init, outputs and gradients of both impls
    params = {i: m.init(jax.random.key(1), x)["params"] for i, m in mods.items()}
    pr = {"c": {"kernel": params["xla"]["c"]["kernel"],
                "bias": jax.random.normal(jax.random.key(2), (c_out,))}}
    out = {}
    for i, m in mods.items():
      f = lambda prm, x: m.apply({"params": prm}, x)
      y, vjp = jax.vjp(f, pr, x)
      out[i] = (y, vjp(jnp.broadcast_to(r.reshape(y.shape[1:]), y.shape)))
    return params, pr, out

  params, pr, out = both(x)
  # identical parameter trees, shapes and initial values (checkpoints are interchangeable)
  assert jax.tree.structure(params["xla"]) == jax.tree.structure(params["im2col"])
  for a, b in zip(jax.tree.leaves(params["xla"]), jax.tree.leaves(params["im2col"])):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  ref = _conv_ref(x, pr["c"]["kernel"], pr["c"]["bias"], s, p)
  for i in mods:
    np.testing.assert_allclose(out[i][0], ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(out["xla"][1]), jax.tree.leaves(out["im2col"][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_im2col_second_order_gradient_matches():
  """The gradient penalty's double backward: d/dW |d loss / dx|^2 agrees between impls."""
  length, c_in, c_out, k, s, p = SHAPES[0]
  x = jax.random.normal(jax.random.key(3), (2, length, c_in))
  mods = {i: _Wrap(c_out, k, s, p, i) for i in ("xla", "im2col")}
  pr = jax.jit(mods["xla"].init)(jax.random.key(4), x)["params"]

  def gp(impl):
    def f(prm):
      d = jax.grad(lambda xx: jnp.sum(jnp.tanh(mods[impl].apply({"params": prm}, xx))))(x)
      return jnp.sum((jnp.sqrt(jnp.sum(d ** 2, axis=(1, 2))) - 1.0) ** 2)
    return jax.grad(f)(pr)

  ga, gb = jax.jit(lambda: (gp("xla"), gp("im2col")))()
  assert float(jnp.abs(ga["c"]["kernel"]).max()) > 1e-3   # non-trivial
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_patches_layout_hand_case():
  """x = 1..7 (one channel), k 3, s 2, pad 1 -> padded [0 1 .. 7 0], rows every 2 samples."""
  x = jnp.arange(1.0, 8.0).reshape(1, 7, 1)   # values 1..7 so padding zeros are visible
  pm = im2col_patches(x, 3, 2, 1)
  np.testing.assert_array_equal(pm[0], [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 0]])


def test_models_same_parameters_both_impls():
  """Full-size phase-3 critic and the three audio encoders (abstract evaluation only): same
  parameter tree and shapes with either impl, and ``conv_impl`` reaches every layer (no
  ``conv_general_dilated`` left in the im2col graph)."""
  trees, graphs = [], []
  for impl in ("xla", "im2col"):
    models = [(AudioSeqCritic(conv_impl=impl), (jnp.zeros((1, 120, 69)), jnp.zeros((1, 76800))))]
    models += [(make_encoder(name, n_down=5, conv_impl=impl), (jnp.zeros((2, 3200)),))
               for name in ENCODERS]
    shapes, text = [], ""
    for model, args in models:
      v = jax.eval_shape(functools.partial(model.init, mutable=True), jax.random.key(0), *args)
      shapes.append(v)
      fn = functools.partial(model.apply, mutable=["batch_stats"])
      text += str(jax.make_jaxpr(fn)(v, *args))
    trees.append(jax.tree.map(lambda a: (a.shape, a.dtype), shapes))
    graphs.append(text)
  assert trees[0] == trees[1]
  assert "conv_general_dilated" in graphs[0]
  assert "conv_general_dilated" not in graphs[1]


def test_resolve_conv_impl():
  assert resolve_conv_impl("xla") == "xla" and resolve_conv_impl("im2col") == "im2col"
  expected = "im2col" if jax.default_backend() == "cpu" else "xla"
  assert resolve_conv_impl("auto") == expected
  with pytest.raises(ValueError, match="conv_impl"):
    resolve_conv_impl("cudnn")
  with pytest.raises(ValueError, match="longer than input"):
    im2col_patches(jnp.zeros((1, 5, 1)), 9, 1, 0)
