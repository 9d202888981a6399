"""Music style classifiers: parameter counts (spec), numerics against a float64 numpy reference,
``get_style``, eval metrics (confusion / per-class accuracy) and overfitting a tiny batch."""
from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import style_improved, style_paper  # noqa: E402
from d2m_jax.models import style as style_model  # noqa: E402
from d2m_jax.nn import gru_reference_numpy  # noqa: E402
from d2m_jax.tasks import get_task  # noqa: E402


def _count(config):
  task = get_task(config)
  shapes = jax.eval_shape(lambda r: task.init_state(r, None, None), jax.random.PRNGKey(0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params))


@pytest.mark.parametrize("module,classes,expected", [
    (style_paper, 3, 6453), (style_improved, 3, 2425373),  # published (spec section 2.2)
    (style_paper, 4, 6484), (style_improved, 4, 2425404),  # our 4 styles: + one output row
])
def test_parameter_counts(module, classes, expected):
  c = module.get_config()
  c.model.num_classes = classes
  assert _count(c) == expected


def _relu(x):
  return np.maximum(x, 0)


def test_paper_model_matches_numpy_reference():
  """Learned h0 -> GRU -> last output -> Linear/ReLU/Linear, in float64 numpy."""
  m = style_model.MusicStyleClassifier(hidden=30, num_layers=1, num_classes=3)
  x = np.random.default_rng(0).standard_normal((3, 17, 28)).astype(np.float32)
  params = jax.jit(m.init)(jax.random.PRNGKey(1), x)["params"]
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(params))
  h0 = np.broadcast_to(p["h0"], (1, 3, 30))
  out, _ = gru_reference_numpy(p["gru"], x, h0)
  style = out[:, -1]
  hid = _relu(style @ p["fc1"]["dense"]["kernel"] + p["fc1"]["dense"]["bias"])
  logits = hid @ p["fc2"]["dense"]["kernel"] + p["fc2"]["dense"]["bias"]
  np.testing.assert_allclose(np.asarray(m.apply({"params": params}, x)), logits, atol=1e-5)
  # get_style on the raw parameter tree: same vector; z-scoring through ``norm``.
  np.testing.assert_allclose(np.asarray(style_model.get_style(params, x)), style, atol=1e-5)
  mean, std = np.full(28, 0.5, np.float32), np.full(28, 2.0, np.float32)
  np.testing.assert_allclose(
      np.asarray(style_model.get_style(params, x * 2.0 + 0.5, norm=(mean, std))), style,
      atol=1e-5)


def test_improved_head_and_get_style_architecture_from_params():
  """Improved variant (small): 2-layer GRU, projection to 30; get_style rebuilds it from shapes."""
  m = style_model.MusicStyleClassifier(hidden=16, num_layers=2, num_classes=4, project=True,
                                       head_relu_first=True, dropout_rate=0.1)
  x = np.random.default_rng(2).standard_normal((2, 9, 28)).astype(np.float32)
  params = jax.jit(m.init)(jax.random.PRNGKey(3), x)["params"]
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(params))
  h0 = np.broadcast_to(p["h0"], (2, 2, 16))
  out, _ = gru_reference_numpy(p["gru"], x, h0, num_layers=2)
  style = out[:, -1] @ p["style_proj"]["dense"]["kernel"] + p["style_proj"]["dense"]["bias"]
  hid = _relu(_relu(style) @ p["fc1"]["dense"]["kernel"] + p["fc1"]["dense"]["bias"])
  logits = hid @ p["fc2"]["dense"]["kernel"] + p["fc2"]["dense"]["bias"]
  np.testing.assert_allclose(np.asarray(m.apply({"params": params}, x)), logits, atol=1e-5)
  got = style_model.get_style(params, x)
  assert got.shape == (2, 30)
  np.testing.assert_allclose(np.asarray(got), style, atol=1e-5)


def _tiny_task(num_frames=120, hidden=16):
  c = style_paper.get_config()
  c.model.hidden = hidden
  c.model.num_frames = num_frames
  c.optim.lr = 2e-2
  return get_task(c)


def test_eval_confusion_and_per_class_accuracy():
  """eval_step's confusion equals numpy's on the task's own predictions; masked rows are out."""
  task = _tiny_task(num_frames=20, hidden=8)
  batch = task.synthetic_batch(12, np.random.default_rng(4))
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, None)
  mask = np.ones(12, np.float32)
  mask[-3:] = 0
  m = jax.jit(task.eval_step)(state, {**batch, "eval_mask": mask})
  pred = np.argmax(np.asarray(jax.jit(task.logits)(state, batch["d2m28"])), -1)
  want = np.zeros((4, 4))
  for t, p_ in zip(batch["style"][:9], pred[:9]):
    want[t, p_] += 1
  np.testing.assert_array_equal(np.asarray(m["confusion"]), want)
  np.testing.assert_allclose(float(m["accuracy"]), np.trace(want) / 9, rtol=1e-6)
  # finalize_eval on a hand-made confusion (rows = true class).
  conf = np.array([[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
  out = task.finalize_eval({"confusion": conf})
  assert out["per_class_accuracy"] == [0.75, 0.5, None, 0.5]
  assert out["accuracy"] == pytest.approx(6 / 10)
  assert out["class_names"] == ["C", "R", "T", "W"] and out["class_support"] == [4, 4, 0, 2]


def test_tiny_model_overfits_tiny_batch():
  """GRU-16 memorises 8 random windows (random labels) to 100% training accuracy."""
  task = _tiny_task()
  rng = np.random.default_rng(5)
  batch = {"d2m28": rng.standard_normal((8, 120, 28)).astype(np.float32),
           "style": np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)}
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, None)
  step = jax.jit(task.train_step)
  evaluate = jax.jit(task.eval_step)
  first = None
  for i in range(300):
    state, m = step(state, batch)
    if first is None:
      first = float(m["loss"])
    if i % 25 == 24 and float(evaluate(state, batch)["accuracy"]) == 1.0:
      break
  ev = evaluate(state, batch)
  assert float(ev["accuracy"]) == 1.0
  assert float(ev["loss"]) < 0.5 * first


def test_forward_is_the_training_loss():
  """``forward`` (benchmarks' fwd rows) returns the loss train_step reports for the same state."""
  task = _tiny_task(num_frames=20, hidden=8)
  batch = task.synthetic_batch(4, np.random.default_rng(6))
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, None)
  _, m = jax.jit(task.train_step)(state, batch)
  np.testing.assert_allclose(float(jax.jit(task.forward)(state, batch)), float(m["loss"]),
                             rtol=1e-6)
