"""benchmarks/inference.py's test songs: any input format, ffmpeg bounded in time."""
import os
import time

import numpy as np
import pytest
import soundfile as sf

from benchmarks import inference
from d2m_jax.data import audio


def _tone(path, seconds=1.5, sr=22050):
  t = np.arange(int(seconds * sr)) / sr
  sf.write(str(path), (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr)
  return str(path)


@pytest.mark.parametrize("ext", [".ogg", ".flac", ".wav"])
def test_songs_of_each_length_from_any_format(tmp_path, ext):
  src = _tone(tmp_path / f"src{ext}")
  t0 = time.perf_counter()
  songs = inference._make_songs(src, [1, 4], str(tmp_path))
  assert time.perf_counter() - t0 < 60
  for seconds, path in songs.items():
    wave, sr = audio.load_audio(path)
    assert path.endswith(".mp3") and abs(wave.shape[0] / sr - seconds) < 0.1, (path, seconds)


def test_a_hanging_ffmpeg_is_killed(tmp_path, monkeypatch):
  fake = tmp_path / "ffmpeg"
  fake.write_text("#!/bin/sh\ntrap '' TERM\nexec sleep 30\n")   # ignores SIGTERM, hangs
  fake.chmod(0o755)
  monkeypatch.setenv("D2M_FFMPEG", str(fake))
  monkeypatch.setattr(inference, "FFMPEG_TIMEOUT_S", 1)
  t0 = time.perf_counter()
  with pytest.raises(RuntimeError, match="did not finish"):
    inference._make_songs(_tone(tmp_path / "src.wav"), [2], str(tmp_path))
  assert time.perf_counter() - t0 < 15
