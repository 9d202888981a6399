"""Music style from rhythm (task ``music_style``): parameter count, the log-lag tempogram
profile and clip means against float64 numpy on a hand-made click track, evaluation metrics,
and a short training run on synthetic rhythms that generalises to unseen sequences."""
from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import music_style as music_style_config  # noqa: E402
from d2m_jax.models import music_style as ms  # noqa: E402
from d2m_jax.tasks import get_task  # noqa: E402

FPS = 25


def test_parameter_count():
  # The config's model: a linear head over the 64 standardised lag bins, 64 x 4 + 4.
  task = get_task(music_style_config.get_config())
  shapes = jax.eval_shape(lambda r: task.init_state(r, None, None), jax.random.PRNGKey(0))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params))
  assert n == 64 * 4 + 4 == 260
  assert shapes.input_sum.shape == shapes.input_sqsum.shape == (64,)
  # The conv variant (channels=(16, 32, 32), hidden=64): conv 5x1x16+16, 5x16x32+32, 5x32x32+32;
  # LayerNorm 2x32; 64 lags -> 64, 32, 16 positions: Dense 16*32 -> 64, Dense 64 -> 4.
  conv = ms.RhythmStyleClassifier(num_classes=4, channels=(16, 32, 32), kernel=5, hidden=64)
  params = conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
  expected = (5 * 16 + 16) + (5 * 16 * 32 + 32) + (5 * 32 * 32 + 32) + 64 + (512 * 64 + 64) \
      + (64 * 4 + 4)
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == expected == 40996
  logits = task.model.apply({"params": task.init_state(jax.random.PRNGKey(0), None).params},
                            jnp.zeros((3, 64)))
  assert logits.shape == (3, 4)


def click_envelope(num_frames, beat_frames, beats_per_bar, phase=0):
  """Onset envelope of a click track: 1 on each beat, 2 on each bar's first beat."""
  env = np.zeros(num_frames)
  k = np.arange(phase, num_frames, beat_frames)
  env[k] = 1.0
  env[k[::beats_per_bar]] = 2.0
  return env


