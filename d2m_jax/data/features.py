"""Frame-aligned audio features: exactly one row per motion frame, at the motion fps.

Feature sets (``FEATURE_DIMS``):

* ``d2m28``: the Dancing2Music 28-d feature (spec ``dancing2music.md`` §1.2): Sphinx MFCC
  (40 mel filters 133.33-6855.50 Hz, 13 cepstra, "legacy" DCT / 40, pre-emphasis 0.97 carrying the
  previous frame's last sample, Hamming window of 0.0667 s, ``rfft(frame, 512)``) on 22.05 kHz
  int16-scale samples, plus the frame log energy ``log(1 + mean(frame**2))``; final row
  ``[F[k], F[k+1] - F[k]]``. Differences from the original, on purpose: the hop is
  ``22050 / fps`` (the original ran at 15 fps; here frame k starts at audio time k / fps), the
  ``ffmpeg-normalize`` loudness step is approximated by scaling to -23 dBFS RMS, and the last
  frames are zero-padded (the original's ``numpy.resize`` repeated the frame). Kept for parity:
  the 512-point FFT crops each 1470-sample windowed frame to its first 512 samples
  (``crop_to_nfft=False`` in :func:`sphinx_mfcc` gives the full-window variant).
* ``fact35``: the AIST++/FACT music feature: onset envelope (1), 20 MFCC, 12 chroma_cens,
  onset-peak one-hot (1), beat one-hot (1). As in FACT, the audio is resampled to
  ``fps * 512`` Hz so that a 512-sample hop gives exactly one column per motion frame.
* ``mfcc20``: Kakashi's per-frame MFCC: 20 librosa MFCC (22.05 kHz, n_fft 2048) averaged over the
  STFT frames whose centres fall in each motion frame's slice of the waveform (Kakashi splits the
  waveform into ``len(poses)`` chunks and averages per chunk; this is the vectorised equivalent).
* ``mel_tempogram512``: learn2dance's ``log1p([mel(128); tempogram(384)])``, computed on the
  ``fps * 512`` Hz grid (one column per motion frame; the tempogram's 384-frame window therefore
  spans 384 / fps s instead of learn2dance's 8.9 s).
* ``waveform16k``: the mono 16 kHz waveform, ``num_frames * 16000 / fps`` samples (1-D).

librosa is imported lazily (importing this module costs nothing), through
:func:`d2m_jax.data.numba_cache.import_librosa`: importing this module points numba's cache at
the project's own folder, and librosa's kernels are compiled there once, one process at a time.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from d2m_jax.data import audio as audio_lib
from d2m_jax.data import numba_cache

numba_cache.configure()   # before anything imports numba: it reads NUMBA_CACHE_DIR at import

FEATURE_DIMS = {"d2m28": 28, "fact35": 35, "mfcc20": 20, "mel_tempogram512": 512}
FRAME_FEATURES = tuple(FEATURE_DIMS)
GRID_HOP = 512          # hop of the fps-locked grid used by fact35 / mel_tempogram512
D2M_SR = 22050
MFCC20_SR = 22050
WAVE_SR = 16000


def resample(wave: np.ndarray, sr: float, target_sr: float) -> np.ndarray:
  """Resamples a mono waveform (soxr HQ)."""
  return audio_lib.resample(wave, sr, target_sr)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
  """Crops or zero-pads axis 0 to length n."""
  if x.shape[0] >= n:
    return x[:n]
  pad = np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad], axis=0)


def _fit_rows(x: np.ndarray, n: int) -> np.ndarray:
  """Crops or edge-pads (repeats the last row) axis 0 to length n."""
  if x.shape[0] >= n:
    return x[:n]
  if x.shape[0] == 0:
    return np.zeros((n,) + x.shape[1:], x.dtype)
  return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)], axis=0)


def grid_sr(fps: float) -> int:
  """Sample rate of the fps-locked analysis grid (hop 512 = one motion frame)."""
  sr = fps * GRID_HOP
  if abs(sr - round(sr)) > 1e-6:
    raise ValueError(f"fps {fps} * {GRID_HOP} must be an integer sample rate")
  return int(round(sr))


# ----------------------------------------------------------------------------------- d2m28 ---

def _mel(f):
  return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_inv(m):
  return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def sphinx_filterbank(sr=D2M_SR, nfft=512, nfilt=40, lowerf=133.3333, upperf=6855.4976):
  """Sphinx triangular mel filters (nfft//2 + 1, nfilt), area-normalised (height 2 / width)."""
  filters = np.zeros((nfft // 2 + 1, nfilt), np.float64)
  dfreq = sr / nfft
  melmin, melmax = _mel(lowerf), _mel(upperf)
  dmelbw = (melmax - melmin) / (nfilt + 1)
  edges = _mel_inv(melmin + dmelbw * np.arange(nfilt + 2, dtype=np.float64))
  for i in range(nfilt):
    left, center, right = (int(np.round(edges[i + j] / dfreq)) for j in range(3))
    height = 2.0 / ((right - left) * dfreq)
    lslope = height / (center - left) if center != left else 0.0
    for f in range(left + 1, center):
      filters[f, i] = (f - left) * lslope
    filters[center, i] = height
    if center != right:
      rslope = height / (center - right)
      for f in range(center + 1, right):
        filters[f, i] = (f - right) * rslope
  return filters


def sphinx_dct(nfilt=40, ncep=13):
  """Sphinx "legacy" DCT matrix (ncep, nfilt), first column halved."""
  i = np.arange(ncep, dtype=np.float64)[:, None]
  m = np.cos(np.pi * i / nfilt * np.arange(0.5, nfilt + 0.5, 1.0)[None, :])
  m[:, 0] *= 0.5
  return m


def sphinx_mfcc(sig: np.ndarray, num: int, fshift: float, *, sr=D2M_SR, wlen_s=0.0667,
                nfft=512, nfilt=40, ncep=13, alpha=0.97, crop_to_nfft=True) -> np.ndarray:
  """Vectorised Sphinx MFCC + log energy: (num, ncep + 1) float64 for frames 0..num-1.

  Frame k covers ``sig[round(k * fshift) : ... + wlen]`` (zero-padded past the end).
  """
  sig = np.asarray(sig, np.float64)
  wlen = int(wlen_s * sr)
  starts = np.round(np.arange(num) * fshift).astype(np.int64)
  need = int(starts[-1]) + wlen if num else 0
  if sig.shape[0] < need:
    sig = np.concatenate([sig, np.zeros(need - sig.shape[0])])
  frames = sig[starts[:, None] + np.arange(wlen)[None, :]]            # (num, wlen)
  prior = np.zeros(num)
  prior[1:] = frames[:-1, -1]                                         # previous frame's last
  emph = np.empty_like(frames)
  emph[:, 0] = frames[:, 0] - alpha * prior
  emph[:, 1:] = frames[:, 1:] - alpha * frames[:, :-1]
  win = emph * np.hamming(wlen)[None, :]
  spec = np.fft.rfft(win, nfft if crop_to_nfft else max(nfft, wlen), axis=1)
  power = spec.real ** 2 + spec.imag ** 2
  n_fft_used = nfft if crop_to_nfft else max(nfft, wlen)
  fb = sphinx_filterbank(sr, n_fft_used, nfilt)
  logspec = np.log(np.clip(power @ fb, 1e-5, np.inf))
  cep = logspec @ sphinx_dct(nfilt, ncep).T / nfilt
  energy = np.log(1.0 + np.mean(frames ** 2, axis=1))
  return np.concatenate([cep, energy[:, None]], axis=1)


def d2m28(wave: np.ndarray, sr: float, fps: float, num_frames: int) -> np.ndarray:
  """Dancing2Music 28-d feature, (num_frames, 28) float32 (see the module docstring)."""
  y = resample(wave, sr, D2M_SR).astype(np.float64)
  rms = np.sqrt(np.mean(y ** 2)) if y.size else 0.0
  if rms > 0:
    y = y * (10.0 ** (-23.0 / 20.0) / rms)      # ~ ffmpeg-normalize to -23 dB
  y = np.clip(y, -1.0, 1.0) * 32767.0             # int16 scale, as the original read it
  f = sphinx_mfcc(y, num_frames + 1, D2M_SR / fps)
  return np.concatenate([f[:-1], f[1:] - f[:-1]], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------- librosa sets ---

class _Grid:
  """Lazily computed analyses on the fps-locked grid, shared between feature sets."""

  def __init__(self, wave, sr, fps, num_frames):
    self.fps, self.n = fps, num_frames
    self.sr = grid_sr(fps)
    self.y = _fit(resample(wave, sr, self.sr), num_frames * GRID_HOP)
    self._env = None
    self._beats = None

  @property
  def env(self):
    if self._env is None:
      librosa = numba_cache.import_librosa()
      self._env = librosa.onset.onset_strength(y=self.y, sr=self.sr, hop_length=GRID_HOP)
    return self._env

  def beats(self):
    if self._beats is None:
      self._beats = _beats_from_grid_signal(self.y, self.sr, self.fps, self.n)
    return self._beats


def _beats_from_grid_signal(y, sr_grid, fps, num_frames):
  librosa = numba_cache.import_librosa()
  hop = GRID_HOP // 2                       # beat analysis at 2 * fps (finer beat phase)
  env = librosa.onset.onset_strength(y=y, sr=sr_grid, hop_length=hop)
  if not np.any(env > 0):
    return np.zeros((0,), np.int64), 0.0
  tempo, beats = librosa.beat.beat_track(onset_envelope=env, sr=sr_grid, hop_length=hop)
  times = np.asarray(beats, np.float64) * hop / sr_grid
  tempo = float(np.atleast_1d(tempo)[0])
  if times.size >= 4:
    # librosa's tempo is quantised to whole lags; refine it by a least-squares line through the
    # beat times (beat numbers from the median period, so skipped beats do not bias it).
    d = np.diff(times)
    med = np.median(d)
    period = np.mean(d[np.abs(d - med) < 0.25 * med])    # unbiased by the frame quantisation
    idx = np.round((times - times[0]) / period)
    a = np.vstack([idx, np.ones_like(idx)]).T
    slope = np.linalg.lstsq(a, times, rcond=None)[0][0]
    if slope > 0:
      tempo = 60.0 / slope
  frames = np.unique(np.round(times * fps).astype(np.int64))
  frames = frames[(frames >= 0) & (frames < num_frames)]
  return frames, tempo


def beat_frames(wave: np.ndarray, sr: float, fps: float, num_frames: int
                ) -> tuple[np.ndarray, float]:
  """Music beats: (motion-frame indices int64, tempo in BPM). Silent audio gives no beats.

  Beats come from ``librosa.beat.beat_track`` on an onset envelope at 2 * fps frames per second;
  the tempo is refined from the beat times (not quantised to whole lags).
  """
  sr_g = grid_sr(fps)
  y = _fit(resample(wave, sr, sr_g), num_frames * GRID_HOP)
  return _beats_from_grid_signal(y, sr_g, fps, num_frames)


def beat_times(frames: np.ndarray, fps: float) -> np.ndarray:
  """Beat times in seconds from motion-frame indices."""
  return np.asarray(frames, np.float64) / fps


def one_hot(frames: np.ndarray, num_frames: int) -> np.ndarray:
  x = np.zeros((num_frames,), np.float32)
  frames = np.asarray(frames, np.int64)
  x[frames[(frames >= 0) & (frames < num_frames)]] = 1.0
  return x


def _fact35(g: _Grid) -> np.ndarray:
  librosa = numba_cache.import_librosa()
  n = g.n
  env = g.env
  mfcc = librosa.feature.mfcc(y=g.y, sr=g.sr, n_mfcc=20, hop_length=GRID_HOP).T
  chroma = librosa.feature.chroma_cens(y=g.y, sr=g.sr, hop_length=GRID_HOP, n_chroma=12).T
  peaks = librosa.onset.onset_detect(onset_envelope=env, sr=g.sr, hop_length=GRID_HOP)
  beats, _ = g.beats()
  cols = [_fit_rows(env[:, None], n), _fit_rows(mfcc, n), _fit_rows(chroma, n),
          one_hot(peaks, n)[:, None], one_hot(beats, n)[:, None]]
  return np.concatenate(cols, axis=1).astype(np.float32)


def _mel_tempogram(g: _Grid) -> np.ndarray:
  librosa = numba_cache.import_librosa()
  mel = librosa.feature.melspectrogram(y=g.y, sr=g.sr, hop_length=GRID_HOP, n_mels=128).T
  tg = librosa.feature.tempogram(onset_envelope=g.env, sr=g.sr, hop_length=GRID_HOP,
                                 win_length=384).T
  out = np.concatenate([_fit_rows(mel, g.n), _fit_rows(tg, g.n)], axis=1)
  return np.log1p(np.maximum(out, 0.0)).astype(np.float32)


def mfcc20(wave: np.ndarray, sr: float, fps: float, num_frames: int) -> np.ndarray:
  """Kakashi's per-frame 20 MFCC (see the module docstring), (num_frames, 20) float32."""
  librosa = numba_cache.import_librosa()
  y = _fit(resample(wave, sr, MFCC20_SR), int(round(num_frames * MFCC20_SR / fps)))
  hop = max(1, int(MFCC20_SR / fps) // 2)
  m = librosa.feature.mfcc(y=y, sr=MFCC20_SR, n_mfcc=20, hop_length=hop).T   # (F, 20)
  chunk = np.floor(np.arange(m.shape[0]) * hop * fps / MFCC20_SR).astype(np.int64)
  keep = chunk < num_frames
  sums = np.zeros((num_frames, 20))
  np.add.at(sums, chunk[keep], m[keep])
  counts = np.bincount(chunk[keep], minlength=num_frames)[:, None]
  return (sums / np.maximum(counts, 1)).astype(np.float32)


def waveform16k(wave: np.ndarray, sr: float, fps: float, num_frames: int) -> np.ndarray:
  """Mono 16 kHz waveform cropped / zero-padded to num_frames * 16000 / fps samples."""
  return _fit(resample(wave, sr, WAVE_SR), int(round(num_frames * WAVE_SR / fps)))


def compute_features(wave: np.ndarray, sr: float, fps: float, num_frames: int,
                     names: Iterable[str] = FRAME_FEATURES) -> dict[str, np.ndarray]:
  """Computes the named feature sets: ``{name: (num_frames, D) float32}`` (waveform16k: 1-D).

  Audio shorter than ``num_frames / fps`` is zero-padded; longer audio is cut.
  """
  names = list(names)
  unknown = [n for n in names if n not in FEATURE_DIMS and n != "waveform16k"]
  if unknown:
    raise ValueError(f"unknown feature sets {unknown}; known: {list(FEATURE_DIMS)} + waveform16k")
  wave = np.asarray(wave, np.float32)
  if wave.ndim == 2:       # (N, channels) -> mono
    wave = wave.mean(axis=1)
  out = {}
  grid = None
  for name in names:
    if name in ("fact35", "mel_tempogram512") and grid is None:
      grid = _Grid(wave, sr, fps, num_frames)
    if name == "d2m28":
      out[name] = d2m28(wave, sr, fps, num_frames)
    elif name == "fact35":
      out[name] = _fact35(grid)
    elif name == "mel_tempogram512":
      out[name] = _mel_tempogram(grid)
    elif name == "mfcc20":
      out[name] = mfcc20(wave, sr, fps, num_frames)
    elif name == "waveform16k":
      out[name] = waveform16k(wave, sr, fps, num_frames)
  return out


def compute_all(wave: np.ndarray, sr: float, fps: float, num_frames: int,
                names: Sequence[str] = FRAME_FEATURES + ("waveform16k",)
                ) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
  """Features plus beats (frames, tempo) from one shared analysis grid (for ingestion)."""
  wave = np.asarray(wave, np.float32)
  if wave.ndim == 2:
    wave = wave.mean(axis=1)
  grid = _Grid(wave, sr, fps, num_frames)
  out = {}
  for name in names:
    if name == "fact35":
      out[name] = _fact35(grid)
    elif name == "mel_tempogram512":
      out[name] = _mel_tempogram(grid)
    else:
      out.update(compute_features(wave, sr, fps, num_frames, [name]))
  beats, tempo = grid.beats()
  return out, beats, tempo


def warm_kernels():
  """Compiles (or loads) every numba kernel the features use, in this process (the warm-up child
  of :func:`d2m_jax.data.numba_cache.ensure_warm`)."""
  from d2m_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  fps, seconds = 25.0, 2.0                      # 2 s of the embedded default's cha-cha music
  y = synthetic.synth_music("C", 120.0, seconds, 0.1, 50, np.random.default_rng(0))
  y = np.asarray(y, np.float32)
  compute_all(y, synthetic.SR, fps, int(fps * seconds))
  beat_frames(y, synthetic.SR, fps, int(fps * seconds))
