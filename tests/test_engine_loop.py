"""The training loop: training moves the loss, exact resume, SIGTERM checkpoint, NaN stop, files.

Tiny style classifier (GRU-8 over 10 frames, global batch 8) fed by an injected, deterministic
in-memory iterator (``start_step -> iterator``, the same contract as ``pipeline.make_iterator``).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import style_paper  # noqa: E402
from d2m_jax.tasks import get_task, restore_workdir  # noqa: E402
from d2m_jax.train import checkpoint as ckpt_lib  # noqa: E402
from d2m_jax.train import loop  # noqa: E402

BATCH = 8


def tiny_config(steps, **kw):
  c = style_paper.get_config()
  c.model.hidden = 8
  c.model.num_frames = 10
  c.optim.lr = 1e-2
  c.data.batch_size = BATCH
  c.data.eval_batch_size = BATCH
  c.num_train_steps = steps
  c.log_every_steps = 2
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 2
  c.keep_checkpoints = 5
  c.final_eval_splits = ()
  c.parallel = "jit"
  for k, v in kw.items():
    c[k] = v
  return c


def train(config, workdir, **kw):
  """The engine, handed the task the way launch/train.py builds it."""
  return loop.train_and_evaluate(config, workdir, task=get_task(config), **kw)


def batch_at(step, size=BATCH):
  """The global batch of step ``step``: class-dependent features, so the loss can fall."""
  rng = np.random.default_rng(1000 + step)
  style = rng.integers(0, 4, (size,)).astype(np.int32)
  d2m28 = (rng.standard_normal((size, 120, 28)) + style[:, None, None]).astype(np.float32)
  return {"d2m28": d2m28, "style": style}


def data_from(start_step):
  step = start_step
  while True:
    yield batch_at(step)
    step += 1


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


def test_sigterm_checkpoint_then_exact_resume(tmp_path):
  """SIGTERM arrives while step 3's input is read: the loop finishes that step, checkpoints
  step 4 and returns; resuming to step 6 gives bit-identical parameters to an uninterrupted
  6-step run (data position restored through ``start_step``). Also checks the output files."""
  full = train(tiny_config(6), str(tmp_path / "full"), train_iter=data_from)

  def data_with_sigterm(start_step):
    step = start_step
    while True:
      if step == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch_at(step)
      step += 1

  part = tmp_path / "part"
  old = signal.getsignal(signal.SIGTERM)
  mid = train(tiny_config(6, checkpoint_every_steps=0), str(part),
                                train_iter=data_with_sigterm)
  assert signal.getsignal(signal.SIGTERM) is old  # handler restored
  assert int(mid.step) == 4
  assert ckpt_lib.Checkpointer(str(part), read_only=True).latest_step() == 4
  resumed = train(tiny_config(6), str(part), train_iter=data_from)
  assert int(resumed.step) == 6 and int(full.step) == 6
  for a, b in zip(leaves(full), leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(mid), leaves(full)))
  # Outputs: config.json round-trips, metrics.jsonl has the log steps, periodic checkpoints.
  cfg = ckpt_lib.load_config(str(part))
  assert cfg.model.hidden == 8 and cfg.num_train_steps == 6
  lines = [json.loads(l) for l in (part / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "train/loss" in l] == [2, 4, 6]  # 4: the SIGTERM flush
  assert any("perf/examples_per_sec_per_device" in l for l in lines)
  assert any("perf/compile_seconds" in l for l in lines)
  assert sorted(int(p.name) for p in (part / "checkpoints").iterdir() if p.name.isdigit()) \
      == [4, 6]
  # restore_workdir (the generation entry point) gives the final parameters.
  state, _, _ = restore_workdir(str(part))
  for a, b in zip(leaves(full), leaves(state)):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  """NaN inputs at step 2 (0-based) -> NonFiniteLossError at the step-4 check; checkpoint 2 is
  the last one and holds finite parameters equal to a clean 2-step run."""
  with pytest.raises(loop.NonFiniteLossError, match="step 3"):
    train(tiny_config(8, debug_nan_step=2), str(tmp_path / "nan"),
                            train_iter=data_from)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "nan"), read_only=True)
  assert ckpt.latest_step() == 2
  state, _, _ = restore_workdir(str(tmp_path / "nan"))
  assert all(np.isfinite(x).all() for x in leaves(state))


def test_trains_on_embedded_default_and_evaluates_every_example(tiny_data_cfg, tmp_path):
  """One-to-few steps through the real input pipeline (tiny synthetic default): the loop trains,
  and the final evaluation covers each test example exactly once (confusion rows = class counts)."""
  from d2m_jax.data import pipeline
  c = tiny_config(3, log_every_steps=1)
  data = tiny_data_cfg.copy_and_resolve_references()
  data.kind = "windows"
  data.waveform = False
  data.batch_size = BATCH
  data.eval_batch_size = BATCH
  c.data = data
  c.final_eval_splits = ("test",)
  state = train(c, str(tmp_path))
  assert int(state.step) == 3
  ev = json.loads((tmp_path / "eval.json").read_text())
  test = ev["final"]["test"]
  labels = pipeline.load_split(data, "test")["style"]
  assert test["num_examples"] == len(labels)
  np.testing.assert_array_equal(np.asarray(test["confusion"]).sum(1),
                                np.bincount(labels, minlength=4))
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [l["train/loss"] for l in lines if "train/loss" in l]
  assert len(losses) == 3 and all(np.isfinite(losses))
