"""Outputs of the classifier and learn2dance GAN tasks unchanged by the issue-23 refactor.

For each task: a tiny config, a fixed synthetic batch (numpy seed 0), ``init_state(key(0))``,
two jitted train steps and one evaluation; the step and evaluation metrics, ``finalize_eval``'s
numbers and a checksum (float64 sum and sum of squares) of every state leaf are compared with
``tests/data/refactor_golden.npz``. That file was recorded from the code BEFORE the refactor
(commit 2374f6d: style/dance_style/music_style each with its own masked cross-entropy eval and
report, the learn2dance GANs with their own gradient penalty) by::

  D2M_REGEN_GOLDEN=1 PYTHONPATH=$PWD python -m pytest -q tests/test_refactor_golden.py

The shared classifier report may add keys under ``final/`` (checked against numpy); recorded
keys may not change. (Under the suite's conftest: 4 fake CPU devices, XLA -O0, float32). Regenerate only when a
change is MEANT to change these outputs, and say so in the commit.
"""
import json
import os
import pathlib

import jax
import numpy as np
import pytest

GOLDEN = pathlib.Path(__file__).parent / "data" / "refactor_golden.npz"
REGEN = bool(os.environ.get("D2M_REGEN_GOLDEN"))


def _config(name):
  import importlib  # pylint: disable=import-outside-toplevel
  c = importlib.import_module(f"configs.{name}").get_config()
  c.dtype = "float32"
  m = c.model
  if name == "style_paper":
    m.hidden, m.num_frames, m.rnn_impl = 8, 10, "scan"
  elif name == "dance_style":
    m.channels, m.num_blocks, m.seqlen = 8, 1, 30
  elif name == "music_style":
    m.clip_frames, m.clip_stride, m.segment_extra, m.clips_per_sequence = 50, 25, 20, 2
    m.num_lags, m.max_lag = 16, 40.0
    c.data.max_frames = 120
  elif name == "l2d_pose_gan":
    m.hidden = 16
  elif name == "l2d_seq_gan":
    m.hidden, m.critic_hidden, m.seq_len, m.rnn_impl = 16, 8, 10, "scan"
  return c


TASKS = {"style_paper": 4, "dance_style": 4, "music_style": 3, "l2d_pose_gan": 2,
         "l2d_seq_gan": 4}


def _flat_numbers(d, prefix=""):
  """Numeric leaves of a (nested) dict/list as {dotted key: float64 array}."""
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      out.update(_flat_numbers(v, f"{prefix}{k}."))
  elif isinstance(d, (list, tuple)) and d and isinstance(d[0], str):
    pass
  else:
    a = np.asarray([np.nan if x is None else x for x in d] if isinstance(d, list) else d)
    if a.dtype.kind in "fiub" or a.dtype == object:
      out[prefix[:-1]] = np.asarray(a, np.float64)
  return out


def _run(name):
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  config = _config(name)
  task = get_task(config)
  batch = task.synthetic_batch(TASKS[name], np.random.default_rng(0))
  state = task.init_state(jax.random.key(0), batch, None)
  step = jax.jit(task.train_step)
  out = {}
  for i in range(2):
    state, metrics = step(state, batch)
    for k, v in metrics.items():
      out[f"step{i}/{k}"] = np.asarray(v, np.float64)
  ev = jax.jit(task.eval_step)(state, batch)
  for k, v in ev.items():
    out[f"eval/{k}"] = np.asarray(v, np.float64)
  if task.supports("finalize_eval"):
    fin = task.finalize_eval({k: np.asarray(v) for k, v in ev.items()})
    for k, v in _flat_numbers(fin).items():
      out[f"final/{k}"] = v
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      continue
    a = np.asarray(leaf, np.float64)
    out[f"state{jax.tree_util.keystr(path)}"] = np.array([a.sum(), np.square(a).sum()])
  return out


@pytest.fixture(scope="module")
def golden():
  if REGEN:
    return None
  with np.load(GOLDEN) as z:
    return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", list(TASKS))
def test_outputs_unchanged(name, golden):
  got = _run(name)
  if REGEN:
    old = dict(np.load(GOLDEN)) if GOLDEN.exists() else {}
    old = {k: v for k, v in old.items() if not k.startswith(name + "|")}
    old.update({f"{name}|{k}": v for k, v in got.items()})
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez(GOLDEN, **old)
    pytest.skip(f"recorded {len(got)} numbers for {name}")
  want = {k.split("|", 1)[1]: v for k, v in golden.items() if k.startswith(name + "|")}
  assert want, f"no golden numbers for {name}"
  # The shared report may ADD keys (balanced accuracy, per-class recall for every classifier);
  # nothing recorded may go missing or change, and nothing else may appear.
  extra = sorted(k for k in set(got) - set(want) if not k.startswith("final/"))
  assert set(want) <= set(got) and not extra, json.dumps(
      {"missing": sorted(set(want) - set(got)), "extra": extra})
  if "final/confusion" in got:  # an added balanced accuracy is the mean recall (numpy)
    conf = got["final/confusion"]
    support = conf.sum(1)
    recall = np.diag(conf)[support > 0] / support[support > 0]
    np.testing.assert_allclose(got["final/balanced_accuracy"], recall.mean(), rtol=1e-12)
  for k in sorted(want):
    np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=f"{name}: {k}")
