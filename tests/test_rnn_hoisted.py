"""rnn_impl="hoisted": the GRU with one weight-gradient matmul equals the plain scan's autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.nn import rnn


@pytest.mark.parametrize("reverse,constant", [(False, False), (True, False), (False, True)])
def test_hoisted_gru_values_and_gradients_equal_the_scan(reverse, constant):
  T, B, H = 7, 3, 5
  ks = jax.random.split(jax.random.PRNGKey(0), 5)
  xp = jax.random.normal(ks[0], (B, 3 * H) if constant else (T, B, 3 * H))
  h0 = jax.random.normal(ks[1], (B, H))
  w = jax.random.normal(ks[2], (H, 3 * H)) * 0.5
  b = jax.random.normal(ks[3], (3 * H,))
  probe = jax.random.normal(ks[4], (T, B, H))

  def loss(impl, xp, h0, w, b):
    ys, h = rnn.recurrent_scan("gru", xp, h0, w, b, reverse=reverse, impl=impl,
                               length=T if constant else None)
    return jnp.sum(ys * probe) + jnp.sum(jnp.sin(h)), (ys, h)

  (l1, (y1, h1)), g1 = jax.value_and_grad(lambda *a: loss("scan", *a), argnums=(0, 1, 2, 3),
                                          has_aux=True)(xp, h0, w, b)
  (l2, (y2, h2)), g2 = jax.value_and_grad(lambda *a: loss("hoisted", *a), argnums=(0, 1, 2, 3),
                                          has_aux=True)(xp, h0, w, b)
  np.testing.assert_allclose(y2, y1, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(h2, h1, rtol=1e-6, atol=1e-6)
  for a, e in zip(g2, g1):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_hoisted_gru_module_matches_torch_semantics_reference():
  """The GRU module with impl="hoisted" against the numpy float64 reference of nn.GRU."""
  gru = rnn.GRU(hidden=6, num_layers=2, bidirectional=True, impl="hoisted")
  x = np.random.default_rng(0).normal(size=(2, 9, 4)).astype(np.float32)
  params = gru.init(jax.random.PRNGKey(1), x)["params"]
  ys, h = gru.apply({"params": params}, x)
  ref_y, ref_h = rnn.gru_reference_numpy(jax.tree.map(np.asarray, params), x, num_layers=2,
                                         bidirectional=True)
  np.testing.assert_allclose(ys, ref_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-5)
