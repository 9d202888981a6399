"""Tempo at one musical octave per song, and beat sequences folded onto it (numpy only).

A beat tracker's tempo is octave-ambiguous: on the ballroom recordings of the real data,
librosa's ``beat_track`` returns some waltzes at 168-174 BPM (twice their 84-89 BPM beat), one at
119 (4/3 of it) and rumbas at 90, 130 and 160 BPM. Dance units cut on such beats span half (or
two thirds) of the motion of their siblings. This module picks, per song, the tempo among the
tracker's estimate times ``RATIOS`` that the music supports best under a prior fitted to dance
music (:class:`TempoPrior`), and folds a beat sequence onto that tempo:

* :func:`onset_autocorrelation`: the normalised autocorrelation of an onset-strength envelope
  (the whole song's "global tempogram"): periodicity strength as a function of lag;
* :func:`choose_tempo`: ``argmax_c strength(c) ** power * prior(c)`` over the candidates
  ``c = bpm * r`` (``r`` in ``RATIOS``) inside the prior's range; returns the chosen BPM and the
  score table (for the preprocessing log);
* :func:`fold_beats`: beat times whose period is a multiple / fraction of the chosen one are
  decimated (every 2nd or 3rd beat, keeping the phase with the strongest onsets) or subdivided
  (midpoints), so a sequence tracked at 2x the chosen tempo comes back at the chosen tempo.

``d2m_jax.data.features.track_beats`` (the one entry point of beat tracking) passes the chosen
tempo to the tracker as ``bpm=`` so the beats are re-tracked at that period, then folds them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# Candidate ratios to the tracker's tempo: octaves, and 2/3 / 3/2 (triple vs duple metre
# confusions, seen on the rumbas and one waltz of the real data).
RATIOS = (1.0 / 3.0, 0.5, 2.0 / 3.0, 0.75, 1.0, 4.0 / 3.0, 1.5, 2.0, 3.0)


@dataclasses.dataclass(frozen=True)
class TempoPrior:
  """Log-normal prior over the beat rate of dance music, truncated to ``[lo_bpm, hi_bpm]``.

  The default range, 72-140 BPM, is one octave-wide band (less than 2x) that holds the
  quarter-note tempo of every ballroom dance in the data (waltz 84-90, rumba ~ 90-105, tango
  ~ 128, cha-cha ~ 115-128) and of most popular dance music, so a song has exactly one octave
  candidate inside it; the centre (100 BPM, sigma 0.5 octave) only breaks ties between the 2/3
  and 3/2 candidates.
  """
  centre_bpm: float = 100.0
  sigma_octaves: float = 0.5
  lo_bpm: float = 72.0
  hi_bpm: float = 140.0
  power: float = 1.0          # weight of the periodicity strength against the prior

  def weight(self, bpm: np.ndarray) -> np.ndarray:
    bpm = np.asarray(bpm, np.float64)
    w = np.exp(-0.5 * (np.log2(bpm / self.centre_bpm) / self.sigma_octaves) ** 2)
    return np.where((bpm >= self.lo_bpm) & (bpm <= self.hi_bpm), w, 0.0)


DANCE_PRIOR = TempoPrior()


def onset_autocorrelation(env: np.ndarray, max_lag: int | None = None) -> np.ndarray:
  """Normalised autocorrelation ``acf[L] = sum_t e_t e_{t+L} / sum_t e_t^2`` of the mean-removed
  envelope, divided by the overlap ``(n - L) / n`` (unbiased), for lags 0..max_lag."""
  e = np.asarray(env, np.float64).reshape(-1)
  e = e - e.mean()
  n = e.shape[0]
  max_lag = n - 1 if max_lag is None else min(int(max_lag), n - 1)
  if n < 2 or not np.any(e):
    return np.zeros((max_lag + 1,))
  size = 1 << int(np.ceil(np.log2(2 * n)))
  spec = np.fft.rfft(e, size)
  acf = np.fft.irfft(spec * np.conj(spec), size)[:max_lag + 1]
  acf = acf / (n - np.arange(max_lag + 1)) * n
  return acf / acf[0]


def periodicity(acf: np.ndarray, frame_rate: float, bpm, tolerance: float = 0.03) -> np.ndarray:
  """Strength of each tempo: the max of ``acf`` over lags within ``tolerance`` of its beat period
  (``60 frame_rate / bpm`` frames), clipped at 0; 0 beyond the autocorrelation's range."""
  bpm = np.atleast_1d(np.asarray(bpm, np.float64))
  out = np.zeros(bpm.shape)
  for i, b in enumerate(bpm):
    lag = 60.0 * frame_rate / b
    lo = max(1, int(np.floor(lag * (1 - tolerance))))
    hi = min(acf.shape[0] - 1, int(np.ceil(lag * (1 + tolerance))))
    if lo <= hi:
      out[i] = max(0.0, float(acf[lo:hi + 1].max()))
  return out


