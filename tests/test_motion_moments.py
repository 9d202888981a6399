"""d2m_jax/metrics/motion_moments.py against a numpy float64 reference and closed forms."""
import numpy as np
import pytest

from d2m_jax.metrics import motion_moments as mm


def _features_ref(x):
  x = np.asarray(x, np.float64)
  out = []
  for seq in x:                                   # one sequence at a time, explicit loops
    mean = seq.mean(0)
    std = np.sqrt(((seq - mean) ** 2).mean(0))
    vel = np.diff(seq, axis=0)
    vstd = np.sqrt(((vel - vel.mean(0)) ** 2).mean(0))
    out.append(np.concatenate([mean, std, vstd]))
  return np.array(out)


def _distance_ref(r, g):
  r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
  total = 0.0
  for f in range(r.shape[1]):
    m_r, m_g = r[:, f].mean(), g[:, f].mean()
    s_r, s_g = r[:, f].std(), g[:, f].std()
    total += ((m_g - m_r) ** 2 + (s_g - s_r) ** 2) / (m_r ** 2 + s_r ** 2)
  return total / r.shape[1]


def test_matches_float64_reference():
  rng = np.random.default_rng(0)
  real = rng.normal(1.0, 0.5, (40, 12, 3)).cumsum(1) * 0.1 + 2.0
  gen = rng.normal(1.2, 0.7, (30, 12, 3)).cumsum(1) * 0.1 + 1.5
  f_r, f_g = _features_ref(real), _features_ref(gen)
  want = _distance_ref(f_r, f_g)
  assert want > 0.01
  # numpy input: computed in float64
  np.testing.assert_allclose(mm.feature_matrix(mm.sequence_features(real)), f_r, rtol=1e-12)
  np.testing.assert_allclose(float(mm.sequence_moment_distance(real, gen)), want, rtol=1e-8)
  # jax float32 inside jit (the benchmark's path)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  got = jax.jit(mm.sequence_moment_distance)(jnp.asarray(real, jnp.float32),
                                              jnp.asarray(gen, jnp.float32))
  np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_closed_forms():
  # a ramp x_t = a + b t over T frames: mean a + b (T-1)/2, std |b| sqrt((T^2-1)/12), velocity
  # constant (std 0)
  T, a, b = 9, 0.5, 0.25
  x = (a + b * np.arange(T, dtype=np.float64))[None, :, None]
  f = mm.feature_matrix(mm.sequence_features(x))[0]
  np.testing.assert_allclose(f, [a + b * (T - 1) / 2, b * np.sqrt((T * T - 1) / 12.0), 0.0],
                             atol=1e-6)
  # one feature, real set {1, 3} (m 2, s 1), generated {2, 2} (m 2, s 0): D = 1 / (4 + 1)
  assert float(mm.moment_distance([[1.0], [3.0]], [[2.0], [2.0]])) == pytest.approx(0.2)
  # identical sets: 0; shifting every generated feature by its real mean doubles the mean
  rng = np.random.default_rng(1)
  feats = rng.normal(3.0, 1.0, (50, 4))
  assert float(mm.moment_distance(feats, feats)) == pytest.approx(0.0, abs=1e-7)
  shifted = feats + feats.mean(0)
  m, s = feats.mean(0), feats.std(0)
  np.testing.assert_allclose(float(mm.moment_distance(feats, shifted)),
                             np.mean(m ** 2 / (m ** 2 + s ** 2)), rtol=1e-5)
