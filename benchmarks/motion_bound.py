"""How much of the units' motion a linear-Gaussian model of the stage-1 objective can keep.

The Dancing2Music dance-unit VAE minimises, per unit, ``w_recon * L1(x, x_hat) + lambda_kl *
KL(q(z|x) || N(0, I))`` (``w_recon = 4``: self and cross reconstruction of two copies; the KL is
per unit). Its linear-Gaussian oracle, on units ``x`` in R^D (D = 32 frames x P, z-scored):

* PCA of the train units: eigenvalues ``lam_i`` and directions ``u_i``;
* a linear Gaussian code transmitting component i at rate ``R_i`` nats (= its KL) leaves a
  sampled-reconstruction error variance ``d_i = lam_i exp(-2 R_i)`` (the Gaussian
  rate-distortion bound); the L1 of a Gaussian error is ``sqrt(2/pi)`` times its rms, so the
  objective is ``w_recon sqrt(2/pi) sqrt(sum_i d_i / D) + lambda_kl sum_i 0.5 log(lam_i / d_i)``;
* its optimum is reverse water-filling, ``d_i = min(theta, lam_i)``, with the level ``theta``
  the root of ``theta = lambda_kl sqrt(D S(theta)) / (w_recon sqrt(2/pi))``,
  ``S(theta) = sum_i min(theta, lam_i)`` (:func:`water_level`); the code size is the number of
  components above the level, capped at ``z_mov`` (the largest ones);
* the deterministic (posterior-mean) reconstruction shrinks component i by ``s_i = 1 - theta /
  lam_i`` (:func:`reconstruct`), and the motion ratio is ``mean |x_hat[t+1] - x_hat[t]|`` over
  ``mean |x[t+1] - x[t]|`` on the test units (:func:`motion_ratio`), the figure
  ``launch/d2m_motion.py`` reports for a trained VAE's reconstruction.

Run on the processed real data (numpy only; no TensorFlow, no librosa)::

  python -m benchmarks.motion_bound --data_dir=DIR --source=music_to_dance [--z_mov=128]
  python -m benchmarks.motion_bound --synthetic        # a random low-rank data set, no data needed
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

L1_PER_RMS = math.sqrt(2.0 / math.pi)


def water_level(eigvals, lambda_kl: float, dim: int, recon_weight: float = 4.0,
                max_components: int | None = None, iters: int = 200) -> float:
  """The reverse-water-filling level ``theta`` of the oracle (module docstring); 0 for
  ``lambda_kl == 0``. Components beyond ``max_components`` are never transmitted."""
  lam = np.sort(np.asarray(eigvals, np.float64))[::-1]
  lam = np.maximum(lam, 0.0)
  if lambda_kl <= 0:
    return 0.0
  keep = lam if max_components is None else lam[:max_components]
  rest = lam[len(keep):].sum()
  c = recon_weight * L1_PER_RMS / lambda_kl

  def gap(theta):     # theta * c - sqrt(D * S(theta)): increasing in theta
    return theta * c - math.sqrt(dim * (np.minimum(theta, keep).sum() + rest))

  lo, hi = 0.0, max(float(keep.max(initial=0.0)), 1e-12)
  while gap(hi) < 0:
    hi *= 2.0
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
  return 0.5 * (lo + hi)


def shrinkage(eigvals, theta: float, max_components: int | None = None) -> np.ndarray:
  """Per component (in the given order) ``s_i = max(0, 1 - theta / lam_i)``, 0 past the cap."""
  lam = np.asarray(eigvals, np.float64)
  s = np.where(lam > theta, 1.0 - theta / np.maximum(lam, 1e-300), 0.0)
  if max_components is not None:
    order = np.argsort(-lam)
    s[order[max_components:]] = 0.0
  return s


def fit_pca(units: np.ndarray):
  """(mean (D,), eigenvalues (K,) descending, directions (D, K)) of units (N, T, P)."""
  x = units.reshape(units.shape[0], -1).astype(np.float64)
  mean = x.mean(0)
  xc = x - mean
  cov = xc.T @ xc / max(1, x.shape[0] - 1)
  lam, vec = np.linalg.eigh(cov)
  order = np.argsort(-lam)
  return mean, np.maximum(lam[order], 0.0), vec[:, order]


def reconstruct(units: np.ndarray, mean, vec, s) -> np.ndarray:
  """Posterior-mean reconstruction ``mean + sum_i s_i u_i u_i^T (x - mean)`` of units (N, T, P)."""
  x = units.reshape(units.shape[0], -1).astype(np.float64)
  coef = (x - mean) @ vec
  return (mean + (coef * s) @ vec.T).reshape(units.shape)


def motion(units: np.ndarray) -> float:
  return float(np.abs(np.diff(units, axis=-2)).mean())


def motion_ratio(recon: np.ndarray, units: np.ndarray) -> float:
  return motion(recon) / motion(units)


def bound_table(train: np.ndarray, test: np.ndarray, lambdas, z_mov: int,
                recon_weight: float = 4.0) -> list[dict]:
  """One row per ``lambda_kl``: level, code size, nats, L1 proxy and the test motion ratio."""
  mean, lam, vec = fit_pca(train)
  dim = lam.shape[0]
  rows = []
  for lk in lambdas:
    theta = water_level(lam, lk, dim, recon_weight, z_mov)
    s = shrinkage(lam, theta, z_mov)
    active = s > 0
    nats = float(0.5 * np.log(lam[active] / theta).sum()) if lk > 0 else float("inf")
    rec = reconstruct(test, mean, vec, s)
    rows.append(dict(lambda_kl=lk, theta=theta, code_size=int(active.sum()), nats=nats,
                     test_l1=float(np.abs(rec - test).mean()),
                     test_motion_ratio=motion_ratio(rec, test)))
  return rows


def _real_units(data_dir: str, source: str):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from d2m_jax.data import examples, ingest   # pylint: disable=import-outside-toplevel
  pdir = os.path.join(data_dir, "processed", source)
  with np.load(os.path.join(pdir, "stats.npz")) as z:
    mu, sd = z["pose_mean"], z["pose_std"]
  out = {}
  for split in ("train", "test"):
    us = [ex["units"] for s in ingest.split_sequences(pdir, split) if s["has_audio"]
          for ex in examples.units(s)]
    out[split] = (np.concatenate(us, 0) - mu) / sd
  return out["train"], out["test"]


def _synthetic_units(n=1500, t=32, p=12, rank=20, seed=0):
  rng = np.random.default_rng(seed)
  basis = rng.standard_normal((rank, t * p)) / math.sqrt(t * p)
  scales = 3.0 * 0.8 ** np.arange(rank)
  def draw(m):
    x = (rng.standard_normal((m, rank)) * scales) @ basis + 0.05 * rng.standard_normal((m, t * p))
    return x.reshape(m, t, p)
  return draw(n), draw(n // 3)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data_dir", default=os.environ.get("D2M_DATA_DIR") or
                  os.path.expanduser("~/.cache/d2m_jax/tfds"))
  ap.add_argument("--source", default="music_to_dance")
  ap.add_argument("--synthetic", action="store_true", help="random low-rank units instead")
  ap.add_argument("--z_mov", type=int, default=128, help="code size cap (paper 512, demo 128)")
  ap.add_argument("--lambdas", default="0,0.0001,0.001,0.003,0.01,0.03")
  ap.add_argument("--recon_weight", type=float, default=4.0)
  ap.add_argument("--json", default=None, help="also write the rows here")
  a = ap.parse_args(argv)
  if a.synthetic:
    train, test = _synthetic_units()
  else:
    pdir = os.path.join(a.data_dir, "processed", a.source)
    if not os.path.exists(os.path.join(pdir, "manifest.json")):
      print(f"error: {pdir}: no processed dataset (run launch/preprocess.py)", file=sys.stderr)
      return 1
    train, test = _real_units(a.data_dir, a.source)
  lambdas = [float(x) for x in a.lambdas.split(",")]
  rows = bound_table(train, test, lambdas, a.z_mov, a.recon_weight)
  print(f"units: train {train.shape[0]}, test {test.shape[0]}, D = {train[0].size}; "
        f"z_mov cap {a.z_mov}; recon weight {a.recon_weight}")
  print("| lambda_kl | level theta | code size | KL nats | test L1 | test motion ratio |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['lambda_kl']:g} | {r['theta']:.4g} | {r['code_size']} | {r['nats']:.1f} | "
          f"{r['test_l1']:.3f} | {r['test_motion_ratio']:.2f} |")
  if a.json:
    tmp = a.json + ".tmp"
    with open(tmp, "w") as f:
      json.dump(rows, f, indent=1)
    os.replace(tmp, a.json)
  return 0


if __name__ == "__main__":
  sys.exit(main())
