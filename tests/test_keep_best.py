"""config.keep_best: the best evaluation's checkpoint is kept past pruning, named in best.json,
survives a resume, and is what ``step="best"`` restores.

A scripted evaluator returns a quality ``q`` and a constraint value ``c`` fixed per step, so the
expected best step is known by hand.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from d2m_jax.train import best
from d2m_jax.train import checkpoint
from d2m_jax.train import evaluators
from test_engine_loop import tiny_config, train, data_from

# step -> (q, c): ranked by (c <= 1 met, q): step 4 is the best (step 8 has the highest q but
# breaks the constraint).
SCRIPT = {2: (0.5, 0.0), 4: (0.9, 0.0), 6: (0.7, 0.0), 8: (0.95, 2.0), 10: (0.3, 0.0)}


@evaluators.register("_test_scripted")
def _scripted(ctx, state, spec):
  del ctx, spec
  q, c = SCRIPT[int(np.asarray(state.step))]
  return {"q": q, "c": c}


def scripted_config(steps):
  c = tiny_config(steps)
  c.checkpoint_every_steps = 4
  c.keep_checkpoints = 1
  c.evals = ml_collections.ConfigDict({
      "s": dict(kind="_test_scripted", every_steps=2, split="validation", final=True)})
  c.keep_best = ml_collections.ConfigDict(dict(metric="eval_s/q", mode="max",
                                               constraints="eval_s/c<=1"))
  return c


def step_folders(workdir):
  return sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())


def test_parse_constraints_and_rank_by_hand():
  cons = best.parse_constraints(" a/x<=25.2, b>=0.5 ,")
  assert cons == [("a/x", "<=", 25.2), ("b", ">=", 0.5)]
  for bad in ("a<25", "a=>1", "<=3", "a<=x"):
    with pytest.raises(ValueError, match="keep_best.constraints"):
      best.parse_constraints(bad)
  # constraints met first, then the metric: (2 met, 0.1) beats (1 met, 9.0)
  assert best.rank({"m": 0.1, "a/x": 1.0, "b": 0.6}, "m", "max", cons) == (2, 0.1)
  assert best.rank({"m": 9.0, "a/x": 30.0, "b": 0.6}, "m", "max", cons) == (1, 9.0)
  assert best.rank({"m": 3.0}, "m", "min", []) == (0, -3.0)           # min: smaller is better
  assert best.rank({"m": float("nan")}, "m", "max", [])[1] == -np.inf
  assert not best.meets(float("nan"), "<=", 1.0)


def test_best_checkpoint_survives_pruning_and_restores(tmp_path):
  wd = str(tmp_path / "run")
  train(scripted_config(10), wd, train_iter=data_from)
  rec = json.loads(open(os.path.join(wd, "best.json")).read())
  assert rec["step"] == 4 and rec["met"] == 1 and rec["of"] == 1
  assert rec["values"] == {"eval_s/q": 0.9, "eval_s/c": 0.0}
  assert rec["constraints"] == ["eval_s/c<=1"] and rec["examples"] == 4 * 8
  assert [h["step"] for h in rec["history"]] == [2, 4, 6, 8, 10]
  # keep_checkpoints=1 leaves the newest (10) and the protected best (4); step 2, saved when it
  # was the best so far, went back to pruning once 4 beat it.
  assert step_folders(wd) == [4, 10]
  assert checkpoint.resolve_step(wd, "best") == 4
  assert checkpoint.resolve_step(wd, "7") == 7 and checkpoint.resolve_step(wd, None) is None
  from d2m_jax.tasks import restore_workdir
  state, _, _ = restore_workdir(wd, step="best")
  assert int(np.asarray(state.step)) == 4
  from d2m_jax import generator_export   # launch/generate.py --step=best goes through here
  state, _, _, _ = generator_export.restore_for_generation(wd, step="best")
  assert int(np.asarray(state.step)) == 4


def test_keep_best_is_unchanged_by_a_resume(tmp_path):
  """Stopped at 6 and resumed to 10: same best.json ranking and the same folders as one run."""
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  train(scripted_config(10), one, train_iter=data_from)
  train(scripted_config(6), two, train_iter=data_from)
  assert json.loads(open(os.path.join(two, "best.json")).read())["step"] == 4
  train(scripted_config(10), two, train_iter=data_from)
  a, b = (json.loads(open(os.path.join(w, "best.json")).read()) for w in (one, two))
  assert (a["step"], a["history"]) == (b["step"], b["history"])
  assert step_folders(one) == step_folders(two) == [4, 10]


def test_step_best_errors_name_the_file(tmp_path, capsys):
  wd = str(tmp_path / "plain")
  c = tiny_config(2)
  c.keep_best.metric = "eval_nope/q"     # never logged: said at the end, no best.json
  train(c, wd, train_iter=data_from)
  assert "keep_best: eval_nope/q was never logged" in capsys.readouterr().out
  with pytest.raises(ValueError, match="best.json: no such file.*keep_best"):
    checkpoint.resolve_step(wd, "best")
  with pytest.raises(ValueError, match="expected a checkpoint step"):
    checkpoint.resolve_step(wd, "latest")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, os.path.join(repo, "launch", "d2m_motion.py"),
                        f"--workdir={wd}", "--step=best"], capture_output=True, text=True,
                       cwd=repo, timeout=300)
  assert out.returncode == 2
  assert "best.json: no such file" in out.stderr and "Traceback" not in out.stderr
