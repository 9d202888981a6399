"""Beat tracking in numpy: onset envelope, global tempo and Ellis's dynamic-programming tracker.

A drop-in for the three librosa calls the beat features make, written from the published
algorithms so that generation imports neither ``librosa.onset`` nor ``librosa.beat`` (importing
them costs ~4 s per process on 2 cores, ~2 s of it numba compiling a kernel that librosa 0.11
declares uncacheable); the numbers follow librosa 0.11's conventions, and tests check the beats
equal librosa's:

* :func:`onset_strength` (``librosa.onset.onset_strength`` with its defaults): power STFT (periodic
  Hann window of ``n_fft`` = 2048, frames centred with zero padding), a Slaney-normalised
  128-band mel filterbank from 0 Hz to sr / 2, dB (``10 log10 max(1e-10, S)``, floored 80 dB below
  the song's maximum), the half-wave-rectified frame difference averaged over bands, delayed by
  ``1 + n_fft // (2 hop)`` frames so that onsets line up with the centred frames;
* :func:`tempo` (``librosa.feature.tempo``, Ellis 2007 sec. 3.1): the autocorrelation tempogram
  (8 s Hann windows of the envelope, each autocorrelation scaled to a maximum of 1), averaged over
  time, weighted by a log-normal prior around ``start_bpm`` (one octave wide) and capped at
  320 BPM; the best lag's tempo;
* :func:`beat_track` (``librosa.beat.beat_track``, Ellis 2007 sec. 3.2): the envelope scaled by
  its standard deviation and smoothed by a Gaussian of +-1 beat period (sigma = period / 32);
  then ``C(t) = O(t) + max_{p in [t - 2P, t - round(P/2)]} C(p) - tightness (log((t - p) / P))^2``
  with backlinks; the path is read back from the last local maximum of ``C`` scoring at least
  half the median of its local maxima, and leading/trailing frames weaker than half the RMS of the
  smoothed beat strengths are trimmed. Per-frame tempi (``bpm`` of the envelope's length) are
  supported as in librosa.

The dynamic programme runs in numpy (one vectorised step per frame: ~20 ms for a minute of music
at 50 frames per second), so nothing is compiled and nothing is cached.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

N_FFT = 2048
N_MELS = 128
TOP_DB = 80.0
AMIN = 1e-10
AC_SIZE_S = 8.0
MAX_TEMPO = 320.0
_STFT_BLOCK = 1024      # frames per FFT block (bounds memory on long songs)


# --------------------------------------------------------------------------- onset envelope ---

def _hz_to_mel(f):
  """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
  f = np.asarray(f, np.float64)
  step = np.log(6.4) / 27.0
  return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-300) / 1000.0) / step,
                  f / (200.0 / 3))


def _mel_to_hz(m):
  m = np.asarray(m, np.float64)
  step = np.log(6.4) / 27.0
  return np.where(m >= 15.0, 1000.0 * np.exp(step * (m - 15.0)), (200.0 / 3) * m)


