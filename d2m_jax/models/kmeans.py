"""k-means in JAX: greedy k-means++ seeding and jitted Lloyd iterations over all points at once.

Used by learn2dance to cluster 1-second pose clips (k = 128). Written from the algorithm
definitions (Arthur & Vassilvitskii 2007 for k-means++, with the "greedy" variant that scikit-learn
documents: ``2 + ln k`` candidate centres per step, keeping the one that lowers the potential
most), checked against scikit-learn's inertia in ``tests/test_kmeans.py``.

* Lloyd iterations: distances as ``|x|^2 - 2 x.c + |c|^2`` (one (N, D) x (D, k) matmul), argmin
  assignment, centroid update by a one-hot (k, N) x (N, D) matmul; the whole loop is one
  ``lax.while_loop`` that stops when the squared centroid shift falls below
  ``tol * mean feature variance`` (scikit-learn's criterion) or after ``max_iter`` iterations.
* Sharding: with several devices the points are split over a 1-D ``"data"`` mesh with
  ``jax.shard_map``; each device computes its partial sums/counts and ``psum`` combines them, so
  the result equals the single-device one (padding points carry weight 0).
* Empty clusters keep their previous centroid (scikit-learn relocates them to far points; with
  k-means++ seeding on real data this is rare and it is logged through the returned counts).
* Points may carry weights (0 masks padding clips of padded sequences).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax.nn.collectives import psum


class KMeansResult(NamedTuple):
  centroids: np.ndarray  # (k, D) float32
  labels: np.ndarray     # (N,) int32
  inertia: float         # sum of weighted squared distances to the nearest centroid
  n_iter: int
  counts: np.ndarray     # (k,) points per cluster (weighted)


def _sq_dists(x, c):
  """(N, k) squared Euclidean distances, clamped at 0."""
  d = (jnp.sum(x * x, -1, keepdims=True) - 2.0 * x @ c.T + jnp.sum(c * c, -1)[None, :])
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("k", "n_trials"))
def kmeans_plusplus(key, x, w, k: int, n_trials: Optional[int] = None):
  """Greedy k-means++ seeding. x (N, D), w (N,) weights (0 = ignore). Returns (k, D)."""
  n_trials = n_trials or (2 + int(math.log(k)))
  N = x.shape[0]
  logw = jnp.where(w > 0, jnp.log(jnp.maximum(w, 1e-30)), -jnp.inf)
  k0, key = jax.random.split(key)
  first = jax.random.categorical(k0, logw)
  centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
  closest = _sq_dists(x, x[first][None])[:, 0]

  def body(i, carry):
    centers, closest = carry
    ki = jax.random.fold_in(key, i)
    p = w * closest
    logits = jnp.where(p > 0, jnp.log(jnp.maximum(p, 1e-30)), -jnp.inf)
    # If every remaining point coincides with a centre, fall back to the weights.
    logits = jnp.where(jnp.any(p > 0), logits, logw)
    cand = jax.random.categorical(ki, logits, shape=(n_trials,))
    d = _sq_dists(x, x[cand])                              # (N, trials)
    new_closest = jnp.minimum(closest[:, None], d)
    pot = jnp.sum(w[:, None] * new_closest, 0)
    best = jnp.argmin(pot)
    return centers.at[i].set(x[cand[best]]), new_closest[:, best]

  centers, _ = jax.lax.fori_loop(1, k, body, (centers, closest))
  del N
  return centers


def _lloyd_body(x, w, c, axis_name):
  d = _sq_dists(x, c)
  lab = jnp.argmin(d, -1)
  onehot = jax.nn.one_hot(lab, c.shape[0], dtype=x.dtype) * w[:, None]
  sums = psum(onehot.T @ x, axis_name)
  counts = psum(jnp.sum(onehot, 0), axis_name)
  new_c = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1e-30)[:, None], c)
  return new_c, counts


def _lloyd(x, w, c0, tol_abs, max_iter, axis_name=None):
  """Lloyd iterations until the squared centroid shift <= tol_abs. Returns (c, n_iter)."""
  def cond(s):
    _, it, shift = s
    return (it < max_iter) & (shift > tol_abs)

  def body(s):
    c, it, _ = s
    new_c, _ = _lloyd_body(x, w, c, axis_name)
    return new_c, it + 1, jnp.sum((new_c - c) ** 2)

  c, it, _ = jax.lax.while_loop(cond, body, (c0, jnp.int32(0), jnp.float32(jnp.inf)))
  return c, it


def _finish(x, w, c, axis_name=None):
  d = _sq_dists(x, c)
  lab = jnp.argmin(d, -1).astype(jnp.int32)
  inertia = psum(jnp.sum(w * jnp.min(d, -1)), axis_name)
  counts = psum(jnp.sum(jax.nn.one_hot(lab, c.shape[0]) * w[:, None], 0), axis_name)
  return lab, inertia, counts


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _lloyd_jit(x, w, c0, tol_abs, max_iter):
  c, it = _lloyd(x, w, c0, tol_abs, max_iter)
  lab, inertia, counts = _finish(x, w, c)
  return c, lab, inertia, counts, it


def _lloyd_sharded(x, w, c0, tol_abs, max_iter, mesh):
  P = jax.P

  def body(x, w, c0, tol_abs):
    c, it = _lloyd(x, w, c0, tol_abs, max_iter, axis_name="data")
    lab, inertia, counts = _finish(x, w, c, axis_name="data")
    return c, lab, inertia, counts, it

  f = jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P("data"), P(), P()),
                    out_specs=(P(), P("data"), P(), P(), P()), check_vma=False)
  return jax.jit(f)(x, w, c0, tol_abs)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 300,
           tol: float = 1e-4, weights: Optional[np.ndarray] = None, init: Optional[np.ndarray] = None,
           shard: Optional[bool] = None) -> KMeansResult:
  """Clusters the rows of ``x`` (N, D) into ``k`` groups; keeps the best of ``n_init`` runs.

  Args:
    x: points, float32 (N, D).
    k: number of clusters.
    seed: PRNG seed for the k-means++ seeding.
    n_init: number of seedings; the run with the lowest inertia is returned.
    max_iter, tol: Lloyd stopping rule (tol relative to the mean per-feature variance, as
      scikit-learn).
    weights: optional (N,) non-negative point weights (0 = padding, ignored).
    init: optional (k, D) initial centroids (skips k-means++; n_init is then 1).
    shard: split the points over all devices (default: when more than one device exists).
  """
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise ValueError(f"kmeans: points must be (N, D), got shape {x.shape}")
  N = x.shape[0]
  w = np.ones((N,), np.float32) if weights is None else np.asarray(weights, np.float32)
  if int(np.sum(w > 0)) < k:
    raise ValueError(f"kmeans: {int(np.sum(w > 0))} points (weight > 0) for k={k} clusters")
  mean = np.average(x, axis=0, weights=w)
  var = np.average((x - mean) ** 2, axis=0, weights=w)
  tol_abs = np.float32(tol * float(np.mean(var)))
  ndev = jax.device_count()
  shard = (ndev > 1) if shard is None else shard
  if shard and ndev > 1:
    pad = (-N) % ndev
    xs = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)])
    ws = np.concatenate([w, np.zeros((pad,), np.float32)])
    mesh = jax.make_mesh((ndev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    run = lambda c0: _lloyd_sharded(xs, ws, c0, tol_abs, max_iter, mesh)  # noqa: E731
  else:
    pad = 0
    run = lambda c0: _lloyd_jit(x, w, c0, tol_abs, max_iter)  # noqa: E731
  best = None
  inits = [np.asarray(init, np.float32)] if init is not None else [
      kmeans_plusplus(jax.random.key(seed + i), jnp.asarray(x), jnp.asarray(w), k)
      for i in range(n_init)]
  for c0 in inits:
    c, lab, inertia, counts, it = run(jnp.asarray(c0))
    inertia = float(inertia)
    if best is None or inertia < best.inertia:
      best = KMeansResult(np.asarray(c), np.asarray(lab)[:N], inertia, int(it), np.asarray(counts))
  return best


def assign(x, centroids):
  """Nearest-centroid labels (jit-friendly). x (..., D), centroids (k, D) -> (...) int32."""
  shp = x.shape[:-1]
  d = _sq_dists(x.reshape(-1, x.shape[-1]), centroids)
  return jnp.argmin(d, -1).astype(jnp.int32).reshape(shp)
