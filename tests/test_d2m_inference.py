"""Dancing2Music inference: exact output length, beats on music beats, determinism."""
import jax
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
    ramp = np.arange(T, dtype=np.float32)[None, None, :, None]
    return np.broadcast_to(ramp, (style.shape[0], 3, T, P)).copy()
  monkeypatch.setitem(task.__dict__, "_d2m_triplet_fn", fake_triplet)
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
