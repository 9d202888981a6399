"""Everything periodic in the training loop, as small objects (in the spirit of
``clu.periodic_actions``).

The loop (``d2m_jax.train.loop``) is linear: after every step it calls
``action(run, step, state)`` for each action in :func:`default_actions`' order, stops when one
of them asked (``run.stop_reason``), and then calls ``action.end(run, step, state)`` on each.
``step`` is the number of steps done. The order matters and is fixed here:

===================  =========================================================================
action               does
===================  =========================================================================
Preemption           SIGTERM (the handler is installed at process start) -> stop ``sigterm``
WallClockBudget      ``config.max_train_seconds`` spent -> stop ``time_budget``
AgreeStop            multi-process: every process takes the same decision
LogMetrics           every ``log_every_steps`` and when stopping: pulls the interval's metrics
                     off the device (the loop's only sync), NaN/inf check, means, rates
Evaluate             ``config.evals`` at their cadence; at the end the ``final`` ones
TargetCheck          ``config.target`` met -> ``time_to_target.json``, stop ``target``
KeepBest             ``config.keep_best``: a new best evaluation is checkpointed, protected from
                     pruning and named in ``best.json`` (``d2m_jax/train/best.py``)
Checkpoint           every ``checkpoint_every_steps`` and when stopping (state checked finite)
Profile              ``config.profile_steps = (first, count)``: a ``jax.profiler`` trace
===================  =========================================================================

So a stop at step N (any reason) checkpoints step N before the final evaluations run: an
evaluation interrupted by a second signal loses nothing.

Time is counted as MLPerf Training counts it (:class:`RunClock`): from the first step after
compilation, with compilation and evaluation apart; every metrics row carries ``examples_seen``,
``wall_s`` and ``cpu_s`` so quality can be plotted against examples or time.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional

import jax
import numpy as np

from d2m_jax.data.errors import DataError
from d2m_jax.train import distributed
from d2m_jax.train import evaluators
from d2m_jax.train import logs
from d2m_jax.train import parallel


class NonFiniteLossError(RuntimeError):
  """Raised when the loss (or the parameters) become NaN/inf."""


# ---------------------------------------------------------------------------------- run state ---
class RunClock:
  """Wall and process-CPU seconds since the first step after compilation, evaluation apart."""

  def __init__(self):
    self.compile_s = 0.0
    self.eval_s = 0.0
    self.eval_cpu_s = 0.0
    self._t0: Optional[float] = None
    self._c0 = 0.0

  def start(self):
    self._t0, self._c0 = time.perf_counter(), time.process_time()

  def wall_s(self) -> float:
    return 0.0 if self._t0 is None else time.perf_counter() - self._t0

  def cpu_s(self) -> float:
    return 0.0 if self._t0 is None else time.process_time() - self._c0

  def train_wall_s(self) -> float:
    return self.wall_s() - self.eval_s

  def train_cpu_s(self) -> float:
    return self.cpu_s() - self.eval_cpu_s


@dataclasses.dataclass
class Run:
  """The running loop's shared state: what the actions read and the few things they set."""
  config: Any
  workdir: str
  task: Any
  dp: Any
  ckpt: Any
  writer: Any
  log: Any
  total_steps: int
  global_batch: int
  start_step: int = 0
  started: float = dataclasses.field(default_factory=time.perf_counter)
  clock: RunClock = dataclasses.field(default_factory=RunClock)
  throughput: Optional[logs.Throughput] = None
  eval_ctx: Optional[evaluators.EvalContext] = None
  stop_reason: Optional[str] = None
  pending: List[Any] = dataclasses.field(default_factory=list)  # (step, device metrics)
  scalars: Dict[str, float] = dataclasses.field(default_factory=dict)  # latest logged values
  scalar_steps: Dict[str, int] = dataclasses.field(default_factory=dict)  # key -> its last step
  last_saved: Optional[int] = None

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0

  def request_stop(self, reason: str):
    if self.stop_reason is None:
      self.stop_reason = reason

  def stopping(self, step: int) -> bool:
    """True at the run's last step: the final one, or any step after a stop was asked for."""
    return step >= self.total_steps or self.stop_reason is not None

  def examples(self, step: int) -> int:
    return int(step) * self.global_batch

  def write(self, step: int, scalars: Dict[str, float]):
    """Writes scalars with the step's examples seen and the run clock; remembers them."""
    row = dict(scalars, examples_seen=self.examples(step), wall_s=self.clock.wall_s(),
               cpu_s=self.clock.cpu_s())
    self.writer.write_scalars(step, row)
    self.scalars.update(scalars)
    self.scalar_steps.update(dict.fromkeys(scalars, step))


