"""Fréchet distance, FID on normalised features, and diversity (Div).

Sources (definitions only; see ../shared/specs/metrics.md §1.3):
* Fréchet distance ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with ``scipy.linalg.sqrtm``
  and an ``eps * I`` offset when the product is singular, as in the AIST++ API / Bailando
  ``utils/metrics_new.py`` (itself from the pytorch-fid code).
* FID_k / FID_g normalise BOTH feature sets with the ground-truth set's mean and std before the
  distance (Bailando ``quantized_metrics``).
* Div_k / Div_g: mean pairwise Euclidean distance ``2/(n(n-1)) sum_{i<j} ||f_i - f_j||`` of the
  normalised features of one set (Bailando ``calculate_avg_distance``).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np
import scipy.linalg


def feature_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased, rowvar=False) covariance of an (N, D) feature set, in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"need an (N>=2, D) feature array, got shape {f.shape}")
  return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

  When ``sqrtm(sigma1 @ sigma2)`` is not finite (singular product), ``eps * I`` is added to both
  covariances, as the reference implementations do; the same fallback is used when the product
  is singular enough that sqrtm returns a large imaginary part (few samples in a high dimension:
  the reference code raises there). A small imaginary part from numerical error is dropped; a
  large one after the fallback switches to :func:`trace_sqrt_product` (same value in exact
  arithmetic, real by construction).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape:
    raise ValueError(f"shape mismatch: {mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape}")
  diff = mu1 - mu2
  with warnings.catch_warnings():  # singular products are expected with few samples
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.isfinite(covmean).all() or _large_imaginary(covmean):
    offset = np.eye(s1.shape[0]) * eps
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
      covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  if _large_imaginary(covmean):  # still ill-conditioned: the symmetric form, real by construction
    tr_covmean = trace_sqrt_product(s1, s2)
  else:
    tr_covmean = float(np.trace(covmean.real))
  value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
  return float(max(value, 0.0))  # the true distance is >= 0; negatives are rounding error


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
  """``Tr((S1 S2)^(1/2))`` for PSD S1, S2 as ``sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))``: the matrices
  are similar (same eigenvalues), and the symmetric one's are real and >= 0 (negative rounding
  clipped)."""
  w, v = np.linalg.eigh(np.asarray(s1, np.float64))
  r1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  m = r1 @ np.asarray(s2, np.float64) @ r1
  return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def _large_imaginary(m: np.ndarray) -> bool:
  return bool(np.iscomplexobj(m) and not np.allclose(np.diagonal(m).imag, 0, atol=1e-3))


def normalise_features(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Z-scores ``features`` with the mean and std of ``reference`` (the ground-truth set).

  Dimensions with zero std in the reference are divided by 1 (the reference code would divide by
  zero; such a dimension carries no information about the reference anyway).
  """
  ref = np.asarray(reference, np.float64)
  mean, std = ref.mean(axis=0), ref.std(axis=0)
  std = np.where(std > 1e-12, std, 1.0)
  return (np.asarray(features, np.float64) - mean) / std


def fid(generated: np.ndarray, reference: np.ndarray, normalise: bool = True) -> float:
  """FID between two (N, D) feature sets; both normalised with the reference's statistics."""
  gen, ref = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
  if normalise:
    gen, ref = normalise_features(gen, ref), normalise_features(ref, ref)
  return frechet_distance(*feature_stats(gen), *feature_stats(ref))


def diversity(features: np.ndarray, reference: Optional[np.ndarray] = None) -> float:
  """Mean pairwise Euclidean distance of a feature set (normalised with ``reference`` if given)."""
  f = np.asarray(features, np.float64)
  if reference is not None:
    f = normalise_features(f, reference)
  n = f.shape[0]
  if n < 2:
    raise ValueError("diversity needs at least 2 samples")
  sq = np.sum(f * f, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
  iu = np.triu_indices(n, k=1)
  return float(np.sqrt(d2[iu]).mean())