def local_autocorrelation(env, win=384):
  """A tempogram in numpy float64: per frame, the autocorrelation of the centred window
  (lags 0..win-1), divided by lag 0 (librosa's norm=inf on a non-negative autocorrelation)."""
  n = len(env)
  pad = np.concatenate([np.zeros(win // 2), env, np.zeros(win // 2)])
  w = np.lib.stride_tricks.sliding_window_view(pad, win)[:n]           # (n, win)
  ac = np.stack([np.sum(w[:, :win - k] * w[:, k:], 1) for k in range(win)], 1)
  return ac / np.maximum(ac[:, :1], 1e-12)


def log_lag_reference(profile, edges):
  """Float64 loop: per bin, the overlap-weighted mean of the lags [j - 0.5, j + 0.5) it covers."""
  out = np.zeros(len(edges) - 1)
  for k in range(len(edges) - 1):
    wsum = vsum = 0.0
    for j in range(len(profile)):
      ov = max(0.0, min(edges[k + 1], j + 0.5) - max(edges[k], j - 0.5))
      wsum += ov
      vsum += ov * profile[j]
    out[k] = vsum / wsum
  return np.log1p(out)


def test_log_lag_profile_matches_numpy_on_a_waltz_click_track():
  # 100 BPM = 15 frames per beat at 25 fps; 3/4: the bar is 45 frames.
  tg = local_autocorrelation(click_envelope(300, 15, 3))
  starts = np.array([[0, 17, 50]])
  L = 250
  means = np.asarray(ms.clip_means(jnp.asarray(tg[None], jnp.float32), jnp.asarray(starts), L))
  ref_means = np.stack([tg[s:s + L].mean(0) for s in starts[0]])[None]
  np.testing.assert_allclose(means, ref_means, rtol=1e-5, atol=1e-6)
  edges = ms.log_lag_edges(64, 3.0, 380.0)
  prof = np.asarray(ms.log_lag_profile(jnp.asarray(ref_means, jnp.float32), edges))
  ref = np.stack([log_lag_reference(m, edges) for m in ref_means[0]])
  np.testing.assert_allclose(prof[0], ref, rtol=1e-5, atol=1e-6)
  lags = np.sqrt(edges[:-1] * edges[1:])                                # bin centres
  # The meter is in the profile: against a 4/4 track at the same tempo, the 3/4 track is higher
  # at its bar (3 beats, lag 45) and lower at the 4/4 bar (lag 60); the beat lag is common.
  at = lambda p, lag: p[np.argmin(np.abs(np.log(lags) - np.log(lag)))]  # noqa: E731
  p3 = prof[0, 0]
  tg4 = local_autocorrelation(click_envelope(300, 15, 4))
  p4 = log_lag_reference(tg4[:L].mean(0), edges)
  assert at(p3, 45) > at(p4, 45) + 0.02 and at(p4, 60) > at(p3, 60) + 0.02
  assert at(p3, 15) > 0.1 and at(p4, 15) > 0.1
  # Per-example bin edges (the tempo jitter) = the same bins at scaled lags.
  scaled = np.asarray(ms.log_lag_profile(
      jnp.asarray(ref_means, jnp.float32),
      jnp.asarray(np.stack([edges * 1.05, edges / 1.05, edges]))[None]))
  np.testing.assert_allclose(scaled[0, 0], log_lag_reference(ref_means[0, 0], edges * 1.05),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scaled[0, 1], log_lag_reference(ref_means[0, 1], edges / 1.05),
                             rtol=1e-5, atol=1e-6)


# (beat frames, beats per bar) per style: cha-cha ~125 BPM 4/4, rumba ~104, tango ~130 with
# every other beat accented differently, waltz ~88 BPM in 3/4.
SYN_STYLES = [(12.0, 4), (14.4, 4), (11.5, 2), (17.0, 3)]


def synthetic_sequences(rng, per_style, frames=400):
  feats, styles = [], []
  for s, (beat, bar) in enumerate(SYN_STYLES):
    for _ in range(per_style):
      b = beat * np.exp(rng.uniform(-0.03, 0.03))
      env = np.zeros(frames)
      k = np.arange(int(rng.integers(0, 10)), frames, b)
      env[np.round(k).astype(int)[np.round(k).astype(int) < frames]] = 1.0
      env[np.round(k[::bar]).astype(int)[np.round(k[::bar]).astype(int) < frames]] = 2.0
      env += 0.2 * rng.random(frames)
      tg = local_autocorrelation(env)[::1]
      mel = 1.0 + rng.random((frames, 128))
      feats.append(np.log1p(np.concatenate([mel, tg], 1)).astype(np.float32))
      styles.append(s)
  return np.stack(feats), np.array(styles, np.int32)


def test_training_on_synthetic_rhythms_generalises_to_unseen_sequences():
  rng = np.random.default_rng(0)
  x_tr, y_tr = synthetic_sequences(rng, 3)
  x_te, y_te = synthetic_sequences(rng, 2)
  c = music_style_config.get_config()
  c.model.clip_frames = 150
  c.data.batch_size = 8
  task = get_task(c)
  lengths = np.full(len(x_tr), x_tr.shape[1], np.int32)
  batch = lambda i: {"mel_tempogram512": x_tr[i], "length": lengths[i], "style": y_tr[i]}  # noqa
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch(np.arange(8)))
  step = jax.jit(task.train_step)
  test_batch = {"mel_tempogram512": x_te, "length": np.full(len(x_te), x_te.shape[1], np.int32),
                "style": y_te}
  before = task.finalize_eval(jax.device_get(jax.jit(task.eval_step)(state, test_batch)))
  for i in range(100):
    state, metrics = step(state, batch(rng.choice(len(x_tr), 8, replace=False)))
  after = task.finalize_eval(jax.device_get(jax.jit(task.eval_step)(state, test_batch)))
  assert before["balanced_accuracy"] < 0.6
  assert after["balanced_accuracy"] >= 0.9, after
  assert after["sequence_accuracy"] == 1.0, after
  # predict_clip_logits (the evaluate.py interface) = eval_step's clips of one sequence.
  logits = task.predict_clip_logits(state, {"mel_tempogram512": x_te[0]})
  assert logits.shape == (len(task.eval_starts(x_te.shape[1])), 4)
  conf0 = np.bincount(np.argmax(logits, -1), minlength=4)
  assert conf0.sum() == sum(after["confusion"][y_te[0]]) // 2  # 2 test sequences per style


def test_eval_metrics_count_clips_votes_and_skip_motion_only_sequences():
  c = music_style_config.get_config()
  c.model.clip_frames = 100
  c.model.clip_stride = 50
  task = get_task(c)
  rng = np.random.default_rng(1)
  feats = rng.random((3, 300, 512)).astype(np.float32)
  feats[2] = 0.0                                               # motion-only: no audio
  batch = {"mel_tempogram512": feats, "length": np.array([300, 200, 300], np.int32),
           "style": np.array([0, 3, 1], np.int32)}
  state = task.init_state(jax.random.PRNGKey(0), batch)
  m = jax.device_get(task.eval_step(state, batch))
  conf = np.asarray(m["confusion"])
  # starts 0, 50, ..., 200: 5 clips fit in 300 frames, 3 in 200, none counted for row 2.
  assert conf.sum(1).tolist() == [5, 0, 0, 3]
  assert np.asarray(m["sequence_confusion"]).sum() == 2
  assert task.predict_clip_logits(state, {"mel_tempogram512": feats[2]}).shape == (0, 4)
  np.testing.assert_allclose(task.predict_clip_logits(state, {"mel_tempogram512": feats[0]}),
                             task.clip_logits(state, batch)[0][0], rtol=1e-5, atol=1e-6)


def test_standardised_linear_head_matches_numpy():
  # channels=(), hidden=0, input_norm: logits = standardised profile @ W + b, no other layer.
  model = ms.RhythmStyleClassifier(num_classes=4, channels=(), hidden=0, input_norm=True)
  rng = np.random.default_rng(3)
  prof = rng.random((5, 64)) * 0.8
  prof[0] = 0.25                                             # flat profile: finite, zero input
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
  assert set(params) == {"fc2"}
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 64 * 4 + 4
  z = (prof - prof.mean(1, keepdims=True)) / (prof.std(1, keepdims=True) + 1e-3)
  np.testing.assert_allclose(np.asarray(ms.standardise_profile(jnp.asarray(prof))), z,
                             rtol=1e-4, atol=2e-4)
  w = np.asarray(params["fc2"]["kernel"], np.float64)
  b = np.asarray(params["fc2"]["bias"], np.float64)
  out = np.asarray(model.apply({"params": params}, jnp.asarray(prof, jnp.float32)))
  np.testing.assert_allclose(out, z @ w + b, rtol=1e-4, atol=1e-4)
  # The standardised profile ignores the recording's overall onset strength (scale, offset)
  # up to eps: the same as the numpy reference on the affinely changed profile.
  p2 = 2.0 * prof + 0.5
  z2 = (p2 - p2.mean(1, keepdims=True)) / (p2.std(1, keepdims=True) + 1e-3)
  out2 = np.asarray(model.apply({"params": params}, jnp.asarray(p2, jnp.float32)))
  np.testing.assert_allclose(out2, z2 @ w + b, rtol=1e-4, atol=2e-4)
  np.testing.assert_allclose(out2, out, rtol=1e-2, atol=1e-2)


def test_input_standardisation_uses_the_training_clips_seen():
  c = music_style_config.get_config()
  c.model.clip_frames = 100
  c.model.standardise_inputs = True
  c.data.batch_size = 3
  task = get_task(c)
  rng = np.random.default_rng(2)
  feats = rng.random((3, 300, 512)).astype(np.float32)
  feats[1] = 0.0                                               # motion-only: not counted
  batch = {"mel_tempogram512": feats, "length": np.array([300, 300, 250], np.int32),
           "style": np.array([0, 3, 1], np.int32)}
  state = task.init_state(jax.random.PRNGKey(0), batch)
  x, _, mask, _ = task._train_inputs(state, batch, None)      # the clips train_step draws
  x, mask = np.asarray(x, np.float64), np.asarray(mask) > 0
  assert mask.sum() == 2 * c.model.clips_per_sequence
  new, _ = task.train_step(state, batch)
  seen = x[mask]
  assert float(new.input_count) == len(seen)
  np.testing.assert_allclose(np.asarray(new.input_sum), seen.sum(0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(new.input_sqsum), (seen ** 2).sum(0), rtol=1e-5)
  z = (x - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-4)
  np.testing.assert_allclose(np.asarray(task.standardise(new, jnp.asarray(x, jnp.float32))), z,
                             rtol=2e-3, atol=2e-3)


# Unseen-song check (issue 22 item 3): songs of known meter and tempo, where rumba and waltz share
# the tempo (as three real rumbas share the waltzes' ~87-93 BPM) and only the meter separates
# them: cha-cha 4/4 ~125 BPM, rumba 4/4 ~88, tango 2/4 accents ~150, waltz 3/4 ~88.
METER_STYLES = [(12.0, 4), (17.0, 4), (10.0, 2), (17.0, 3)]


def metered_songs(rng, per_style, frames=400):
  """Synthetic processed songs: ``mel_tempogram512`` (bass in the lowest mel bands on each
  downbeat, the onset envelope's tempogram) and ``fact35`` (onset envelope, beat one-hot)."""
  mels, rhythms, styles = [], [], []
  for s, (beat, bar) in enumerate(METER_STYLES):
    for _ in range(per_style):
      b = beat * np.exp(rng.uniform(-0.03, 0.03))
      k = np.round(np.arange(int(rng.integers(0, 10)), frames, b)).astype(int)
      k = k[k < frames]
      env = 0.2 * rng.random(frames)
      env[k] += 1.0
      env[k[::bar]] += 1.0
      low = np.full(frames, 0.01)
      low[k], low[k[::bar]] = 0.25, 1.0
      mel = 1.0 + rng.random((frames, 128))
      mel[:, :8] = low[:, None] * (1.0 + 0.2 * rng.random((frames, 8)))
      tg = local_autocorrelation(env)
      rhythm = np.zeros((frames, 35))
      rhythm[:, 0] = env
      rhythm[k, 34] = 1.0
      mels.append(np.log1p(np.concatenate([mel, tg], 1)).astype(np.float32))
      rhythms.append(rhythm.astype(np.float32))
      styles.append(s)
  return np.stack(mels), np.stack(rhythms), np.array(styles, np.int32)


def test_chosen_configuration_classifies_unseen_synthetic_songs_of_each_meter():
  rng = np.random.default_rng(5)
  x_tr, r_tr, y_tr = metered_songs(rng, 3)
  x_te, r_te, y_te = metered_songs(rng, 2)
  c = music_style_config.get_config()            # the configuration the nested CV chose ...
  c.model.clip_frames = 150                      # ... on short songs (400 frames)
  c.model.segment_extra = 150
  task = get_task(c)
  n = len(x_tr)
  step = jax.jit(task.train_step)
  def batch(i, s):  # noqa: E306
    return task.host_batch({"mel_tempogram512": x_tr[i], "fact35": r_tr[i], "style": y_tr[i],
                            "length": np.full(len(i), x_tr.shape[1], np.int32)}, s)
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch(np.arange(8), 0))
  for s in range(80):
    state, _ = step(state, batch(rng.choice(n, 8, replace=False), s))
  test = {"mel_tempogram512": x_te, "fact35": r_te, "style": y_te,
          "length": np.full(len(x_te), x_te.shape[1], np.int32)}
  m = task.finalize_eval(jax.device_get(jax.jit(task.eval_step)(state, test)))
  assert m["sequence_accuracy"] == 1.0, m            # every held-out song right by vote
  assert min(m["per_class_accuracy"]) >= 0.8, m      # each meter / style, clip by clip
  # Rumba (4/4) and waltz (3/4) at the same tempo: not confused.
  conf = np.asarray(m["confusion"])
  assert conf[1, 3] + conf[3, 1] <= 0.1 * (conf[1].sum() + conf[3].sum()), conf


def test_host_batch_cuts_one_segment_per_song_and_keeps_the_keys_read():
  c = music_style_config.get_config()
  c.model.clip_frames, c.model.segment_extra = 100, 50
  c.model.meter_groups = ("dft",)                      # reads fact35 too
  task = get_task(c)
  rng = np.random.default_rng(4)
  T = 600
  feats = rng.random((3, T, 512)).astype(np.float32)
  rhythm = rng.random((3, T, 35)).astype(np.float32)
  batch = {"mel_tempogram512": feats, "fact35": rhythm, "pose": np.zeros((3, T, 69)),
           "style": np.array([0, 1, 3], np.int32), "length": np.array([600, 400, 120], np.int32)}
  out = task.host_batch(batch, step=7)
  assert set(out) == {"mel_tempogram512", "fact35", "style", "length"}
  assert out["mel_tempogram512"].shape == (3, 150, 512) and out["fact35"].shape == (3, 150, 35)
  np.testing.assert_array_equal(out["length"], [150, 150, 120])
  for i, n in enumerate([600, 400, 120]):
    # The segment is a slice of the song that fits in its length (the 120-frame song from 0).
    s = [s for s in range(max(n - 150, 0) + 1)
         if np.array_equal(feats[i, s:s + 150], out["mel_tempogram512"][i])]
    assert len(s) == 1 and np.array_equal(rhythm[i, s[0]:s[0] + 150], out["fact35"][i])
  again = task.host_batch(batch, step=7)
  other = task.host_batch(batch, step=8)
  np.testing.assert_array_equal(again["mel_tempogram512"], out["mel_tempogram512"])
  assert not np.array_equal(other["mel_tempogram512"][0], out["mel_tempogram512"][0])
