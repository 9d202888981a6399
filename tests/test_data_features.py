"""Audio loading and frame-aligned features: row counts, beats, the Sphinx MFCC reference."""
import numpy as np
import pytest
import soundfile as sf

from d2m_jax.data import audio, features
from d2m_jax.data.errors import DataError


def _tone(sr, seconds, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(sr * seconds)) / sr
  x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
  x = x.astype(np.float32)
  return np.stack([x, 0.5 * x], 1) if channels == 2 else x


def _clicks(sr, seconds, bpm, first=0.25):
  x = np.zeros(int(sr * seconds), np.float32)
  rng = np.random.default_rng(1)
  for t in np.arange(first, seconds, 60.0 / bpm):
    i = int(round(t * sr))
    n = min(400, x.size - i)
    x[i:i + n] += 0.8 * rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / 80)
  return x


@pytest.mark.parametrize("sr,channels,fps,num_frames,ext", [
    (22050, 1, 25.0, 37, "wav"), (44100, 2, 25.0, 50, "flac"), (16000, 1, 30.0, 41, "ogg"),
    (8000, 2, 25.0, 26, "mp3")])
def test_feature_rows_equal_motion_frames(tmp_path, sr, channels, fps, num_frames, ext):
  path = tmp_path / f"a.{ext}"
  # audio a little shorter than the motion: features must still give one row per frame
  sf.write(path, _tone(sr, num_frames / fps - 0.1, channels), sr)
  wave, got_sr = audio.load_audio(path)
  assert wave.ndim == 1 and got_sr == sr
  out = features.compute_features(wave, sr, fps, num_frames,
                                  list(features.FEATURE_DIMS) + ["waveform16k"])
  for name, dim in features.FEATURE_DIMS.items():
    assert out[name].shape == (num_frames, dim), name
    assert out[name].dtype == np.float32 and np.all(np.isfinite(out[name])), name
  assert out["waveform16k"].shape == (int(round(num_frames * 16000 / fps)),)


@pytest.mark.parametrize("bpm", [100.0, 128.0])
def test_beat_tracking_recovers_click_tempo(bpm):
  sr, fps, seconds = 22050, 25.0, 12.0
  x = _clicks(sr, seconds, bpm)
  n = int(seconds * fps)
  frames, tempo = features.beat_frames(x, sr, fps, n)
  assert abs(tempo - bpm) < 1.0, tempo
  clicks = (0.25 + np.arange(0, seconds, 60.0 / bpm)) * fps
  d = np.min(np.abs(frames[:, None] - clicks[None, :]), axis=1)
  # beats sit on the clicks (to a frame; librosa may misplace the very last one at the edge)
  assert len(frames) >= 0.8 * len(clicks) and np.mean(d <= 1.0) >= 0.9, (frames, clicks)


def test_silent_audio_has_no_beats():
  frames, tempo = features.beat_frames(np.zeros(22050 * 4, np.float32), 22050, 25.0, 100)
  assert frames.size == 0 and tempo == 0.0


# ------------------------------------------------------------------- d2m28 against a reference ---

def _reference_sphinx(sig, nfr, fshift, sr=22050, wlen=1470, nfft=512, nfilt=40, ncep=13,
                      lowerf=133.3333, upperf=6855.4976, alpha=0.97):
  """Frame-by-frame float64 Sphinx MFCC + log energy, written from the spec (a loop)."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)            # noqa: E731
  imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)          # noqa: E731
  dfreq = sr / nfft
  edges = imel(mel(lowerf) + (mel(upperf) - mel(lowerf)) / (nfilt + 1) * np.arange(nfilt + 2))
  fb = np.zeros((nfft // 2 + 1, nfilt))
  for i in range(nfilt):
    l, c, r = [int(np.round(edges[i + k] / dfreq)) for k in range(3)]
    h = 2.0 / ((r - l) * dfreq)
    for f in range(l + 1, r):
      fb[f, i] = h * (f - l) / (c - l) if f < c else h if f == c else h * (r - f) / (r - c)
    fb[c, i] = h
  dct = np.array([[np.cos(np.pi * i / nfilt * (j + 0.5)) for j in range(nfilt)]
                  for i in range(ncep)])
  dct[:, 0] *= 0.5
  win = np.array([0.54 - 0.46 * np.cos(2 * np.pi * n / (wlen - 1)) for n in range(wlen)])
  prior, out = 0.0, []
  for fr in range(nfr):
    start = int(round(fr * fshift))
    frame = np.zeros(wlen)
    seg = sig[start:start + wlen]
    frame[:len(seg)] = seg
    emph = np.empty(wlen)
    emph[0] = frame[0] - alpha * prior
    for i in range(1, wlen):
      emph[i] = frame[i] - alpha * frame[i - 1]
    prior = frame[-1]
    spec = np.fft.rfft(emph * win, nfft)                 # crops to the first 512 samples
    logspec = np.log(np.clip(np.abs(spec) ** 2 @ fb, 1e-5, None))
    out.append(np.concatenate([dct @ logspec / nfilt, [np.log(1 + np.mean(frame ** 2))]]))
  return np.array(out)


def test_d2m28_matches_float64_sphinx_reference():
  sr, fps, n = 22050, 25.0, 20
  wave = _tone(sr, 0.9, seed=3)
  got = features.d2m28(wave, sr, fps, n).astype(np.float64)
  y = wave.astype(np.float64)
  y = np.clip(y * (10 ** (-23 / 20) / np.sqrt(np.mean(y ** 2))), -1, 1) * 32767.0
  f = _reference_sphinx(y, n + 1, sr / fps)
  want = np.concatenate([f[:-1], f[1:] - f[:-1]], axis=1)
  assert got.shape == (n, 28)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-3)


def test_sphinx_mfcc_of_silence_hand_computed():
  f = features.sphinx_mfcc(np.zeros(5000), 3, 882.0)
  # every log filter energy is log(1e-5); DCT row 0 sums 39.5 ones, row i>=1 sums to
  # -cos(pi i / 80) / 2 (the halved first column); then / 40. Log energy log(1 + 0) = 0.
  c = np.log(1e-5) / 40.0
  want = [39.5 * c] + [-0.5 * np.cos(np.pi * i / 80.0) * c for i in range(1, 13)] + [0.0]
  np.testing.assert_allclose(f, np.tile(want, (3, 1)), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ bad audio ---

def test_bad_audio_errors_name_the_file(tmp_path):
  good = tmp_path / "good.wav"
  sf.write(good, _tone(8000, 1.0), 8000)
  data = good.read_bytes()
  cases = {
      "empty.wav": b"", "corrupt.wav": b"RIFF\x00\x01garbage" + bytes(range(256)) * 4,
      "truncated.wav": data[:len(data) // 2], "notes.txt": b"hello",
  }
  for name, content in cases.items():
    (tmp_path / name).write_bytes(content)
  sf.write(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000)
  expect = {"empty.wav": "empty", "corrupt.wav": "corrupt", "truncated.wav": "truncated",
            "notes.txt": "unsupported", "silent.wav": "silent", "missing.wav": "not found"}
  for name, word in expect.items():
    with pytest.raises(DataError) as e:
      audio.load_audio(tmp_path / name)
    assert str(tmp_path / name) in str(e.value) and word in e.value.problem, str(e.value)
  wave, sr = audio.load_audio(good, sr=16000)
  assert sr == 16000 and abs(wave.size - 16000) <= 1
