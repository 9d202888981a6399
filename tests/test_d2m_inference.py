"""Dancing2Music inference: exact output length, beats on music beats, determinism."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.d2m_composition import get_config
from d2m_jax.models import d2m_inference as inf
from d2m_jax.tasks import get_task


@pytest.mark.parametrize("beats,num_frames", [
    (np.arange(4, 300, 13), 300),           # steady tempo
    (np.cumsum([40, 9, 14, 11, 20, 7, 16, 12, 10, 15]), 220),   # rubato, late first beat
    (np.array([57]), 120),                  # one beat
    (np.array([], int), 90),                # no beat: default tempo
])
def test_beat_warp_puts_unit_beats_on_music_beats(beats, num_frames):
  times = inf.standard_times(beats, num_frames, fps=25.0)
  assert times.shape == (num_frames,) and times[0] >= 0
  assert np.all(np.diff(times) > 0)                       # time runs forward
  # a standardised sequence whose value is its own frame index
  S = int(np.floor(times.max())) + 2
  seq = np.arange(S, dtype=np.float64)[:, None] * np.ones((1, 3))
  out = inf.beat_warp(seq, times)
  assert out.shape == (num_frames, 3)
  at_beats = out[beats, 0]
  # every music beat lands exactly on a unit beat frame (3, 11, 19, 27 of a unit) ...
  np.testing.assert_allclose(at_beats % 8, 3.0, atol=1e-9)
  # ... on consecutive unit beats
  np.testing.assert_allclose(np.diff(at_beats), 8.0, atol=1e-9)


def test_beat_warp_uses_frames_not_seconds_between_beats():
  beats = np.array([10, 22, 34, 46])  # 12 frames per beat -> 8 standard frames per 12 frames
  t = inf.standard_times(beats, 60)
  np.testing.assert_allclose(t[16], t[10] + 8 * 6 / 12)


@pytest.fixture(scope="module")
def tiny_comp():
  c = get_config()
  m = c.model
  m.hidden, m.z_mov, m.init_hidden, m.z_init = 16, 8, 8, 4
  m.z_dance, m.dance_hidden, m.style_input_frames = 8, 16, 20
  task = get_task(c)
  batch = task.synthetic_batch(1, np.random.default_rng(0))
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, None)
  return task, state


def _feats(n):
  return {"d2m28": np.random.default_rng(n).normal(size=(n, 28)).astype(np.float32)}


@pytest.mark.parametrize("duration_s", [0.3, 4.1, 19.7])
def test_generate_length_equals_music_length(tiny_comp, duration_s):
  task, state = tiny_comp
  n = round(duration_s * 25)
  beats = np.arange(6, n, 12)
  out = task.generate(state, _feats(n), beats, n, jax.random.PRNGKey(3), num_samples=2)
  assert out.shape == (2, n, 23, 3) and out.dtype == np.float32
  assert np.isfinite(out).all()


def test_generate_is_deterministic_given_the_seed(tiny_comp):
  task, state = tiny_comp
  beats = np.arange(5, 80, 12)
  a = task.generate(state, _feats(80), beats, 80, jax.random.PRNGKey(7), 1)
  b = task.generate(state, _feats(80), beats, 80, jax.random.PRNGKey(7), 1)
  c = task.generate(state, _feats(80), beats, 80, jax.random.PRNGKey(8), 1)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-4


def test_generated_unit_beats_fall_on_music_beats(tiny_comp, monkeypatch):
  """End to end through generate(): units whose poses encode their own frame index."""
  task, state = tiny_comp
  T, P = task.m.unit_length, task.m.pose_size

  def fake_triplet(params, frozen, style, initpose, key):
    ramp = jnp.arange(T, dtype=jnp.float32)[None, None, :, None]
    return jnp.broadcast_to(ramp, (style.shape[0], 3, T, P))
  monkeypatch.setitem(task.__dict__, "_d2m_triplet_body", fake_triplet)
  monkeypatch.setitem(task.__dict__, "_d2m_song_fns", {})
  beats = np.array([30, 41, 55, 66, 80, 91, 103, 118])
  out = task.generate(state, _feats(130), beats, 130, jax.random.PRNGKey(0), 1)
  local = out[0, beats, 0, 0]                 # identity stats: the unit-local frame index
  np.testing.assert_allclose(local % 8, 3.0, atol=1e-5)  # 3, 11, 19 or 27: the unit's beats


def test_sliding_style_mode_runs(tiny_comp):
  task, state = tiny_comp
  with task.m.unlocked():
    task.m.gen_style_mode, task.m.gen_style_window_s = "sliding", 1.0
  try:
    out = task.generate(state, _feats(100), np.arange(3, 100, 12), 100, jax.random.PRNGKey(0), 1)
  finally:
    task.m.gen_style_mode = "mean"
  assert out.shape == (1, 100, 23, 3)


def test_choose_candidates_keeps_the_first_moving_one():
  T, P, thr = 4, 2, 1.0
  still = np.zeros((3, T, P), np.float32)
  moving = np.arange(T, dtype=np.float32)[None, :, None] * np.ones((3, 1, P), np.float32)
  half = moving.copy()
  half[1] = 0.0                                   # one static unit makes the triplet static
  # (K=4 candidates, N=4 samples)
  cands = [[half, still, moving, moving * 2],     # first moving: 2
           [still, half, still, still],           # none moves: 0
           [moving * 3, still, moving, moving],   # first moving: 0
           [still, still, still, moving * 5]]     # first moving: 3
  units = np.stack([np.stack(c) for c in cands], axis=1)        # (K, N, 3, T, P)
  chosen, idx = inf.choose_candidates(jnp.asarray(units), thr)
  np.testing.assert_array_equal(np.asarray(idx), [2, 0, 0, 3])
  expect = np.stack([units[i, n] for n, i in enumerate([2, 0, 0, 3])])
  np.testing.assert_array_equal(np.asarray(chosen), expect)
  motion = np.abs(np.diff(expect, axis=2)).sum(axis=(2, 3))
  assert (motion[[0, 2, 3]] >= thr).all()         # non-static wherever a candidate moves


def test_choose_candidates_least_static_fallback():
  """``least_static``: where no candidate passes, the one whose least-moving unit moves most
  (hand-built motions); where one passes, the first passing one, as with ``first``."""
  T, P = 4, 2
  ramp = np.arange(T, dtype=np.float32)[None, :, None] * np.ones((3, 1, P), np.float32)

  def trip(a, b, c):                              # per-unit motion 2 (T-1) x speed
    return np.stack([ramp[0] * a, ramp[1] * b, ramp[2] * c])
  cands = [[trip(1, 1, 0), trip(1, 1, 1), trip(0.5, 1, 1)],   # N=3 samples (rows), K=3
           [trip(1, 1, 1), trip(9, 9, 1.5), trip(2, 2, 2)],
           [trip(1, 2, 1), trip(3, 1, 2), trip(0.5, 5, 5)]]
  units = jnp.asarray(np.stack([np.stack(c) for c in cands], axis=1))   # (K, N, 3, T, P)
  # least-unit motion = 6 x the slowest unit's speed: sample 0: 0, 6, 3 (none passes 10: the
  # least static is 1); sample 1: 6, 9, 12 (candidate 2 passes 10); sample 2: 6, 6, 3 (none
  # passes; the tie goes to the first, 0)
  _, idx = inf.choose_candidates(units, 10.0, "least_static")
  np.testing.assert_array_equal(np.asarray(idx), [1, 2, 0])
  _, idx_first = inf.choose_candidates(units, 10.0, "first")
  np.testing.assert_array_equal(np.asarray(idx_first), [0, 2, 0])
  chosen, idx = inf.choose_candidates(units, 13.0, "least_static")   # nothing passes 13
  np.testing.assert_array_equal(np.asarray(idx), [1, 2, 0])
  np.testing.assert_array_equal(np.asarray(chosen)[1], np.asarray(units)[2, 1])
  _, idx_first = inf.choose_candidates(units, 13.0, "first")
  np.testing.assert_array_equal(np.asarray(idx_first), [0, 0, 0])
  with pytest.raises(ValueError, match="gen_static_fallback"):
    inf.choose_candidates(units, 10.0, "largest")


def test_song_lengths_in_one_bucket_do_not_retrace(tiny_comp, monkeypatch):
  task, state = tiny_comp
  monkeypatch.setitem(task.__dict__, "_d2m_song_fns", {})   # a fresh jit cache
  assert inf.num_triplets_bucket(2) == inf.num_triplets_bucket(6) == 8
  before = inf.TRACE_COUNTS["song"]
  a = task.generate(state, _feats(150), np.arange(5, 150, 12), 150, jax.random.PRNGKey(1), 1)
  assert inf.TRACE_COUNTS["song"] == before + 1
  b = task.generate(state, _feats(600), np.arange(5, 600, 12), 600, jax.random.PRNGKey(1), 1)
  assert inf.TRACE_COUNTS["song"] == before + 1      # 2 and 5 triplets: the same compiled scan
  assert a.shape == (1, 150, 23, 3) and b.shape == (1, 600, 23, 3)


def _sequential_reference(task, state, feats, beats, num_frames, rng, N, fallback="first"):
  """The earlier implementation: a Python loop over triplets and redraw attempts (and, for
  ``least_static``, the kept draw replaced by any later one whose slowest unit moves more)."""
  m = task.m
  T, P = m.unit_length, m.pose_size
  trip = jax.jit(inf._triplet_body(task))
  style = inf.song_styles(task, state, feats["d2m28"], num_frames, 25.0)[0][0]
  style = jnp.broadcast_to(jnp.asarray(style), (N, style.shape[-1]))
  times = inf.standard_times(beats, num_frames)
  n_trip = int(np.ceil((np.floor(times.max()) + 2) / (3 * T)))
  thr = float(m.gen_static_thr) * (T - 1) * P
  pose, seq, picks = jnp.zeros((N, P)), [], []
  for j in range(n_trip):
    accepted, done, pick = None, np.zeros(N, bool), np.zeros(N, int)
    for a in range(m.gen_max_tries):
      units = np.asarray(trip(state.params, state.frozen, style, pose,
                              jax.random.fold_in(jax.random.fold_in(rng, j), a)))
      motion = np.abs(np.diff(units, axis=2)).sum(axis=(2, 3))
      ok = (motion >= thr).all(axis=1)
      if accepted is None:
        accepted, best = units.copy(), motion.min(axis=1)
      take = ok & ~done
      if fallback == "least_static":
        better = ~ok & ~done & (motion.min(axis=1) > best)
        accepted[better], pick[better] = units[better], a
        best = np.where(better, motion.min(axis=1), best)
      accepted[take], pick[take] = units[take], a
      done |= ok
    seq.append(accepted.reshape(N, 3 * T, P))
    picks.append(pick)
    pose = jnp.asarray(accepted[:, -1, -1])
  out = inf.beat_warp(np.concatenate(seq, axis=1), times)
  st = jax.device_get(state.stats)
  out = out * st["pose_std"] + st["pose_mean"]
  return out.reshape(N, num_frames, 23, 3), np.stack(picks)


@pytest.mark.parametrize("per_call,fallback", [(0, "first"), (3, "first"), (0, "least_static"),
                                               (3, "least_static")])
def test_generate_matches_the_sequential_redraw_loop(tiny_comp, per_call, fallback):
  """Batched candidates + scan == the earlier per-attempt loop, with a threshold that rejects."""
  task, state = tiny_comp
  m = task.m
  T, P, N, n = m.unit_length, m.pose_size, 2, 200
  feats, beats, rng = _feats(n), np.arange(4, n, 11), jax.random.PRNGKey(5)
  # a threshold between two of triplet 0's candidate motions (it starts from the mean pose)
  style = inf.song_styles(task, state, feats["d2m28"], n, 25.0)[0][0]
  trip = jax.jit(inf._triplet_body(task))
  mins = np.sort(np.concatenate([np.asarray(inf.triplet_motion(trip(
      state.params, state.frozen, jnp.broadcast_to(jnp.asarray(style), (N, style.shape[-1])),
      jnp.zeros((N, P)), jax.random.fold_in(jax.random.fold_in(rng, 0), a)))).min(-1)
      for a in range(m.gen_max_tries)]))
  k = len(mins) // 2
  # "first": between two of them (some triplets pass, some not); "least_static": above them
  # all, so triplet 0 has no moving candidate and the fallback decides
  thr = (mins[k - 1] + mins[k]) / 2 if fallback == "first" else mins[-1] * 1.01
  old_thr = m.gen_static_thr
  with m.unlocked():
    m.gen_static_thr = float(thr) / ((T - 1) * P)
    m.gen_tries_per_call = per_call
    m.gen_static_fallback = fallback
  try:
    ref, picks = _sequential_reference(task, state, feats, beats, n, rng, N, fallback)
    out = task.generate(state, feats, beats, n, rng, N)
    report = dict(task.last_generation_report)
  finally:
    with m.unlocked():
      m.gen_static_thr, m.gen_tries_per_call = old_thr, 0
      m.gen_static_fallback = "first"
  assert report["static_fallback"] == fallback
  if fallback == "first":
    assert (picks > 0).any() and (picks == 0).any()   # the choice really mattered
  else:
    assert report["static_triplets"] >= N and (picks[0] > 0).any()   # the fallback chose
  assert per_call == 0 or (picks >= per_call).any()  # the while loop drew a 2nd chunk
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_no_silent_give_up_the_report_counts_static_triplets(tiny_comp):
  """With a threshold no candidate can meet, every triplet is reported static (and kept)."""
  task, state = tiny_comp
  m = task.m
  n, beats = 120, np.arange(4, 120, 12)
  old = m.gen_static_thr
  try:
    with m.unlocked():
      m.gen_static_thr = 1e9
    task.generate(state, _feats(n), beats, n, jax.random.PRNGKey(0), 2)
    rep = task.last_generation_report
    assert rep["triplets"] > 0 and rep["static_triplets"] == rep["triplets"]
    with m.unlocked():
      m.gen_static_thr = 0.0
    task.generate(state, _feats(n), beats, n, jax.random.PRNGKey(0), 2)
    assert task.last_generation_report["static_triplets"] == 0
  finally:
    with m.unlocked():
      m.gen_static_thr = old
