"""The numpy beat tracker (d2m_jax.data.beat_track) against librosa 0.11 and closed forms."""
import os
import subprocess
import sys

import numpy as np
import pytest

from d2m_jax.data import beat_track as bt
from d2m_jax.data import features

SR, HOP = 12800, 256          # the beat grid of 25 fps features: 25 * 512 Hz, hop 512 / 2


@pytest.fixture(scope="module")
def librosa():
  from d2m_jax.data import numba_cache  # pylint: disable=import-outside-toplevel
  return numba_cache.import_librosa()


def clicks(bpm, seconds=12.0, start=0.3, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.normal(0, 0.01, int(SR * seconds)).astype(np.float32)
  tail = np.hanning(400)[200:].astype(np.float32)
  for t in np.arange(start, seconds - 0.1, 60.0 / bpm):
    i = int(t * SR)
    y[i:i + 200] += tail
  return y


def test_mel_filterbank_matches_librosa(librosa):
  for sr in (12800, 22050):
    np.testing.assert_array_equal(bt.mel_filterbank(sr), librosa.filters.mel(sr=sr, n_fft=2048))


def test_fast_fft_length_matches_scipy():
  import scipy.fft  # pylint: disable=import-outside-toplevel
  for n in list(range(1, 200)) + [767, 1001, 1535, 4097]:
    assert bt._next_regular(n) == scipy.fft.next_fast_len(n, real=True), n


@pytest.mark.parametrize("bpm", [72.0, 120.0, 171.0])
def test_onset_tempo_and_beats_equal_librosa(librosa, bpm):
  y = clicks(bpm)
  env_ref = librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP)
  env = bt.onset_strength(y, SR, HOP)
  assert env.dtype == env_ref.dtype and env.shape == env_ref.shape
  np.testing.assert_allclose(env, env_ref, rtol=1e-6, atol=1e-6 * env_ref.max())
  np.testing.assert_array_equal(
      bt.tempo(env_ref, SR, HOP), librosa.feature.tempo(onset_envelope=env_ref, sr=SR,
                                                         hop_length=HOP))
  for kw in (dict(), dict(bpm=bpm), dict(tightness=400.0, trim=False), dict(start_bpm=90.0),
             dict(bpm=np.float32(bpm)), dict(bpm=np.linspace(0.9 * bpm, 1.1 * bpm, env.size))):
    t_ref, b_ref = librosa.beat.beat_track(onset_envelope=env_ref, sr=SR, hop_length=HOP, **kw)
    t, b = bt.beat_track(onset_envelope=env_ref, sr=SR, hop_length=HOP, **kw)
    np.testing.assert_array_equal(b, b_ref, err_msg=str(kw))
    np.testing.assert_array_equal(np.asarray(t), np.asarray(t_ref))


def test_beats_on_an_impulse_train():
  """A closed form: an envelope of unit impulses every P frames, tracked at exactly that tempo,
  puts a beat on every impulse (the smoothed score peaks there and the DP steps by P). The
  envelope ends on an impulse: past the last one the DP would end on a cheaper off-beat step."""
  period, n = 25, 986
  env = np.zeros(n, np.float32)
  env[10::period] = 1.0
  fr = SR / HOP
  _, beats = bt.beat_track(onset_envelope=env, sr=SR, hop_length=HOP, bpm=60.0 * fr / period)
  np.testing.assert_array_equal(beats, np.arange(10, n, period))


def test_silence_and_bad_input():
  assert bt.beat_track(onset_envelope=np.zeros(100, np.float32), sr=SR, hop_length=HOP)[1].size == 0
  with pytest.raises(ValueError, match="strictly positive"):
    bt.beat_track(onset_envelope=np.ones(100, np.float32), sr=SR, hop_length=HOP, bpm=-1.0)
  with pytest.raises(ValueError, match="does not match"):
    bt.beat_track(onset_envelope=np.ones(100, np.float32), sr=SR, hop_length=HOP,
                  bpm=np.ones(7) * 100)


def test_beat_frames_imports_neither_librosa_nor_numba():
  code = ("import sys, numpy as np\n"
          "from d2m_jax.data import features\n"
          "t = np.arange(25 * 512 * 8) / (25 * 512.)\n"
          "y = (np.sin(2 * np.pi * 440 * t) * (np.mod(t, 0.5) < 0.05)).astype(np.float32)\n"
          "f, tempo = features.beat_frames(y, 25 * 512, 25.0, 200)\n"
          "assert len(f) > 5 and abs(tempo - 120) < 2, (f, tempo)\n"
          "bad = [m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules]\n"
          "assert not bad, bad\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        check=False, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_real_songs_beats_equal_librosa(shared_data_dir, librosa):
  from d2m_jax.data import audio  # pylint: disable=import-outside-toplevel
  songs = sorted(shared_data_dir.glob("DANCE_*/audio.mp3"))
  if not songs:
    pytest.skip(f"no DANCE_*/audio.mp3 under {shared_data_dir}")
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  done = set()
  for p in songs:                      # one song per style (C, R, T, W): a few seconds in all
    style = p.parent.name.split("_")[1]
    if style in done:
      continue
    try:
      wave, sr = audio.load_audio(str(p))
    except DataError:                  # a damaged file of the dataset: take the next one
      continue
    done.add(style)
    wave = np.asarray(wave, np.float32)
    wave = wave.mean(axis=1) if wave.ndim == 2 else wave
    y = features.resample(wave, sr, SR)[:SR * 60]
    env_ref = librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP)
    env = bt.onset_strength(y, SR, HOP)
    np.testing.assert_allclose(env, env_ref, rtol=1e-6, atol=1e-6 * env_ref.max(), err_msg=p)
    t_ref, b_ref = librosa.beat.beat_track(onset_envelope=env_ref, sr=SR, hop_length=HOP)
    t, b = bt.beat_track(onset_envelope=env, sr=SR, hop_length=HOP)
    np.testing.assert_array_equal(b, b_ref, err_msg=str(p))
    np.testing.assert_array_equal(t, t_ref)
  assert done, "no readable song in the shared dataset"
