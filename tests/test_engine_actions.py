"""The loop's periodic actions: wall-clock budget with final evaluation, target stop with
time_to_target.json, evaluators (registry, motion ratio against numpy), exact resume with
evaluations on, SIGTERM before the first step, one way to build state.

Tiny style classifier fed by the deterministic in-memory iterator of tests/test_engine_loop.py.
"""
from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from d2m_jax.train import actions
from d2m_jax.train import evaluators
from d2m_jax.train import state as state_lib
from test_engine_loop import BATCH, batch_at, data_from, leaves, tiny_config, train


def eval_data(split):
  """Two fixed eval batches (16 examples) whatever the split."""
  del split
  return [batch_at(10_000 + i) for i in range(2)]


def with_evals(c, every=2):
  c.evals = ml_collections.ConfigDict({
      "val": dict(kind="task_eval", every_steps=every, split="validation", final=True)})
  return c


def metrics_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_wall_clock_budget_stops_checkpoints_and_runs_final_eval(tmp_path):
  """max_train_seconds spent before the first step's actions: the run stops at step 1, saves
  checkpoint 1, and still writes its final evaluation (eval.json 'final')."""
  c = with_evals(tiny_config(50), every=0)
  c.max_train_seconds = 1e-6
  state = train(c, str(tmp_path), train_iter=data_from, eval_iter_fn=eval_data)
  assert int(state.step) == 1
  ev = json.loads((tmp_path / "eval.json").read_text())
  assert ev["final"]["val"]["step"] == 1 and ev["final"]["val"]["num_examples"] == 16
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == [1]


def test_target_stops_run_and_records_time_to_target(tmp_path):
  """A train/loss target any finite loss meets: stop at the first log step (2), with the
  examples, the clock and compile time apart in time_to_target.json; an unreachable one runs to
  the end and says reached=false."""
  c = tiny_config(10)
  c.target = ml_collections.ConfigDict(dict(metric="train/loss", threshold=1e9, mode="min"))
  state = train(c, str(tmp_path / "hit"), train_iter=data_from)
  assert int(state.step) == 2
  rec = json.loads((tmp_path / "hit" / "time_to_target.json").read_text())
  assert rec["reached"] and rec["step"] == 2 and rec["examples"] == 2 * BATCH
  assert rec["compile_s"] > 0 and rec["train_wall_s"] >= 0 and rec["eval_s"] == 0

  c = with_evals(tiny_config(4))
  c.target = ml_collections.ConfigDict(dict(metric="eval_val/accuracy", threshold=2.0,
                                            mode="max"))
  train(c, str(tmp_path / "miss"), train_iter=data_from, eval_iter_fn=eval_data)
  rec = json.loads((tmp_path / "miss" / "time_to_target.json").read_text())
  assert not rec["reached"] and rec["step"] == 4 and rec["eval_s"] > 0
  rows = metrics_rows(tmp_path / "miss")
  evals = [r for r in rows if "eval_val/accuracy" in r]
  assert [r["step"] for r in evals] == [2, 4]          # periodic at 2, final at 4
  assert all(r["examples_seen"] == r["step"] * BATCH and "cpu_s" in r and "wall_s" in r
             for r in evals)
  assert all(r["eval_val/seconds"] > 0 for r in evals)

  # A target met at a periodic evaluation: that evaluation is also the final one (not rerun).
  c = with_evals(tiny_config(10))
  c.target = ml_collections.ConfigDict(dict(metric="eval_val/accuracy", threshold=-1.0))
  train(c, str(tmp_path / "at_eval"), train_iter=data_from, eval_iter_fn=eval_data)
  rows = metrics_rows(tmp_path / "at_eval")
  assert [r["step"] for r in rows if "eval_val/accuracy" in r] == [2]
  ev = json.loads((tmp_path / "at_eval" / "eval.json").read_text())
  assert ev["final"]["val"]["step"] == 2


def test_exact_resume_with_evaluations_on(tmp_path):
  """Evaluations every 2 steps do not change training: a run stopped at 4 and resumed to 6
  equals an uninterrupted 6-step run bit for bit, and equals a run without evaluations."""
  plain = train(tiny_config(6), str(tmp_path / "plain"), train_iter=data_from)
  full = train(with_evals(tiny_config(6)), str(tmp_path / "full"), train_iter=data_from,
               eval_iter_fn=eval_data)
  part = tmp_path / "part"
  train(with_evals(tiny_config(4)), str(part), train_iter=data_from, eval_iter_fn=eval_data)
  resumed = train(with_evals(tiny_config(6)), str(part), train_iter=data_from,
                  eval_iter_fn=eval_data)
  for a, b, p in zip(leaves(full), leaves(resumed), leaves(plain)):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, p)


def test_sigterm_before_first_step_is_honoured(tmp_path):
  """A SIGTERM that arrives before the loop (e.g. while a task restores other workdirs) is
  caught by the handler the launcher installs at process start: step 1 is checkpointed."""
  handler = actions.PreemptionHandler().install()
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    state = train(tiny_config(10), str(tmp_path), train_iter=data_from, preemption=handler)
  finally:
    handler.uninstall()
  assert int(state.step) == 1
  assert (tmp_path / "checkpoints" / "1").is_dir()


class _MotionTask:
  """Stand-in with the motion_rows contract: 'real' units and a damped copy."""

  def motion_rows(self, state, batch, rng):
    del rng
    x = batch["units"]
    return {"real": x, "half": state["scale"] * x}