class Action:
  """One periodic concern of the loop. ``__call__`` after each step, ``end`` once at the end."""

  def __call__(self, run: Run, step: int, state) -> None:
    pass

  def end(self, run: Run, step: int, state) -> None:
    pass


def _due(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


# ---------------------------------------------------------------------------------- stopping ---
class PreemptionHandler:
  """SIGTERM -> a flag. Installed once, at process start (``launch/train.py`` installs it before
  the task is built, so a signal during a task's restore of other workdirs is not lost)."""

  def __init__(self):
    self.requested = False
    self._old = None

  def install(self) -> "PreemptionHandler":
    if self._old is None and threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)
    return self

  def uninstall(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True


class Preemption(Action):
  def __init__(self, handler: PreemptionHandler):
    self.handler = handler

  def __call__(self, run, step, state):
    if self.handler.requested:
      run.request_stop("sigterm")


class WallClockBudget(Action):
  """Stops when ``max_seconds`` have passed since ``train_and_evaluate`` started (compile
  included: the budget is what the run may occupy); the stop checkpoints and evaluates."""

  def __init__(self, max_seconds: float):
    self.max_seconds = float(max_seconds)

  def __call__(self, run, step, state):
    if self.max_seconds > 0 and time.perf_counter() - run.started >= self.max_seconds:
      run.request_stop("time_budget")


class AgreeStop(Action):
  """With several processes, every one must take the same branch (collectives follow)."""

  def __call__(self, run, step, state):
    if jax.process_count() > 1 and distributed.agree_any(run.stop_reason is not None):
      run.request_stop(run.stop_reason or "peer")


# ------------------------------------------------------------------------------------ logging ---
class LogMetrics(Action):
  """Collects each step's device metrics; every ``every`` steps (and when stopping) pulls them,
  stops on a non-finite loss, and writes their means with steps/s and examples/s."""

  def __init__(self, every: int, device_kind: str):
    self.every = max(1, int(every))
    self.device_kind = device_kind

  def __call__(self, run, step, state):
    if _due(step, self.every) or run.stopping(step):
      self.flush(run, step)

  def end(self, run, step, state):
    self.flush(run, step)

  def flush(self, run: Run, step: int):
    if not run.pending:
      return
    host = [(s, run.dp.metrics_to_host(m)) for s, m in run.pending]
    run.pending.clear()
    for s, m in host:
      loss = m.get("loss")
      if loss is not None and not np.all(np.isfinite(loss)):
        run.ckpt.wait()
        raise NonFiniteLossError(
            f"loss is {float(np.asarray(loss))} at step {s}; stopping. The last good "
            f"checkpoint (step {run.last_saved}) in {run.ckpt.directory} is left untouched.")
    last = host[-1][1]
    means = {f"train/{k}": float(np.mean([np.asarray(m[k]) for _, m in host]))
             for k in last if np.ndim(last[k]) == 0}
    rates = run.throughput.measure(step)
    run.write(step, {**means, **(rates or {})})
    loss = f"loss={means.get('train/loss', float('nan')):.5g}"
    if not rates:
      run.log(f"step {step}/{run.total_steps} {loss}")
      return
    eta = logs.format_duration(run.throughput.eta(step, rates["perf/steps_per_sec"]))
    run.log(f"step {step}/{run.total_steps} ({100.0 * step / run.total_steps:.1f}%) {loss} "
            f"{rates['perf/steps_per_sec']:.2f} steps/s {rates['perf/examples_per_sec']:.1f} ex/s "
            f"({rates['perf/examples_per_sec_per_device']:.1f}/device, {self.device_kind}) "
            f"ETA {eta}")


# --------------------------------------------------------------------------------- evaluation ---
class Evaluate(Action):
  """``config.evals``: each spec at its cadence; the ``final`` ones when the run ends. Writes
  ``eval_<name>/<metric>`` to the metrics stream and ``WORKDIR/eval.json`` (atomic)."""

  def __init__(self, specs: Dict[str, Any]):
    self.specs = specs
    self.history: List[Dict[str, Any]] = []
    self.latest: Optional[Dict[str, Any]] = None
    self.final: Dict[str, Any] = {}
    self.done_at: Dict[str, Any] = {}   # name -> (step, record) of its last evaluation

  def __call__(self, run, step, state):
    if run.stopping(step):
      return  # the final evaluations follow in end()
    names = [n for n, s in self.specs.items() if _due(step, s.every_steps)]
    if names:
      self.evaluate(run, step, state, names, final=False)

  def end(self, run, step, state):
    finals = [n for n, s in self.specs.items() if s.final]
    fresh = [n for n in finals if self.done_at.get(n, (None,))[0] != step]
    for name in finals:
      if name not in fresh:   # evaluated at this very step already (e.g. a target stop)
        self.final[name] = self.done_at[name][1]
    if fresh:
      self.evaluate(run, step, state, fresh, final=True)
    else:
      self.write(run, step)

  def evaluate(self, run: Run, step: int, state, names: List[str], final: bool):
    run.throughput.pause()
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
      try:
        metrics = evaluators.run(name, self.specs[name], run.eval_ctx, state)
      except DataError as e:  # a split the dataset does not have: skip it, say so
        run.log(f"eval {name} skipped: {e}")
        continue
      if len(metrics) <= 1:
        run.log(f"eval {name}: no batches")
        continue
      run.write(step, {f"eval_{name}/{k}": v for k, v in evaluators.scalars(metrics).items()})
      run.log(f"eval {name} @ step {step}: {evaluators.describe(metrics)}")
      record = {"step": step, "split": self.specs[name].split, "name": name, **metrics}
      self.history.append({k: v for k, v in record.items() if np.ndim(v) == 0})
      self.latest = record
      self.done_at[name] = (step, record)
      if final:
        self.final[name] = record
    run.clock.eval_s += time.perf_counter() - t0
    run.clock.eval_cpu_s += time.process_time() - c0
    run.throughput.resume()
    self.write(run, step)

  def write(self, run: Run, step: int):
    if run.is_main and self.latest is not None:
      logs.atomic_write_json(os.path.join(run.workdir, "eval.json"), {
          "step": step, "latest": self.latest, "final": self.final, "history": self.history})


# ------------------------------------------------------------------------------------- target ---
class TargetCheck(Action):
  """``config.target = {metric, threshold, mode}``: the first logged value of ``metric`` that
  meets it (``mode`` "max": >= threshold, "min": <=) stops the run and writes
  ``WORKDIR/time_to_target.json``; a run that ends without meeting it writes the same file with
  ``"reached": false`` and the figures at its end."""

  FILE = "time_to_target.json"

  def __init__(self, metric: str, threshold: float, mode: str = "max",
               accumulate_steps: int = 1):
    if mode not in ("max", "min"):
      raise ValueError(f"config.target.mode={mode!r}: expected 'max' or 'min'")
    self.metric, self.threshold, self.mode = str(metric), float(threshold), mode
    self.accumulate_steps = max(1, int(accumulate_steps))   # config.optim.accumulate_steps
    self.record: Optional[Dict[str, Any]] = None

  def met(self, value: float) -> bool:
    return value >= self.threshold if self.mode == "max" else value <= self.threshold

  def __call__(self, run, step, state):
    if self.record is None and run.scalar_steps.get(self.metric) == step:
      value = run.scalars[self.metric]
      if np.isfinite(value) and self.met(value):
        self._write(run, step, value, reached=True)
        run.log(f"target {self.metric} {'>=' if self.mode == 'max' else '<='} {self.threshold} "
                f"met at step {step} ({value:.4g}); stopping")
        run.request_stop("target")

  def end(self, run, step, state):
    if self.record is not None:
      return
    value = run.scalars.get(self.metric, float("nan"))
    self._write(run, step, value, reached=bool(np.isfinite(value) and self.met(value)))

  def _write(self, run: Run, step: int, value: float, reached: bool):
    self.record = {
        "reached": reached, "metric": self.metric, "threshold": self.threshold,
        "mode": self.mode, "value": float(value), "step": int(step),
        "examples": run.examples(step), "train_wall_s": run.clock.train_wall_s(),
        "train_cpu_s": run.clock.train_cpu_s(), "compile_s": run.clock.compile_s,
        "eval_s": run.clock.eval_s,
        # examples per optimiser update (train step x accumulation), and the updates made
        "global_batch": run.global_batch * self.accumulate_steps,
        "step_batch": run.global_batch, "accumulate_steps": self.accumulate_steps,
        "optimizer_updates": int(step) // self.accumulate_steps}
    if run.is_main:
      logs.atomic_write_json(os.path.join(run.workdir, self.FILE), self.record)


# -------------------------------------------------------------------------------- checkpoints ---
class Checkpoint(Action):
  """Every ``every`` steps and when stopping: a checkpoint of the state, after checking the
  losses since the last one (``flush``) and the state are finite, so a NaN never overwrites the
  last good checkpoint."""

  def __init__(self, every: int, log_metrics: LogMetrics):
    self.every = int(every)
    self.log_metrics = log_metrics

  def __call__(self, run, step, state):
    if (_due(step, self.every) or run.stopping(step)) and run.last_saved != step:
      self.save(run, step, state)   # (KeepBest may have saved this step already)

  def end(self, run, step, state):
    if run.last_saved != step:
      self.save(run, step, state)

  def save(self, run: Run, step: int, state):
    run.throughput.pause()
    self.log_metrics.flush(run, step)
    host_state = run.dp.get_state(state)
    if not parallel.all_finite(host_state):
      run.ckpt.wait()
      raise NonFiniteLossError(
          f"the train state has NaN/inf values at step {step}; stopping. The last good "
          f"checkpoint (step {run.last_saved}) in {run.ckpt.directory} is left untouched.")
    run.ckpt.save(step, host_state, {"step": step, "data_step": step,
                                     "task": str(run.config.task), "parallel": run.dp.mode,
                                     "num_devices": run.dp.num_devices})
    run.last_saved = step
    if run.stop_reason == "sigterm":
      run.log(f"SIGTERM: saved checkpoint at step {step}")
    run.throughput.resume()


# ---------------------------------------------------------------------------------- profiling ---
class Profile(Action):
  """A ``jax.profiler`` trace of steps ``first+1 .. first+count`` into ``WORKDIR/profile``."""

  def __init__(self, first: int, count: int):
    self.first, self.count = int(first), int(count)
    self.active = False

  def __call__(self, run, step, state):
    if not self.active and step == self.first:
      jax.profiler.start_trace(os.path.join(run.workdir, "profile"))
      self.active = True
    elif self.active and step >= self.first + self.count:
      self.end(run, step, state)

  def end(self, run, step, state):
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      run.log(f"profile of steps {self.first + 1}-{step} in {run.workdir}/profile")


# ---------------------------------------------------------------------------------- assembly ---
def default_actions(run: Run, handler: PreemptionHandler, device_kind: str
                    ) -> List[Action]:
  """The loop's actions, in order, from ``run.config``."""
  c = run.config
  log_metrics = LogMetrics(int(c.log_every_steps), device_kind)
  actions: List[Action] = [Preemption(handler),
                           WallClockBudget(float(c.get("max_train_seconds", 0) or 0)),
                           AgreeStop(), log_metrics]
  specs = {n: s for n, s in evaluators.specs(c).items() if evaluators.applicable(run.task, s)}
  if specs:
    actions.append(Evaluate(specs))
  target = c.get("target")
  if target and target.get("metric"):
    optim_cfg = c.get("optim") or {}
    actions.append(TargetCheck(target.metric, target.threshold, target.get("mode", "max"),
                               int(optim_cfg.get("accumulate_steps", 1) or 1)))
  checkpoint = Checkpoint(int(c.get("checkpoint_every_steps", 0) or 0), log_metrics)
  keep_best = c.get("keep_best")
  if keep_best and keep_best.get("metric"):
    from d2m_jax.train import best  # pylint: disable=import-outside-toplevel
    actions.append(best.KeepBest(keep_best.metric, keep_best.get("mode", "max"),
                                 keep_best.get("constraints", ""), checkpoint))
  actions.append(checkpoint)
  profile = tuple(c.get("profile_steps") or (0, 0))
  if profile[1] > 0:
    actions.append(Profile(*profile))
  return actions
