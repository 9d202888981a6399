"""Music style from rhythm: a linear head or a small 1-D conv net over a clip's log-lag
tempogram profile.

The dances differ by tempo and meter (cha-cha ~120-128 BPM 4/4, rumba ~100-108, tango ~130,
waltz ~85-90 in 3/4), and librosa's single global tempo is octave-ambiguous on this data. So
the input is not a tempo but the whole rhythm profile of the clip: the mean over the clip's
frames of the local tempogram (the onset envelope's windowed autocorrelation, ``lag 0 = 1``;
the ``tempogram`` half of the ``mel_tempogram512`` feature set), resampled onto log-spaced lags.
On a log-lag axis a tempo change is a shift and the meter is a fixed pattern of offsets (beat,
2 beats, 3 beats = bar of a waltz, 4 beats = bar of a 4/4 dance at log 2, log 3, log 4), so a
convolution over that axis learns meter patterns that hold across tempi and octave errors, and
the dense layer after it still sees where they are (the absolute tempo).

:func:`log_lag_profile` is the feature (pure jnp; log-spaced bins, each the mean of the lags it
covers; with per-example scaled bin edges in training, a tempo jitter); :class:`RhythmStyleClassifier` is the network.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

TEMPOGRAM_LAGS = 384          # lags 0..383 frames of the stored tempogram (win_length 384)


def log_lag_edges(num_bins: int, min_lag: float, max_lag: float) -> np.ndarray:
  """``num_bins + 1`` log-spaced bin edges in frames, ``min_lag .. max_lag`` (float64)."""
  return np.exp(np.linspace(np.log(min_lag), np.log(max_lag), num_bins + 1))


def log_lag_weights(edges: jax.Array, num_lags: int = TEMPOGRAM_LAGS) -> jax.Array:
  """Box-filter resampling weights (..., K, num_lags) from bin edges (..., K + 1).

  Lag j covers [j - 0.5, j + 0.5); bin k covers [edges[k], edges[k+1]); the weight is their
  overlap, normalised to sum 1 per bin. A bin narrower than one lag takes the lag it falls in;
  a wide one (long lags) averages all its lags, so an autocorrelation peak between two bin
  centres is never missed (point interpolation would skip it).
  """
  edges = jnp.asarray(edges, jnp.float32)
  j = jnp.arange(num_lags, dtype=jnp.float32)
  lo = jnp.clip(edges[..., :-1, None], -0.5, num_lags - 0.5)
  hi = jnp.clip(edges[..., 1:, None], -0.5, num_lags - 0.5)
  ov = jnp.maximum(jnp.minimum(hi, j + 0.5) - jnp.maximum(lo, j - 0.5), 0.0)
  return ov / jnp.maximum(ov.sum(-1, keepdims=True), 1e-6)


def log_lag_profile(tempogram: jax.Array, edges: jax.Array) -> jax.Array:
  """``log1p`` of the (..., L) lag profile averaged over the log-spaced bins ``edges``
  ((K + 1,) shared, or (..., K + 1) per example, e.g. scaled by a tempo jitter) -> (..., K).
  Equals a float64 numpy loop over bins and lags (tested)."""
  w = log_lag_weights(edges, tempogram.shape[-1])
  prof = jnp.einsum("...kl,...l->...k", w, tempogram.astype(jnp.float32)) if w.ndim > 2 \
      else tempogram.astype(jnp.float32) @ w.T
  return jnp.log1p(jnp.maximum(prof, 0.0))


class RhythmStyleClassifier(nn.Module):
  """(B, K) log-lag profile -> (B, num_classes) logits.

  ``input_norm``: first standardise each profile over its lags (zero mean, unit variance, no
  learnt scale: :func:`standardise_profile`), so the overall onset strength of a recording, which
  differs from song to song, is not a feature; only the shape of the rhythm profile is.
  Then a Conv1D stack over the lag axis (``channels``, kernel ``kernel``, each ReLU; every layer
  after the first halves the axis) and a LayerNorm, when ``channels`` is not empty; flatten;
  Dense(``hidden``) + ReLU when ``hidden > 0``; dropout before each Dense; Dense to the classes.
  ``channels=(), hidden=0`` is a linear classifier over the standardised profile.
  """
  num_classes: int = 4
  channels: Sequence[int] = (16, 32, 32)
  kernel: int = 5
  hidden: int = 64
  dropout_rate: float = 0.3
  input_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, profile: jax.Array, deterministic: bool = True) -> jax.Array:
    x = profile.astype(jnp.float32)
    if self.input_norm:
      x = standardise_profile(x)
    x = x.astype(self.dtype)[..., None]                             # (B, K, 1)
    for i, ch in enumerate(self.channels):
      x = nn.Conv(ch, (self.kernel,), strides=(1 if i == 0 else 2,), padding="SAME",
                  dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(x)
    if self.channels:
      x = nn.LayerNorm(dtype=self.dtype, name="norm")(x)
    x = x.reshape(x.shape[0], -1)
    if self.hidden > 0:
      x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)


def standardise_profile(profile: jax.Array, eps: float = 1e-3) -> jax.Array:
  """(..., K) -> (profile - mean) / (std + eps) over the last axis (float32)."""
  p = profile.astype(jnp.float32)
  mu = jnp.mean(p, -1, keepdims=True)
  return (p - mu) / (jnp.sqrt(jnp.mean(jnp.square(p - mu), -1, keepdims=True)) + eps)


def from_config(model_cfg, dtype=jnp.float32) -> RhythmStyleClassifier:
  """The module for ``config.model`` (num_classes, channels, kernel, hidden, dropout_rate,
  input_norm)."""
  return RhythmStyleClassifier(
      num_classes=int(model_cfg.num_classes), channels=tuple(int(c) for c in model_cfg.channels),
      kernel=int(model_cfg.kernel), hidden=int(model_cfg.hidden),
      dropout_rate=float(model_cfg.dropout_rate),
      input_norm=bool(model_cfg.get("input_norm", False)), dtype=dtype)


def clip_means(frames: jax.Array, starts: jax.Array, length: int,
               cumsum: Optional[jax.Array] = None) -> jax.Array:
  """Mean of ``frames`` (B, T, D) over ``[s, s + length)`` for every start ``starts`` (B, N).

  Through one cumulative sum, so N overlapping clips cost O(B (T + N) D). Starts are clamped
  to [0, T - length]. Returns (B, N, D) float32.
  """
  B, T, D = frames.shape
  if cumsum is None:
    cumsum = jnp.concatenate([jnp.zeros((B, 1, D), jnp.float32),
                              jnp.cumsum(frames.astype(jnp.float32), axis=1)], axis=1)
  s = jnp.clip(starts, 0, max(T - length, 0))
  hi = jnp.take_along_axis(cumsum, (s + length)[..., None], axis=1)
  lo = jnp.take_along_axis(cumsum, s[..., None], axis=1)
  return (hi - lo) / float(length)