def mel_filterbank(sr: float, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
  """(n_mels, n_fft // 2 + 1) float32 triangles on Slaney's mel scale, 0 Hz .. sr / 2, each
  scaled by 2 / (its bandwidth in Hz) (constant energy per band)."""
  freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
  edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
  width = np.diff(edges)
  dist = edges[:, None] - freqs[None, :]
  rising = -dist[:-2] / width[:-1, None]
  falling = dist[2:] / width[1:, None]
  tri = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
  tri *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
  return tri


def _hann_periodic(n: int) -> np.ndarray:
  """Periodic Hann window: the first n points of a symmetric (n + 1)-point one."""
  phase = np.linspace(-np.pi, np.pi, n + 1)
  return (0.5 + 0.5 * np.cos(phase))[:n]


def power_spectrogram(y: np.ndarray, hop_length: int, n_fft: int = N_FFT) -> np.ndarray:
  """|STFT|^2 (n_fft // 2 + 1, 1 + len(y) // hop) float32; frame t centred on sample t * hop."""
  y = np.asarray(y, np.float32)
  half = n_fft // 2
  padded = np.concatenate([np.zeros(half, np.float32), y, np.zeros(half, np.float32)])
  n_frames = 1 + y.shape[0] // hop_length
  window = _hann_periodic(n_fft)
  out = np.empty((n_frames, n_fft // 2 + 1), np.float32)
  offsets = np.arange(n_fft)
  for start in range(0, n_frames, _STFT_BLOCK):
    idx = np.arange(start, min(n_frames, start + _STFT_BLOCK)) * hop_length
    spec = np.fft.rfft(padded[idx[:, None] + offsets[None, :]] * window, axis=-1)
    spec = spec.astype(np.complex64)
    out[start:start + idx.shape[0]] = np.abs(spec) ** 2
  return out.T


def onset_strength(y: np.ndarray, sr: float, hop_length: int = 512, *, n_fft: int = N_FFT,
                   n_mels: int = N_MELS) -> np.ndarray:
  """Spectral-flux onset envelope (1 + len(y) // hop,) float32 (see the module docstring)."""
  power = power_spectrogram(y, hop_length, n_fft)
  mel = mel_filterbank(sr, n_fft, n_mels) @ power
  db = 10.0 * np.log10(np.maximum(AMIN, mel))
  if db.size:
    db = np.maximum(db, db.max() - TOP_DB)
  flux = np.maximum(0.0, db[:, 1:] - db[:, :-1]).mean(axis=0)
  lag = 1 + n_fft // (2 * hop_length)
  env = np.concatenate([np.zeros(lag, flux.dtype), flux])[:db.shape[1]]
  return env.astype(np.float32)


# ------------------------------------------------------------------------------------ tempo ---

def _next_regular(n: int) -> int:
  """The smallest 2^a 3^b 5^c >= n (a fast real-FFT length)."""
  best = 1 << max(0, (n - 1).bit_length())
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      q = p35
      while q < n:
        q *= 2
      best = min(best, q)
      p35 *= 3
    p5 *= 5
  return best


def tempogram_mean(onset_envelope: np.ndarray, win_length: int) -> np.ndarray:
  """Time-averaged autocorrelation tempogram (win_length,): centred Hann windows of the envelope
  (edges ramped linearly to zero), each autocorrelation divided by its maximum."""
  env = np.asarray(onset_envelope)
  n = env.shape[-1]
  half = win_length // 2
  padded = np.pad(env, (half, half), mode="linear_ramp", end_values=(0, 0))
  frames = np.lib.stride_tricks.sliding_window_view(padded, win_length)[:n]   # (n, win)
  windowed = frames * _hann_periodic(win_length)
  n_pad = _next_regular(2 * win_length - 1)
  ac = np.fft.irfft(np.abs(np.fft.rfft(windowed, n=n_pad, axis=-1)) ** 2, n=n_pad,
                    axis=-1)[:, :win_length]
  peak = np.max(np.abs(ac), axis=-1, keepdims=True)
  peak[peak < np.finfo(ac.dtype).tiny] = 1.0
  return np.mean(ac / peak, axis=0)


def tempo(onset_envelope: np.ndarray, sr: float = 22050, hop_length: int = 512, *,
          start_bpm: float = 120.0, std_bpm: float = 1.0, ac_size: float = AC_SIZE_S,
          max_tempo: Optional[float] = MAX_TEMPO) -> np.ndarray:
  """Global tempo estimate in BPM, shape (1,) (see the module docstring)."""
  if start_bpm <= 0:
    raise ValueError(f"start_bpm={start_bpm} must be strictly positive")
  win_length = int(int(ac_size * sr) // hop_length)
  if win_length < 1:
    raise ValueError(f"ac_size={ac_size} s is shorter than one hop")
  tg = tempogram_mean(onset_envelope, win_length)
  with np.errstate(divide="ignore"):
    bpms = np.concatenate([[np.inf], 60.0 * sr / (hop_length * np.arange(1.0, win_length))])
  logprior = -0.5 * ((np.log2(bpms) - np.log2(start_bpm)) / std_bpm) ** 2
  if max_tempo is not None:
    logprior[:int(np.argmax(bpms < max_tempo))] = -np.inf
  best = int(np.argmax(np.log1p(1e6 * tg) + logprior))
  return np.asarray([bpms[best]])


# ----------------------------------------------------------------------------- beat tracker ---

def _loop_dtype(env: np.ndarray, frames_per_beat: np.ndarray):
  """float32 only when both inputs are float32 (as a float32/float64 kernel pair would pick)."""
  if env.dtype == np.float32 and frames_per_beat.dtype == np.float32:
    return np.float32
  return np.float64


def _gauss_window(period: float) -> np.ndarray:
  """exp(-0.5 (32 k / P)^2) for k = -P .. P (libm's exp, element by element)."""
  k = np.arange(-period, period + 1.0)
  return np.array([math.exp(v) for v in (-0.5 * (k * 32.0 / period) ** 2)])


def local_score(env: np.ndarray, frames_per_beat: np.ndarray, dtype) -> np.ndarray:
  """The envelope smoothed by a Gaussian of +-1 beat period, frame by frame 'same' alignment.

  As the reference kernel does, the first envelope frame never contributes (its product is
  left out of every sum); the sums run in the kernel's order, rounded to ``dtype`` per term.
  """
  n = env.shape[0]
  x = env.astype(np.float64)
  out = np.zeros(n, dtype)
  if frames_per_beat.shape[0] == 1:
    w = _gauss_window(float(frames_per_beat[0]))
    h = w.shape[0] // 2
    for k in range(w.shape[0]):
      # frame i reads x[i + h - k] for 1 <= i + h - k <= n - 1
      lo, hi = max(0, k - h + 1), min(n, n - 1 + k - h + 1)
      if lo < hi:
        seg = out[lo:hi].astype(np.float64) + w[k] * x[lo + h - k:hi + h - k]
        out[lo:hi] = seg.astype(dtype)
    return out
  for i in range(n):                       # time-varying tempo: one window per frame
    w = _gauss_window(float(frames_per_beat[i]))
    kk = w.shape[0]
    h = kk // 2
    acc = dtype(0.0)
    for k in range(max(0, i + h - n + 1), min(i + h, kk)):
      acc = dtype(float(acc) + w[k] * x[i + h - k])
    out[i] = acc
  return out


def dp_backlinks(score: np.ndarray, frames_per_beat: np.ndarray, tightness: float
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """Cumulative scores and backlinks of the beat DP (backlink -1: a path starts here).

  Predecessors are searched from ``t - round(P/2)`` back to ``t - 2P``; on equal scores the
  latest predecessor wins. Frames before the first one scoring 1% of the best start no path.
  """
  dtype = score.dtype.type
  n = score.shape[0]
  tight = float(np.float32(tightness))
  thresh = 0.01 * float(score.max())
  cum = np.zeros(n, dtype)
  back = np.full(n, -1, np.int32)
  static = frames_per_beat.shape[0] == 1
  penalty = None
  first = True
  for i in range(n):
    p = float(frames_per_beat[0 if static else i])
    near, far = int(np.round(p / 2)), int(2 * p)
    if penalty is None or not static:
      log_p = math.log(p) if dtype is np.float64 else float(np.float32(math.log(p)))
      penalty = np.array([tight * ((math.log(d) - log_p) * (math.log(d) - log_p))
                          for d in range(near, far + 1)])     # per distance i - loc
    loc = -1
    best = -np.inf
    if i - near >= 0:
      lo = max(0, i - far)
      cand = cum[lo:i - near + 1].astype(np.float64)[::-1] - penalty[:i - near - lo + 1]
      j = int(np.argmax(cand))                              # first = latest predecessor
      loc, best = i - near - j, float(cand[j])
    s = score[i]
    cum[i] = dtype(float(s) + best) if loc >= 0 else s
    if first and float(s) < thresh:
      back[i] = -1
    else:
      back[i] = loc
      first = False
  return cum, back


def _local_max(x: np.ndarray) -> np.ndarray:
  """x[t] > x[t-1] and x[t] >= x[t+1]; never the first frame; the last if above its left."""
  out = np.zeros(x.shape[0], bool)
  if x.shape[0] >= 2:
    out[1:-1] = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:])
    out[-1] = x[-1] > x[-2]
  return out


def last_beat(cum: np.ndarray) -> int:
  """The last local maximum of ``cum`` at least half the median local maximum (else the end)."""
  peaks = _local_max(cum)
  if not peaks.any():
    return cum.shape[0] - 1
  thresh = cum.dtype.type(0.5 * np.median(cum[peaks]))
  ok = np.flatnonzero(peaks & (cum >= thresh))
  return int(ok[-1]) if ok.size else cum.shape[0] - 1


def trim_beats(score: np.ndarray, beats: np.ndarray, trim: bool) -> np.ndarray:
  """Drops beats on the leading and trailing frames whose score is at most half the RMS of the
  beat scores smoothed by a 5-point Hann window (0 when ``trim`` is False)."""
  out = beats.copy()
  thresh = 0.0
  if trim:
    n = score.shape[0]
    smooth = np.convolve(score[beats].astype(np.float64), np.hanning(5))[2:n + 2]
    thresh = 0.5 * float(np.mean(smooth * smooth)) ** 0.5
  n = score.shape[0]
  i = 0
  while i < n and float(score[i]) <= thresh:
    out[i] = False
    i += 1
  i = n - 1
  while i >= 0 and float(score[i]) <= thresh:
    out[i] = False
    i -= 1
  return out


def beat_track(*, onset_envelope: np.ndarray, sr: float = 22050, hop_length: int = 512,
               start_bpm: float = 120.0, tightness: float = 100.0, trim: bool = True,
               bpm=None, y=None):
  """(tempo, beat frame indices): ``librosa.beat.beat_track(onset_envelope=...)`` in numpy.

  ``bpm``: the tempo to track (a number, or one per envelope frame); None estimates it with
  :func:`tempo` around ``start_bpm`` and returns it as a (1,) array, as librosa does. An
  envelope without any onset gives ``(0.0, [])``. ``y`` is accepted only as None (pass the
  envelope of :func:`onset_strength`).
  """
  if y is not None:
    raise ValueError("beat_track: pass onset_envelope=onset_strength(y, sr, hop_length)")
  env = np.asarray(onset_envelope)
  if env.ndim != 1:
    raise ValueError(f"beat_track: onset_envelope must be 1-D, got shape {env.shape}")
  if not env.any():
    return 0.0, np.array([], dtype=int)
  if bpm is None:
    bpm = tempo(env, sr=sr, hop_length=hop_length, start_bpm=start_bpm)
  bpm_arr = np.atleast_1d(bpm)
  if np.any(bpm_arr <= 0):
    raise ValueError(f"bpm={bpm} must be strictly positive")
  if tightness <= 0:
    raise ValueError("tightness must be strictly positive")
  if bpm_arr.ndim != 1 or bpm_arr.shape[0] not in (1, env.shape[0]):
    raise ValueError(f"bpm of shape {bpm_arr.shape} does not match the envelope {env.shape}")
  frames_per_beat = np.round(float(sr) / hop_length * 60.0 / bpm_arr)
  tiny = np.finfo(env.dtype if np.issubdtype(env.dtype, np.floating) else np.float32).tiny
  norm = env / (env.std(ddof=1) + tiny)
  dtype = _loop_dtype(norm, frames_per_beat)
  score = local_score(norm, frames_per_beat, dtype)
  cum, back = dp_backlinks(score, frames_per_beat, tightness)
  beats = np.zeros(env.shape[0], bool)
  i = last_beat(cum)
  while i >= 0:
    beats[i] = True
    i = back[i]
  return bpm, np.flatnonzero(trim_beats(score, beats, trim))
