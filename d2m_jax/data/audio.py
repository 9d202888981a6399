"""Audio decoding: any format libsndfile reads (wav, flac, ogg, mp3), any rate, mono or stereo.

``load_audio`` returns a mono float32 waveform in [-1, 1] and its sample rate, or raises
:class:`~d2m_jax.data.errors.DataError` naming the file: missing, empty, corrupt, truncated,
unsupported format, non-finite or silent audio.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np

from d2m_jax.data.errors import DataError

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".oga")
# Peak amplitude below which a signal is "silent" (-80 dBFS): no beats can be found in it.
SILENCE_PEAK = 1e-4


def resample(wave: np.ndarray, sr: float, target_sr: float) -> np.ndarray:
  """Band-limited resampling (soxr, high quality) of a mono float waveform."""
  wave = np.asarray(wave, np.float32)
  if int(sr) == int(target_sr):
    return wave
  import soxr  # librosa's own resampling backend; imports in milliseconds
  return soxr.resample(wave, int(sr), int(target_sr), quality="HQ").astype(np.float32)


@contextlib.contextmanager
def _c_stderr_captured():
  """Sends file descriptor 2 to a temporary file while decoding, so that the decoders' own
  notes (libmpg123 prints ``Note: Illegal Audio-MPEG-Header ...`` from C) do not reach the
  user; our error says what is wrong. Process-wide while it lasts (milliseconds)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):       # no usable stderr: nothing to hide
    yield
    return
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def _decoders() -> str:
  import soundfile as sf
  return f"libsndfile {sf.__libsndfile_version__} (WAV, AIFF, FLAC, Ogg Vorbis/Opus, MP3)"


def _read(path: str, start_s: float, stop_s: float | None):
  with _c_stderr_captured():
    return _read_quietly(path, start_s, stop_s)


def _read_quietly(path: str, start_s: float, stop_s: float | None):
  import soundfile as sf
  try:
    with sf.SoundFile(path) as f:
      sr = f.samplerate
      declared = f.frames
      info = f.extra_info
      start = int(round(start_s * sr))
      if stop_s is not None:
        stop = int(round(stop_s * sr))
      else:
        stop = declared
      if start > 0:
        f.seek(min(start, max(declared - 1, 0)))
      data = f.read(frames=max(stop - start, 0), dtype="float32", always_2d=True)
  except sf.LibsndfileError as e:
    if getattr(e, "prefix", "").startswith("Error opening"):
      # libsndfile's open errors for unreadable contents are misleading ("File does not exist
      # or is not a regular file (possibly a pipe?)" for a text file named .mp3): say it plainly.
      raise DataError(path, f"not a decodable audio file: {_decoders()} could not read its "
                      "contents (corrupt, or not audio)") from None
    raise DataError(path, f"corrupt or truncated audio ({str(e).strip()})") from None
  except (RuntimeError, ValueError, OSError) as e:
    raise DataError(path, f"cannot decode audio ({e})") from None
  if "should be" in info:  # libsndfile: header data size larger than the file (wav/aiff)
    raise DataError(path, "truncated audio file (header says more data than the file holds)")
  wanted = min(stop, declared) - start
  # mp3 frame counts are estimates: allow 1 % (and 0.1 s) slack before calling it truncated.
  if wanted > 0 and data.shape[0] < wanted - max(0.01 * declared, 0.1 * sr):
    raise DataError(path, f"truncated audio: decoded {data.shape[0] / sr:.2f} s of the "
                    f"{wanted / sr:.2f} s its header declares")
  return data, sr


def load_audio(path: str | os.PathLike, sr: float | None = None, *, offset: float = 0.0,
               duration: float | None = None, allow_silent: bool = False
               ) -> tuple[np.ndarray, int]:
  """Decodes an audio file to mono float32.

  Args:
    path: the audio file.
    sr: resample to this rate (None: keep the file's rate).
    offset, duration: read only ``[offset, offset + duration]`` seconds.
    allow_silent: if False (default), a silent signal raises DataError (nothing to learn from,
      and beat tracking finds no beats).

  Returns:
    (wave, sr): wave is float32 (N,), the channels averaged.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(path, "audio file not found")
  if os.path.isdir(path):
    raise DataError(path, "expected an audio file, found a folder")
  ext = os.path.splitext(path)[1].lower()
  if ext not in SUPPORTED_EXTENSIONS:
    raise DataError(path, f"unsupported audio format '{ext}' (supported: "
                    f"{', '.join(SUPPORTED_EXTENSIONS)})")
  if os.path.getsize(path) == 0:
    raise DataError(path, "empty audio file (0 bytes)")
  data, file_sr = _read(path, offset, None if duration is None else offset + duration)
  if data.shape[0] == 0:
    raise DataError(path, "audio holds no samples" + (f" after {offset:.2f} s" if offset else ""))
  wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
  if not np.all(np.isfinite(wave)):
    raise DataError(path, "audio holds NaN or infinite samples")
  peak = float(np.max(np.abs(wave)))
  if not allow_silent and peak < SILENCE_PEAK:
    raise DataError(path, f"silent audio (peak amplitude {peak:.2e}): no music to follow")
  if sr is not None and int(sr) != file_sr:
    wave = resample(wave, file_sr, sr)
    file_sr = int(sr)
  return np.ascontiguousarray(wave, np.float32), int(file_sr)
