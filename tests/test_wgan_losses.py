"""WGAN penalties and TV against float64 numpy references / hand-computed cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.models.wgan_losses import gradient_penalty, interpolate, total_variation


def _mlp_critic_np(p, x):
  return np.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


@pytest.mark.parametrize("one_sided", [False, True])
def test_gradient_penalty_matches_finite_differences(one_sided):
  rng = np.random.default_rng(0)
  D, H, B = 5, 7, 4
  p = {"w1": rng.normal(size=(D, H)), "b1": rng.normal(size=(H,)) * 0.1,
       "w2": rng.normal(size=(H,)), "b2": np.float64(0.3)}
  x = rng.normal(size=(B, D))
  x[0] = 0.0        # steep region: norm ~ |w1 w2| > 1
  x[1] *= 40.0      # saturated tanh: norm < 1 (exercises the one-sided clamp)
  pj = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
  critic = lambda xx: jnp.tanh(xx @ pj["w1"] + pj["b1"]) @ pj["w2"] + pj["b2"]
  gp, gnorm = gradient_penalty(critic, [jnp.asarray(x, jnp.float32)], one_sided=one_sided)

  eps = 1e-6
  grads = np.zeros_like(x)
  for i in range(D):
    e = np.zeros(D); e[i] = eps
    grads[:, i] = (_mlp_critic_np(p, x + e) - _mlp_critic_np(p, x - e)) / (2 * eps)
  norms = np.sqrt((grads ** 2).sum(1) + 1e-12)
  assert norms.max() > 1.0 > norms.min()
  d = norms - 1.0
  if one_sided:
    d = np.maximum(d, 0.0)
  np.testing.assert_allclose(float(gp), np.mean(d ** 2), rtol=1e-4)
  np.testing.assert_allclose(float(gnorm), norms.mean(), rtol=1e-4)


@pytest.mark.parametrize("one_sided", [False, True])
def test_gradient_penalty_is_zero_for_unit_norm_linear_critic(one_sided):
  w = jnp.array([[0.5, -0.5], [0.5, 0.5]], jnp.float32)       # |w| = 1 exactly
  v = jnp.array([0.0, -1.0, 0.0], jnp.float32)
  x = jax.random.normal(jax.random.key(0), (6, 2, 2))
  a = jax.random.normal(jax.random.key(1), (6, 3))
  lin = lambda xx: jnp.sum(xx * w, axis=(1, 2)) + 2.0
  gp, gnorm = gradient_penalty(lin, [x], one_sided=one_sided)
  assert float(gp) == 0.0 and float(gnorm) == 1.0
  # Two inputs (the phase-3 critic's pose and audio), each with a unit-norm weight.
  lin2 = lambda xx, aa: jnp.sum(xx * w, axis=(1, 2)) + aa @ v
  gp2, _ = gradient_penalty(lin2, [x, a], wrt=(0, 1), one_sided=one_sided)
  assert float(gp2) == 0.0
  # A weight of norm 2 gives (2 - 1)^2 = 1 per input.
  gp3, _ = gradient_penalty(lambda xx, aa: 2.0 * lin2(xx, aa), [x, a], wrt=(0, 1))
  np.testing.assert_allclose(float(gp3), 2.0, rtol=1e-6)


def test_interpolate_and_total_variation():
  r = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  f = -r
  alpha = np.array([0.25, 1.0], np.float32)
  out = interpolate(jnp.asarray(r), jnp.asarray(f), jnp.asarray(alpha))
  np.testing.assert_allclose(out, alpha[:, None, None] * r + (1 - alpha[:, None, None]) * f)
  x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
  np.testing.assert_allclose(float(total_variation(jnp.asarray(x))),
                             np.abs(np.diff(x, axis=1)).mean(), rtol=1e-6)
