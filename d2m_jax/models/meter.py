"""Meter and rhythm features of a music clip, in pure jnp, from the stored per-frame features.

A waltz is in 3/4, rumba, cha-cha and tango in 4/4; at the same tempo only the meter tells them
apart, and the log-lag tempogram profile of ``models/music_style.py`` carries it only weakly. These
features are relative to the clip's *beat period* ``P`` (frames per beat: the least-squares slope
of the beat tracker's beat frames on their beat numbers inside the clip), so they hold across
tempi:

* ``ac@k``: the onset-strength autocorrelation (the clip's mean tempogram, lag 0 = 1) at lags of
  ``k`` beats, ``k`` in :data:`AC_BEATS` (2, 3, 4, 6, 8 as asked; 1/2 and 1 for the subdivision and
  the beat): a 3/4 bar lifts lags 3 and 6, a 4/4 bar lags 4 and 8. Each value is the largest
  linear interpolation of the tempogram at ``kP - 1, kP, kP + 1`` (the tracker's period is not
  exact), as ``log1p``.
* beat-synchronous accent patterns over a bar of ``M`` beats, ``M`` in :data:`BAR_BEATS` (3, 4), of
  two accent signals: the onset strength (``fact35`` column 0; the largest value within one frame
  of the beat) and the low-frequency energy (``log`` of the power in the lowest
  :data:`LOW_MEL_BANDS` mel bands of ``mel_tempogram512``, about < 180 Hz: bass and kick; mean
  within one frame of the beat). Per bar position ``j``, the mean over the clip's beats whose
  number is ``j`` modulo ``M``; onset patterns relative to their mean (``p / mean(p) - 1``: no
  loudness), energy patterns minus their mean (already a log). The downbeat is unknown, so each
  pattern is rotated to start at its largest position (``aligned``), and the phase-free circular
  DFT magnitudes of the 3-, 4-, 6- and 8-beat patterns are added as ``log(|F| + 1e-3)``
  (:data:`DFT_TERMS`): ``|F1|`` = one accent per 3, 4, 6 or 8 beats (a bar, or a bar when the
  tracker runs at twice the tempo), ``|F2|`` of the 4-beat pattern = an accent every other beat.
  ``salience``: ``log`` of the mean onset strength at the beats over its mean over all the
  clip's frames (both max-filtered over one frame each side): marked, staccato beats vs a smooth
  or syncopated texture.
* ``tempo``: the tempo ``60 fps / P`` folded into one octave, ``f = frac(log2(bpm / 60))``, as
  ``cos, sin`` of ``2 pi f`` and ``4 pi f`` (circular: 119 and 121 BPM are neighbours, and a beat
  tracker's octave error, P or P / 2, gives the same values). Computed here; the dance-units work
  folds beat tempi too (the lead may unify the two).

A clip with fewer than two tracked beats takes ``P`` from the tempogram instead (its largest
value over lags of 8..30 frames = 50..188 BPM at 25 fps). :func:`meter_features` gives the
:data:`NUM_FEATURES` values in the order of :func:`feature_names`. Checked against float64 numpy
and on click/accent tracks of known meter in ``tests/test_meter.py``.
"""
from __future__ import annotations

import jax.numpy as jnp

AC_BEATS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)     # autocorrelation lags, in beats
BAR_BEATS = (3, 4)                                  # bar lengths of the aligned accent patterns
DFT_TERMS = ((3, 1), (4, 1), (4, 2), (6, 1), (8, 1))  # (bar beats M, harmonic k) of |F_k|
LOW_MEL_BANDS = 8                                   # mel bands 0..7 of 128 at 12.8 kHz: < ~180 Hz
ONSET_COL = 0                                       # fact35: onset envelope ...
BEAT_COL = 34                                       # ... and beat one-hot
FOLD_REF_BPM = 60.0                                 # octave folding: f = frac(log2(bpm / 60))
FALLBACK_LAGS = (8, 30)                             # beat lags searched when the clip has < 2 beats
NUM_FEATURES = len(AC_BEATS) + 2 * (sum(BAR_BEATS) + len(DFT_TERMS)) + 1 + 4
# Column groups of meter_features (a config can take a subset: model.meter_groups).
GROUPS = ("ac", "accents", "dft", "salience", "tempo")


