"""Tempo at one octave (d2m_jax/data/tempo.py) and beats folded onto it (features.beat_frames)."""
import numpy as np
import pytest

from d2m_jax.data import features, tempo


def _pulses(rate, seconds, bpm, accent_every=1, weak=0.3, first=0.5):
  """Onset envelope at ``rate`` fps: a pulse per beat, every ``accent_every``-th one strong."""
  env = np.zeros(int(rate * seconds))
  for k, t in enumerate(np.arange(first, seconds, 60.0 / bpm)):
    env[int(round(t * rate))] += 1.0 if k % accent_every == 0 else weak
  return env


def test_onset_autocorrelation_matches_direct_sum():
  rng = np.random.default_rng(0)
  e = rng.random(300)
  got = tempo.onset_autocorrelation(e, 40)
  x = e - e.mean()
  n = x.size
  ref = np.array([np.dot(x[:n - lag], x[lag:]) / (n - lag) * n for lag in range(41)])
  np.testing.assert_allclose(got, ref / ref[0], rtol=1e-9, atol=1e-12)


def test_choose_tempo_folds_a_doubled_estimate():
  rate = 50.0
  env = _pulses(rate, 60.0, 176.0, accent_every=2)     # 88 BPM accents, weak off-beats
  chosen, info = tempo.choose_tempo(env, rate, 176.0)
  assert abs(chosen - 88.0) < 0.5, info
  # a halved estimate of a 120 BPM pulse comes back to 120 (inside the 72-140 band)
  chosen, info = tempo.choose_tempo(_pulses(rate, 60.0, 120.0), rate, 60.0)
  assert abs(chosen - 120.0) < 0.5, info
  # a 2/3 confusion (tracker at 119 on an 89 BPM pulse with a 3-beat accent)
  chosen, info = tempo.choose_tempo(_pulses(rate, 60.0, 89.0, accent_every=3), rate, 119.0)
  assert abs(chosen - 89.0) < 0.5, info


def test_fold_beats_keeps_the_strong_phase():
  rate, bpm = 50.0, 88.0
  doubled = 0.5 + np.arange(0, 40) * 60.0 / (2 * bpm)          # tracked at 176 BPM
  env = np.zeros(int(rate * 20))
  idx = np.round(doubled * rate).astype(int)
  env[idx] = 0.2
  env[idx[1::2]] = 1.0                                          # the real beats: odd ones
  got = tempo.fold_beats(doubled, bpm, env, rate)
  np.testing.assert_allclose(got, doubled[1::2])
  assert abs(60.0 / np.median(np.diff(got)) - bpm) < 0.5
  # a tripled sequence: every third beat; an already-folded one is unchanged
  tripled = 0.5 + np.arange(0, 30) * 60.0 / (3 * bpm)
  np.testing.assert_allclose(tempo.fold_beats(tripled, bpm), tripled[0::3])
  single = 0.5 + np.arange(10) * 60.0 / bpm
  np.testing.assert_allclose(tempo.fold_beats(single, bpm), single)
  # a halved one gets its midpoints back
  halved = single[::2]
  np.testing.assert_allclose(tempo.fold_beats(halved, bpm), single[:halved.size * 2 - 1])


def test_fold_octave_and_prior_band():
  assert tempo.fold_octave(174.0) == pytest.approx(87.0)
  assert tempo.fold_octave(43.5) == pytest.approx(87.0)
  assert tempo.fold_octave(100.0) == 100.0
  w = tempo.DANCE_PRIOR.weight(np.array([60.0, 100.0, 170.0]))
  assert w[0] == 0.0 and w[2] == 0.0 and w[1] == pytest.approx(1.0)


def _clicks(sr, seconds, bpm, accent_every=1, weak=0.35, first=0.25):
  x = np.zeros(int(sr * seconds), np.float32)
  rng = np.random.default_rng(1)
  for k, t in enumerate(np.arange(first, seconds, 60.0 / bpm)):
    i = int(round(t * sr))
    n = min(400, x.size - i)
    amp = 0.8 if k % accent_every == 0 else 0.8 * weak
    x[i:i + n] += amp * rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / 80)
  return x


def test_beat_frames_fold_an_octave_doubled_click_track():
  """Clicks at 168 BPM, every other one stronger (W_17 and W_25 of the real data are tracked
  at 168): beats come back at 84 BPM on the strong clicks; without folding they stay at 168."""
  sr, fps, seconds = 22050, 25.0, 16.0
  x = _clicks(sr, seconds, 168.0, accent_every=2, weak=0.6)
  n = int(seconds * fps)
  raw, raw_tempo = features.beat_frames(x, sr, fps, n, fold=False)
  frames, bpm = features.beat_frames(x, sr, fps, n)
  assert abs(raw_tempo - 168.0) < 1.0, raw_tempo
  assert abs(tempo.frames_per_beat(raw) - 25.0 * 60.0 / 168.0) <= 1.0, raw
  assert abs(bpm - 84.0) < 1.0, bpm
  fpb = tempo.frames_per_beat(frames)
  assert abs(fpb - 25.0 * 60.0 / 84.0) <= 1.0, frames
  accents = (0.25 + np.arange(0, seconds, 120.0 / 168.0)) * fps
  d = np.min(np.abs(frames[:, None] - accents[None, :]), axis=1)
  assert np.mean(d <= 1.0) >= 0.9, (frames, accents)


def test_a_stale_processed_dataset_is_not_reused(tmp_path):
  """Data processed by older code (version 1 beats/units/stats) is never read silently."""
  import json
  import ml_collections
  from d2m_jax.data import ingest, pipeline
  from d2m_jax.data.errors import DataError
  pdir = tmp_path / "processed" / "music_to_dance"
  pdir.mkdir(parents=True)
  (pdir / "manifest.json").write_text(json.dumps({"version": 1, "sequences": []}))
  assert ingest.stale_version(str(pdir)) == 1
  cfg = ml_collections.ConfigDict(dict(source="music_to_dance", data_dir=str(tmp_path),
                                       loader="numpy", kind="units"))
  with pytest.raises(DataError, match="version 1.*needs version 2.*preprocess.py"):
    pipeline.load_stats(cfg)
  (pdir / "manifest.json").write_text(json.dumps({"version": ingest.PROCESSED_VERSION}))
  assert ingest.stale_version(str(pdir)) is None
