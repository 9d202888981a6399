"""Moment-matching distance between generated and real pose sequences: a GAN quality target
that can be computed inside a jitted step (jax.numpy, no scipy).

Per sequence ``x (T, P)`` the features are, per coordinate: the mean over time, the standard
deviation over time and the standard deviation over time of the velocity ``x[t+1] - x[t]``
(:func:`sequence_features`, ``3 P`` values). Over a set of sequences each feature has a mean
``m`` and a standard deviation ``s`` (population, ddof 0). The distance between a generated set
``g`` and a real set ``r`` (:func:`moment_distance`) is

    D = mean over features f of ((m_g,f - m_r,f)^2 + (s_g,f - s_r,f)^2) / (m_r,f^2 + s_r,f^2)

i.e. the squared 2-Wasserstein (Fréchet) distance between the two per-feature Gaussian fits,
relative to the real feature's second moment ``E[f^2] = m^2 + s^2``, averaged over features. It
is 0 for matching first and second moments of every feature, ``sqrt(D)`` is roughly the RMS
relative error of those moments (D = 0.01: about 10%), and it is scale-free per feature, so
velocity statistics (small numbers) weigh as much as positions. What it does not see: the
correlation between coordinates or between features (a diagonal fit), and anything beyond the
three statistics (e.g. the shape of the waveform).
"""
from __future__ import annotations

import jax.numpy as jnp


def sequence_features(x):
  """(N, T, P) -> (N, 3P): per-coordinate time mean, time std and velocity std (ddof 0)."""
  x = jnp.asarray(x, jnp.float32)
  vel = x[:, 1:] - x[:, :-1]
  return jnp.concatenate([x.mean(1), x.std(1), vel.std(1)], axis=-1)


def moment_distance(real_features, generated_features, eps: float = 1e-12):
  """The relative diagonal Fréchet distance D of the module docstring between two (N, F)
  feature sets (the set sizes may differ)."""
  r = jnp.asarray(real_features, jnp.float32)
  g = jnp.asarray(generated_features, jnp.float32)
  m_r, s_r = r.mean(0), r.std(0)
  m_g, s_g = g.mean(0), g.std(0)
  num = (m_g - m_r) ** 2 + (s_g - s_r) ** 2
  return jnp.mean(num / (m_r ** 2 + s_r ** 2 + eps))


def sequence_moment_distance(real, generated):
  """:func:`moment_distance` of the :func:`sequence_features` of two (N, T, P) sets."""
  return moment_distance(sequence_features(real), sequence_features(generated))
