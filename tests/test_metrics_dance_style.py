"""The dance-style classifier used for style consistency."""
import jax
import numpy as np

from d2m_jax.tasks import get_task
import configs.dance_style as cfg_mod  # noqa: E402  (repo root on sys.path via pytest rootdir)


def _tiny_config():
  c = cfg_mod.get_config()
  c.model.channels = 8
  c.model.seqlen = 120
  c.model.pose_dim = 6
  return c


def test_param_count_full_size_matches_layer_arithmetic():
  c = cfg_mod.get_config()
  task = get_task(c)
  shapes = jax.eval_shape(lambda r: task.init_state(r, task.synthetic_batch(2, np.random.default_rng(0))),
                          jax.random.PRNGKey(0)).params
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  C, P = 64, 69
  expected = (P * 9 * C + C) + 2 * 2 * (C * 7 * C + C) + (C * 120 * 4 + 4)
  assert n == expected


def test_learns_separable_styles_and_classifies_any_length():
  c = _tiny_config()
  c.optim.lr = 1e-2
  task = get_task(c)
  rng = np.random.default_rng(0)

  def batch(n):
    style = rng.integers(0, 4, n).astype(np.int32)
    t = np.arange(120)[None, :, None]
    freq = (style + 1)[:, None, None] * 0.05
    pose = np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (n, 1, 1))) * np.ones((1, 1, 6))
    return {"pose": pose.astype(np.float32), "style": style}

  state = task.init_state(jax.random.PRNGKey(0), batch(4), None)
  step = jax.jit(task.train_step)
  for _ in range(40):
    state, m = step(state, batch(32))
  test = batch(48)
  logits, _ = task.classify(state, test["pose"])
  assert np.mean(logits.argmax(-1) == test["style"]) > 0.8
  # classify() on dances of 50 and 300 frames: shapes and agreement with eval on 120-frame clips
  b = batch(8)
  long = np.concatenate([b["pose"]] * 3, axis=1)[:, :300]
  logits, feats = task.classify(state, long)
  assert logits.shape == (8, 4) and feats.shape == (8, 8)
  short_logits, _ = task.classify(state, b["pose"][:, :50])
  assert short_logits.shape == (8, 4)
  direct = np.asarray(task.model.apply({"params": state.params},
                                       (b["pose"] - np.asarray(state.pose_mean)) /
                                       np.asarray(state.pose_std)))
  one, _ = task.classify(state, b["pose"])
  np.testing.assert_allclose(one, direct, rtol=1e-4, atol=1e-4)
