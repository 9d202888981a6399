"""Moment-matching distance between generated and real pose sequences: a GAN quality target
cheap enough to compute inside a jitted step.

Per sequence ``x (T, P)`` the features are, per coordinate: the mean over time, the standard
deviation over time and the standard deviation over time of the velocity ``x[t+1] - x[t]``
(:func:`sequence_features`: three ``(N, P)`` groups, ``3 P`` features). Over a set of sequences
each feature has a mean ``m`` and a standard deviation ``s`` (population, ddof 0). The distance
between a generated set ``g`` and a real set ``r`` (:func:`moment_distance`) is

    D = mean over features f of ((m_g,f - m_r,f)^2 + (s_g,f - s_r,f)^2) / (m_r,f^2 + s_r,f^2)

i.e. the squared 2-Wasserstein (Fréchet) distance between the two per-feature Gaussian fits,
relative to the real feature's second moment ``E[f^2] = m^2 + s^2``, averaged over features. It
is 0 for matching first and second moments of every feature, ``sqrt(D)`` is roughly the RMS
relative error of those moments (D = 0.01: about 10%), and it is scale-free per feature, so
velocity statistics (small numbers) weigh as much as positions. What it does not see: the
correlation between coordinates or between features (a diagonal fit), and anything beyond the
three statistics (e.g. the shape of the waveform).

Like the rest of the package it imports no jax: the functions use only array methods and
arithmetic, so numpy input is computed in numpy (float64 for float64 input) and jax arrays or
tracers inside ``jax.jit`` stay on the device.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def _array(x):
  return x if hasattr(x, "mean") and hasattr(x, "ndim") else np.asarray(x, np.float64)


def sequence_features(x) -> Tuple:
  """(N, T, P) -> (time mean, time std, velocity std), each (N, P), ddof 0."""
  x = _array(x)
  vel = x[:, 1:] - x[:, :-1]
  return x.mean(1), x.std(1), vel.std(1)


def moment_distance(real_features, generated_features, eps: float = 1e-12):
  """The relative diagonal Fréchet distance D of the module docstring between two feature sets,
  each an (N, F) array or a sequence of (N, F_i) groups (the set sizes N may differ)."""
  def groups(f):
    return [_array(g) for g in f] if isinstance(f, (tuple, list)) and hasattr(
        f[0], "ndim") else [_array(f)]
  real, gen = groups(real_features), groups(generated_features)
  if len(real) != len(gen):
    raise ValueError(f"{len(real)} real feature groups against {len(gen)} generated")
  total, count = 0.0, 0
  for r, g in zip(real, gen):
    m_r, s_r = r.mean(0), r.std(0)
    m_g, s_g = g.mean(0), g.std(0)
    total = total + (((m_g - m_r) ** 2 + (s_g - s_r) ** 2) / (m_r ** 2 + s_r ** 2 + eps)).sum()
    count += int(r.shape[1])
  return total / count


def sequence_moment_distance(real, generated):
  """:func:`moment_distance` of the :func:`sequence_features` of two (N, T, P) sets."""
  return moment_distance(sequence_features(real), sequence_features(generated))


def feature_matrix(groups: Sequence) -> np.ndarray:
  """The (N, 3P) matrix of :func:`sequence_features`' groups (numpy), for inspection."""
  return np.concatenate([np.asarray(g) for g in groups], axis=-1)