def choose_tempo(env: np.ndarray, frame_rate: float, bpm: float,
                 prior: TempoPrior = DANCE_PRIOR) -> tuple[float, dict]:
  """The tempo ``bpm * r`` (``r`` in ``RATIOS``) with the best ``strength ** power * prior``.

  ``env``: onset-strength envelope at ``frame_rate`` frames per second; ``bpm``: the tracker's
  estimate. Falls back to folding ``bpm`` by octaves into the prior's range when no candidate
  has any periodicity (e.g. a click-free envelope). Returns ``(bpm, info)`` with the candidate
  table in ``info``.
  """
  bpm = float(bpm)
  if not bpm > 0:
    return bpm, {"candidates": [], "reason": "no tempo"}
  cands = np.asarray([bpm * r for r in RATIOS])
  max_lag = int(np.ceil(60.0 * frame_rate / prior.lo_bpm * 1.1)) + 1
  acf = onset_autocorrelation(env, max_lag)
  strength = periodicity(acf, frame_rate, cands)
  score = strength ** prior.power * prior.weight(cands)
  info = {"candidates": [(round(float(c), 2), round(float(s), 4), round(float(q), 4))
                         for c, s, q in zip(cands, strength, score)]}
  if np.any(score > 0):
    return float(cands[int(np.argmax(score))]), info
  return fold_octave(bpm, prior), dict(info, reason="no periodicity: octave fold")


def fold_octave(bpm: float, prior: TempoPrior = DANCE_PRIOR) -> float:
  """``bpm * 2**k`` for the integer k that brings it into ``[lo_bpm, 2 lo_bpm)``."""
  bpm = float(bpm)
  if not bpm > 0:
    return bpm
  while bpm >= 2.0 * prior.lo_bpm:
    bpm /= 2.0
  while bpm < prior.lo_bpm:
    bpm *= 2.0
  return bpm


def fold_beats(times: np.ndarray, bpm: float, strength: np.ndarray | None = None,
               frame_rate: float | None = None) -> np.ndarray:
  """Beat times (s) folded onto the period ``60 / bpm``.

  Let ``p`` be the median interval of ``times``. If ``60/bpm`` is about ``k p`` (k = 2 or 3, the
  tracker followed a subdivision), every k-th beat is kept, from the phase whose beats carry the
  most onset ``strength`` (sampled at ``times * frame_rate``; phase 0 without one). If it is about
  ``p / 2`` (the tracker skipped every other beat), midpoints are inserted. Otherwise (already at
  the period, or an unrelated ratio) the times are returned unchanged.
  """
  t = np.sort(np.asarray(times, np.float64).reshape(-1))
  if t.shape[0] < 2 or not bpm > 0:
    return t
  period = 60.0 / float(bpm)
  p = float(np.median(np.diff(t)))
  ratio = period / p
  for k in (2, 3):
    if abs(ratio - k) < 0.2 * k:
      if strength is not None and frame_rate:
        idx = np.clip(np.round(t * frame_rate).astype(np.int64), 0, len(strength) - 1)
        s = np.asarray(strength, np.float64)[idx]
        phase = int(np.argmax([s[j::k].mean() if s[j::k].size else -np.inf for j in range(k)]))
      else:
        phase = 0
      return t[phase::k]
  if abs(ratio - 0.5) < 0.1:
    mid = 0.5 * (t[:-1] + t[1:])
    return np.sort(np.concatenate([t, mid]))
  return t


def frames_per_beat(beat_frames: np.ndarray) -> float:
  """Median interval of a beat sequence (motion frames per beat); nan with < 2 beats."""
  b = np.asarray(beat_frames, np.float64).reshape(-1)
  return float(np.median(np.diff(b))) if b.shape[0] >= 2 else float("nan")


def tempo_from_beats(beats: np.ndarray, fps: float) -> float:
  """Tempo (BPM) of a beat-frame sequence: ``60 fps / median interval``; 0 with < 2 beats (the
  ingest convention for a sequence without music)."""
  fpb = frames_per_beat(beats)
  return float(60.0 * fps / fpb) if np.isfinite(fpb) and fpb > 0 else 0.0


def sequence_tempo(tempo, beats: np.ndarray, fps: float) -> float:
  """A sequence's stored tempo, or (None: a record or portable export without one) the tempo of
  its beats."""
  return float(tempo) if tempo is not None else tempo_from_beats(beats, fps)
