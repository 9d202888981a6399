"""JAX k-means against scikit-learn: inertia of the whole algorithm within 1 %, and Lloyd
iterations from the same initial centroids to the same fixed point; sharded = unsharded."""
import numpy as np
from sklearn.cluster import KMeans

from d2m_jax.models.kmeans import assign, kmeans


def _data():
  rng = np.random.default_rng(0)
  centres = rng.normal(scale=4.0, size=(10, 12))
  x = centres[rng.integers(0, 10, 600)] + rng.normal(scale=2.0, size=(600, 12))
  return x.astype(np.float32)


def test_inertia_matches_sklearn_within_one_percent():
  x = _data()
  ours = kmeans(x, 10, seed=0, n_init=3, shard=False)
  sk = KMeans(n_clusters=10, n_init=3, random_state=0).fit(x)
  assert abs(ours.inertia - sk.inertia_) / sk.inertia_ < 0.01
  # The reported inertia is the float64 sum of squared distances to the returned centroids.
  d = ((x[:, None].astype(np.float64) - ours.centroids[None]) ** 2).sum(-1)
  np.testing.assert_allclose(ours.inertia, d.min(1).sum(), rtol=1e-4)
  np.testing.assert_array_equal(ours.labels, d.argmin(1))


def test_lloyd_from_same_init_reaches_sklearn_fixed_point_and_sharding_agrees():
  x = _data()
  init = x[:10].copy()   # a poor start, so Lloyd has real work to do
  sk = KMeans(n_clusters=10, n_init=1, init=init, tol=1e-4, max_iter=300).fit(x)
  single = kmeans(x, 10, init=init, shard=False)
  np.testing.assert_allclose(single.inertia, sk.inertia_, rtol=1e-4)
  np.testing.assert_allclose(np.sort(single.centroids, 0), np.sort(sk.cluster_centers_, 0),
                             atol=1e-3)
  # 4 fake CPU devices (tests/conftest.py): 601 points do not divide evenly -> padded, weight 0.
  x1 = np.concatenate([x, x[:1]])
  a = kmeans(x1, 10, init=init, shard=False)
  b = kmeans(x1, 10, init=init, shard=True)
  np.testing.assert_allclose(a.inertia, b.inertia, rtol=1e-5)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(np.asarray(assign(x1, a.centroids)), a.labels)


def test_zero_weights_are_ignored():
  x = _data()
  far = np.full((50, 12), 1e3, np.float32)    # would grab a centroid if it counted
  w = np.concatenate([np.ones(600), np.zeros(50)]).astype(np.float32)
  r = kmeans(np.concatenate([x, far]), 10, seed=0, weights=w, shard=False)
  assert np.max(np.abs(r.centroids)) < 100