def feature_names() -> list[str]:
  """Names of the :func:`meter_features` columns, in order."""
  names = [f"ac@{k:g}" for k in AC_BEATS]
  for sig in ("onset", "low"):
    for m in BAR_BEATS:
      names += [f"{sig}{m}[{j}]" for j in range(m)]
    names += [f"{sig}|F{k}_{m}|" for m, k in DFT_TERMS]
  return names + ["salience", "tempo_cos1", "tempo_sin1", "tempo_cos2", "tempo_sin2"]


def group_of(name: str) -> str:
  """The :data:`GROUPS` entry of a :func:`feature_names` column."""
  if name.startswith("ac@"):
    return "ac"
  if name.startswith("tempo"):
    return "tempo"
  if name == "salience":
    return "salience"
  return "dft" if "|F" in name else "accents"


def group_columns(groups) -> list[int]:
  """Indices of the :func:`meter_features` columns in ``groups`` (in column order)."""
  unknown = set(groups) - set(GROUPS)
  if unknown:
    raise ValueError(f"unknown meter feature groups {sorted(unknown)}; known: {GROUPS}")
  return [i for i, n in enumerate(feature_names()) if group_of(n) in groups]


def beat_period(beat: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(..., L) beat one-hot -> (period in frames (...,), number of beats (...,)).

  The least-squares slope of the beat frames on their beat numbers 0, 1, ... (a missed or an
  extra beat shifts the numbering of the later beats, as in a plain fit). NaN-free: the period is
  0 where fewer than two beats are in the clip."""
  b = (beat > 0.5).astype(jnp.float32)
  t = jnp.arange(b.shape[-1], dtype=jnp.float32)
  n = jnp.cumsum(b, -1) - 1.0
  cnt = b.sum(-1)
  c = jnp.maximum(cnt, 1.0)
  n_mean = (b * n).sum(-1) / c
  t_mean = (b * t).sum(-1) / c
  dn = (n - n_mean[..., None]) * b
  cov = (dn * (t - t_mean[..., None])).sum(-1)
  var = (dn * dn).sum(-1)
  period = jnp.where(cnt >= 2, cov / jnp.maximum(var, 1e-6), 0.0)
  return period, cnt


def lag_values(ac: jnp.ndarray, lags: jnp.ndarray, halfwidth: float = 1.0) -> jnp.ndarray:
  """``ac`` (..., A) at fractional ``lags`` (..., J): the largest linear interpolation at
  ``lag - halfwidth, lag, lag + halfwidth`` (lags clipped to [0, A - 1]) -> (..., J)."""
  A = ac.shape[-1]

  def interp(x):
    x = jnp.clip(x, 0.0, A - 1.0)
    i0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, A - 2)
    w = x - i0
    v0 = jnp.take_along_axis(ac, i0, axis=-1)
    v1 = jnp.take_along_axis(ac, i0 + 1, axis=-1)
    return (1.0 - w) * v0 + w * v1

  return jnp.maximum(jnp.maximum(interp(lags - halfwidth), interp(lags)),
                     interp(lags + halfwidth))


def _neighbourhood(x: jnp.ndarray, how: str) -> jnp.ndarray:
  """Per frame, the max (``how='max'``) or mean (``'mean'``) of frames t-1, t, t+1 that exist."""
  lo = jnp.concatenate([x[..., :1], x[..., :-1]], -1)       # x[t-1], edge repeated
  hi = jnp.concatenate([x[..., 1:], x[..., -1:]], -1)       # x[t+1]
  if how == "max":
    return jnp.maximum(jnp.maximum(lo, x), hi)
  t = jnp.arange(x.shape[-1])
  has_lo, has_hi = t > 0, t < x.shape[-1] - 1
  total = jnp.where(has_lo, lo, 0.0) + x + jnp.where(has_hi, hi, 0.0)
  return total / (1.0 + has_lo + has_hi)


def accent_pattern(values: jnp.ndarray, beat: jnp.ndarray, bar: int) -> jnp.ndarray:
  """Mean of ``values`` (..., L) at the beats (``beat`` (..., L) one-hot) per bar position:
  position ``j`` = the beats numbered ``j`` modulo ``bar`` (numbered from the clip's first beat)
  -> (..., bar). A position without beats takes the mean of the others (no deviation)."""
  b = (beat > 0.5).astype(jnp.float32)
  n = jnp.cumsum(b, -1) - 1.0
  pos = jnp.mod(n, bar).astype(jnp.int32)
  onehot = (pos[..., None] == jnp.arange(bar)).astype(jnp.float32) * b[..., None]  # (..., L, M)
  sums = jnp.einsum("...l,...lm->...m", values.astype(jnp.float32), onehot)
  cnts = onehot.sum(-2)
  overall = sums.sum(-1, keepdims=True) / jnp.maximum(cnts.sum(-1, keepdims=True), 1.0)
  return jnp.where(cnts > 0, sums / jnp.maximum(cnts, 1.0), overall)


def align_to_max(p: jnp.ndarray) -> jnp.ndarray:
  """(..., M) pattern rotated so that its largest position comes first (first of ties)."""
  M = p.shape[-1]
  k = jnp.argmax(p, -1)
  idx = (k[..., None] + jnp.arange(M)) % M
  return jnp.take_along_axis(p, idx, axis=-1)


def dft_magnitude(p: jnp.ndarray, k: int) -> jnp.ndarray:
  """|(1/M) sum_j p_j exp(-2 pi i j k / M)| of (..., M) patterns -> (...,); phase-free."""
  M = p.shape[-1]
  ang = 2.0 * jnp.pi * k * jnp.arange(M) / M
  re = (p * jnp.cos(ang)).sum(-1) / M
  im = (p * jnp.sin(ang)).sum(-1) / M
  return jnp.sqrt(re * re + im * im + 1e-12)


def folded_tempo(period: jnp.ndarray, fps: float = 25.0) -> jnp.ndarray:
  """Beat period (...,) in frames -> (..., 4): cos, sin of 2 pi f and 4 pi f, with
  ``f = frac(log2(60 fps / period / FOLD_REF_BPM))`` (one octave, circular)."""
  bpm = 60.0 * fps / jnp.maximum(period, 1e-3)
  f = jnp.log2(bpm / FOLD_REF_BPM)
  f = f - jnp.floor(f)
  a = 2.0 * jnp.pi * f
  return jnp.stack([jnp.cos(a), jnp.sin(a), jnp.cos(2 * a), jnp.sin(2 * a)], -1)


def meter_features(ac: jnp.ndarray, onset: jnp.ndarray, low: jnp.ndarray, beat: jnp.ndarray,
                   fps: float = 25.0) -> jnp.ndarray:
  """Meter features of clips: ``ac`` (..., A) the clip's mean linear tempogram (lag 0 = 1),
  ``onset`` / ``low`` / ``beat`` (..., L) its per-frame onset strength, low-frequency log energy
  and beat one-hot -> (..., NUM_FEATURES) float32 (see the module docstring)."""
  ac = ac.astype(jnp.float32)
  period, cnt = beat_period(beat)
  lo, hi = FALLBACK_LAGS
  fallback = (lo + jnp.argmax(ac[..., lo:hi + 1], -1)).astype(jnp.float32)
  period = jnp.where(cnt >= 2, period, fallback)
  lags = period[..., None] * jnp.asarray(AC_BEATS, jnp.float32)
  feats = [jnp.log1p(jnp.maximum(lag_values(ac, lags), 0.0))]
  accents = (("onset", _neighbourhood(onset.astype(jnp.float32), "max")),
             ("low", _neighbourhood(low.astype(jnp.float32), "mean")))
  for sig, v in accents:
    pats = {}
    for m in sorted(set(BAR_BEATS) | {m for m, _ in DFT_TERMS}):
      p = accent_pattern(v, beat, m)
      mean = p.mean(-1, keepdims=True)
      pats[m] = p / jnp.maximum(mean, 1e-6) - 1.0 if sig == "onset" else p - mean
    feats += [align_to_max(pats[m]) for m in BAR_BEATS]
    feats.append(jnp.log(jnp.stack([dft_magnitude(pats[m], k) for m, k in DFT_TERMS], -1)
                         + 1e-3))
  on = accents[0][1]
  at_beats = (on * (beat > 0.5)).sum(-1) / jnp.maximum(cnt, 1.0)
  mean_on = on.mean(-1)
  feats.append(jnp.log((at_beats + 1e-6) / (mean_on + 1e-6))[..., None])
  feats.append(folded_tempo(period, fps))
  return jnp.concatenate(feats, -1)


def low_frequency_energy(mel_log1p: jnp.ndarray) -> jnp.ndarray:
  """(..., T, >= LOW_MEL_BANDS) stored ``log1p`` mel power -> (..., T) ``log`` of the summed
  power of the lowest :data:`LOW_MEL_BANDS` bands (+1e-6)."""
  power = jnp.expm1(mel_log1p[..., :LOW_MEL_BANDS].astype(jnp.float32))
  return jnp.log(jnp.maximum(power, 0.0).sum(-1) + 1e-6)
