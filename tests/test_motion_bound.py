"""benchmarks/motion_bound.py: the linear-Gaussian oracle against closed forms."""
import math

import numpy as np

from benchmarks import motion_bound as mb


def test_water_level_matches_the_closed_form():
  # 3 strong components above the level, 50 weak ones below it (never transmitted)
  lam = np.concatenate([[10.0, 5.0, 2.0], np.full(50, 1e-3)])
  dim, lk, w = 200, 0.01, 4.0
  theta = mb.water_level(lam, lk, dim, w)
  # theta * c = sqrt(D (k theta + R)), c = w sqrt(2/pi) / lambda  ->  quadratic in theta
  a = lk ** 2 * dim / (w * math.sqrt(2 / math.pi)) ** 2
  k, rest = 3, 50 * 1e-3
  closed = (a * k + math.sqrt((a * k) ** 2 + 4 * a * rest)) / 2
  assert 1e-3 < closed < 2.0                       # the active set assumed above holds
  np.testing.assert_allclose(theta, closed, rtol=1e-9)
  s = mb.shrinkage(lam, theta)
  np.testing.assert_allclose(s[:3], 1 - closed / lam[:3], rtol=1e-9)
  assert np.all(s[3:] == 0)
  # no KL: nothing shrunk; the code-size cap drops the smallest components
  assert mb.water_level(lam, 0.0, dim) == 0.0
  s = mb.shrinkage(lam, 0.0, max_components=2)
  np.testing.assert_array_equal(s[:2], 1.0) and np.testing.assert_array_equal(s[2:], 0.0)


def test_motion_ratio_of_a_single_component_is_its_shrinkage():
  rng = np.random.default_rng(0)
  t, p = 8, 3
  u = rng.standard_normal(t * p)
  u /= np.linalg.norm(u)
  amp = rng.standard_normal(200) * 2.0
  amp = np.concatenate([amp, -amp])               # zero mean: x_hat = 0.7 x exactly
  units = (amp[:, None] * u[None, :]).reshape(400, t, p)
  mean, lam, vec = mb.fit_pca(units)
  assert lam[0] > 1.0 and lam[1] < 1e-9
  theta = 0.3 * lam[0]
  s = mb.shrinkage(lam, theta)
  rec = mb.reconstruct(units, mean, vec, s)
  # x_hat - mean = 0.7 (x - mean) exactly, so every frame difference shrinks by 0.7
  assert abs(mb.motion_ratio(rec, units) - 0.7) < 1e-9
  rows = mb.bound_table(units, units, [0.0], z_mov=4)
  assert abs(rows[0]["test_motion_ratio"] - 1.0) < 1e-9
