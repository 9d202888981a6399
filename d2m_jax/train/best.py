"""Keep the best checkpoint by an evaluation metric: ``config.keep_best``.

A run's last checkpoint is not its best one when quality moves between evaluations (the
Dancing2Music composition's validation FID_k moves by +-10 from one evaluation to the next), and
the loop keeps only the newest ``keep_checkpoints``. With ::

    c.keep_best.metric = "eval_paper_val/Div_k"     # a logged scalar (empty: off)
    c.keep_best.mode = "max"                        # or "min"
    c.keep_best.constraints = "eval_paper_val/FID_k<=25.2,eval_paper_val/BAS>=0.245"

every evaluation that logs ``metric`` ranks the state it evaluated: first by how many of the
``constraints`` (``KEY<=VALUE`` / ``KEY>=VALUE``, comma-separated; the latest logged value of each
key) it meets, then by ``metric`` in ``mode``'s direction (a tie keeps the earlier step). A new
best is checkpointed at that step (if the cadence did not save it already), protected from
pruning (the previous best goes back to the usual pruning), and written to ``WORKDIR/best.json``
(atomic): its step, examples, train wall and CPU seconds, the values it was ranked on, and the
history of every ranked evaluation. The rule is fixed in the config before the run starts, so
choosing a checkpoint on a validation split stays a choice made on validation only.

The read-only tools take ``--step=best`` (``d2m_jax.train.checkpoint.resolve_step``). Keeping
the best never touches the train state (only which checkpoints stay on disk), so exact resume
is unchanged; a resumed run reads ``best.json`` back and protects its step again.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from d2m_jax.train import logs
from d2m_jax.train.checkpoint import BEST_FILE

_CONSTRAINT = re.compile(r"^\s*([^<>=\s]+)\s*(<=|>=)\s*([-+0-9.eE]+|[-+]?inf)\s*$")


def parse_constraints(text: str) -> List[Tuple[str, str, float]]:
  """``"a<=1,b>=2"`` -> ``[("a", "<=", 1.0), ("b", ">=", 2.0)]``; ValueError naming the field."""
  out = []
  for part in [p for p in str(text or "").split(",") if p.strip()]:
    m = _CONSTRAINT.match(part)
    try:
      if m is None:
        raise ValueError(part)
      out.append((m.group(1), m.group(2), float(m.group(3))))
    except ValueError:
      raise ValueError(f"config.keep_best.constraints: {part.strip()!r} is not KEY<=VALUE or "
                       "KEY>=VALUE") from None
  return out


def meets(value: float, op: str, bound: float) -> bool:
  return bool(np.isfinite(value)) and (value <= bound if op == "<=" else value >= bound)


def rank(values: Dict[str, float], metric: str, mode: str,
         constraints: List[Tuple[str, str, float]]) -> Tuple[int, float]:
  """(constraints met, metric signed so that larger is better); a missing or non-finite metric
  ranks below every finite one."""
  met = sum(meets(float(values.get(k, float("nan"))), op, b) for k, op, b in constraints)
  v = float(values.get(metric, float("nan")))
  score = (v if mode == "max" else -v) if np.isfinite(v) else -np.inf
  return met, score


class KeepBest:
  """The loop action (an ``Action`` of ``d2m_jax.train.actions``, which builds it after
  ``Evaluate`` and ``TargetCheck``, before ``Checkpoint``); see the module doc. ``checkpoint`` is
  the loop's Checkpoint action (its ``save`` checks the state first)."""

  def __init__(self, metric: str, mode: str, constraints: str, checkpoint):
    if mode not in ("max", "min"):
      raise ValueError(f"config.keep_best.mode={mode!r}: expected 'max' or 'min'")
    self.metric, self.mode = str(metric), mode
    self.constraints = parse_constraints(constraints)
    self.checkpoint = checkpoint
    self.best: Optional[Dict[str, Any]] = None
    self.history: List[Dict[str, Any]] = []
    self._loaded = False

  def rule(self) -> List[str]:
    return [f"{k}{op}{b:g}" for k, op, b in self.constraints]

  def _load(self, run):
    """On the first call: a resumed run's ``best.json`` (a best newer than the resume point,
    e.g. after ``config.restore_step``, is dropped: that future was undone)."""
    self._loaded = True
    path = os.path.join(run.workdir, BEST_FILE)
    if not os.path.exists(path):
      return
    with open(path) as f:
      saved = json.load(f)
    if (saved.get("metric"), saved.get("mode"), saved.get("constraints")) != (
        self.metric, self.mode, self.rule()):
      run.log(f"keep_best: {path} ranked by another rule; starting the ranking afresh")
      return
    if int(saved.get("step", -1)) > run.start_step:
      run.log(f"keep_best: {path} names step {saved.get('step')}, after the resume point "
              f"{run.start_step}; starting the ranking afresh")
      return
    self.best = saved
    self.history = [h for h in saved.get("history", []) if h.get("step", 0) <= run.start_step]
    run.ckpt.protect(int(saved["step"]))

  def __call__(self, run, step, state):
    if not self._loaded:
      self._load(run)
    if run.scalar_steps.get(self.metric) == step and not (
        self.history and self.history[-1]["step"] == step):
      self._consider(run, step, state)

  def end(self, run, step, state):
    self(run, step, state)   # the final evaluations log after the loop's last call
    if self.best is None:
      evals = sorted(k for k in run.scalars if k.startswith("eval_"))
      run.log(f"keep_best: {self.metric} was never logged, no best.json written (the "
              f"evaluations logged: {evals or 'none'})")

  def _consider(self, run, step: int, state):
    keys = [self.metric] + [k for k, _, _ in self.constraints]
    values = {k: float(run.scalars[k]) for k in keys if k in run.scalars}
    met, score = rank(values, self.metric, self.mode, self.constraints)
    entry = {"step": int(step), "examples": run.examples(step), "met": met,
             "values": values}
    self.history.append(entry)
    better = self.best is None or (met, score) > (int(self.best["met"]), float(
        rank(self.best["values"], self.metric, self.mode, self.constraints)[1]))
    if better:
      if run.last_saved != step:
        self.checkpoint.save(run, step, state)
      previous = None if self.best is None else int(self.best["step"])
      run.ckpt.protect(step, previous=previous)
      self.best = dict(entry, metric=self.metric, mode=self.mode, constraints=self.rule(),
                       of=len(self.constraints), train_wall_s=run.clock.train_wall_s(),
                       train_cpu_s=run.clock.train_cpu_s())
      run.log(f"keep_best: step {step} is the best so far ({self.metric}="
              f"{values.get(self.metric, float('nan')):.4g}, {met}/{len(self.constraints)} "
              "constraints met)")
    if run.is_main and self.best is not None:
      logs.atomic_write_json(os.path.join(run.workdir, BEST_FILE),
                             dict(self.best, history=self.history))