def test_motion_ratio_evaluator_against_numpy():
  rng = np.random.default_rng(0)
  batches = [{"units": rng.standard_normal((4, 12, 5)).astype(np.float32)} for _ in range(3)]
  ctx = evaluators.EvalContext(ml_collections.ConfigDict(), _MotionTask(), dp=None,
                               batches=lambda split: batches)
  spec = ml_collections.ConfigDict(dict(kind="motion_ratio", split="test", num_batches=2))
  out = evaluators.run("m", spec, ctx, {"scale": jnp.float32(0.5)})
  real = np.mean([np.abs(np.diff(b["units"].astype(np.float64), axis=1)).mean()
                  for b in batches[:2]])
  np.testing.assert_allclose(out["real_motion"], real, rtol=1e-6)
  np.testing.assert_allclose(out["half_ratio"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(out["half_log_ratio"], np.log(2.0), rtol=1e-6)
  assert out["num_batches"] == 2 and out["seconds"] > 0


def test_evaluator_specs_default_and_unknown_kind():
  c = tiny_config(2)
  c.eval_every_steps = 7
  c.final_eval_splits = ("validation", "test")
  specs = evaluators.specs(c)
  assert {n: (s.kind, s.every_steps, s.final) for n, s in specs.items()} == {
      "validation": ("task_eval", 7, True), "test": ("task_eval", 0, True)}
  c.evals = ml_collections.ConfigDict({"x": dict(kind="nope")})
  with pytest.raises(ValueError, match="config.evals.x.kind='nope'"):
    evaluators.specs(c)


class _EagerOnlyTask:
  """An init that reads concrete batch values: a bug the state builder names."""

  def prepare_host(self, batch, stats):
    pass

  def init_state(self, rng, batch, stats):
    return {"w": jnp.asarray(np.asarray(batch["x"]).mean())}


def test_state_builder_refuses_untraceable_init_and_matches_abstract():
  batch = {"x": np.ones((2, 3), np.float32)}
  with pytest.raises(state_lib.StateBuildError,
                     match="_EagerOnlyTask.init_state.*prepare_host"):
    state_lib.build_state(_EagerOnlyTask(), jax.random.PRNGKey(0), batch)
  from d2m_jax.tasks import get_task
  c = tiny_config(1)
  task = get_task(c)
  b = batch_at(0)
  built = state_lib.build_state(task, jax.random.PRNGKey(0), b)
  shapes = state_lib.abstract_state(task, jax.random.PRNGKey(0), b)
  assert jax.tree.structure(built) == jax.tree.structure(shapes)
  assert all(x.shape == s.shape and x.dtype == s.dtype
             for x, s in zip(jax.tree.leaves(built), jax.tree.leaves(shapes)))


def test_evaluate_state_reproduces_the_loops_final_evaluation(tiny_data_cfg, tmp_path):
  """launch/evaluate.py --evals_of runs evaluators.evaluate_state on the restored checkpoint:
  the same numbers as the loop's final evaluation (one code path), on the real pipeline."""
  from d2m_jax.tasks import restore_workdir
  c = tiny_config(2)
  data = tiny_data_cfg.copy_and_resolve_references()
  data.kind, data.waveform = "windows", False
  data.batch_size = data.eval_batch_size = BATCH
  c.data = data
  c.final_eval_splits = ("test",)
  train(c, str(tmp_path))
  final = json.loads((tmp_path / "eval.json").read_text())["final"]["test"]
  state, cfg, task = restore_workdir(str(tmp_path))
  again = evaluators.evaluate_state(cfg, task, state, ["test"])["test"]
  assert again["num_examples"] == final["num_examples"]
  np.testing.assert_allclose(again["loss"], final["loss"], rtol=1e-6)
  np.testing.assert_array_equal(again["confusion"], final["confusion"])
  # ... and through the launcher (one process, the workdir's own evaluators)
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run([sys.executable, os.path.join(repo, "launch", "evaluate.py"),
                      f"--evals_of={tmp_path}", f"--out_dir={tmp_path / 'ev'}", "--evals=test"],
                     capture_output=True, text=True, cwd=repo, timeout=600, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  cli = json.loads((tmp_path / "ev" / "eval.json").read_text())["evals"]["test"]
  np.testing.assert_allclose(cli["loss"], final["loss"], rtol=1e-6)
  # --set_gen on a model without generation settings: one error line, exit 2, nothing written
  r = subprocess.run([sys.executable, os.path.join(repo, "launch", "evaluate.py"),
                      f"--evals_of={tmp_path}", f"--out_dir={tmp_path / 'ev2'}",
                      "--set_gen=model.gen_max_tries=3"],
                     capture_output=True, text=True, cwd=repo, timeout=600, check=False)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1].startswith("error: --set_gen='model.gen_max_tries=3'")
  assert not (tmp_path / "ev2" / "eval.json").exists()


def test_time_to_target_counts_accumulated_updates(tmp_path):
  """With optim.accumulate_steps=k a target met at train step s is s // k optimiser updates of
  k x the step's batch (the record says both)."""
  clock = type("Clock", (), {"train_wall_s": lambda self: 1.0, "train_cpu_s": lambda self: 1.0,
                             "compile_s": 0.5, "eval_s": 0.1})()
  run = type("Run", (), {"global_batch": 16, "clock": clock, "is_main": True,
                         "workdir": str(tmp_path), "examples": lambda self, s: s * 16})()
  check = actions.TargetCheck("eval_validation/accuracy", 0.9, "max", accumulate_steps=2)
  check._write(run, 68, 0.95, reached=True)   # pylint: disable=protected-access
  rec = json.loads((tmp_path / "time_to_target.json").read_text())
  assert (rec["step"], rec["optimizer_updates"], rec["global_batch"], rec["step_batch"],
          rec["examples"]) == (68, 34, 32, 16, 68 * 16)
