"""The training loop every task runs through: ``train_and_evaluate(config, workdir, task=task)``.

It reads like flax/examples' ``train.py``::

    run = set up (mesh, parallel mode, writer, checkpointer)
    start = resume point (latest checkpoint: state and input position)
    state = built (d2m_jax.train.state) or restored into its abstract form
    step_fn = the task's step, wrapped for config.parallel, compiled ahead of time
    for step in range(start, num_train_steps):
      state, metrics = step_fn(state, batch)
      for action in actions: action(run, step + 1, state)     # d2m_jax.train.actions
      if run.stop_reason: break
    for action in actions: action.end(run, step, state)

Everything periodic (logging with the NaN check, ``config.evals``, ``config.target``,
checkpoints, the wall-clock budget ``config.max_train_seconds``, SIGTERM, profiling) is an
action. A resumed run is bit-identical to an uninterrupted one: the state and the input
position (``make_iterator(start_step=...)``) come back, and evaluators never touch the state.

Multi-host: every process runs the same loop on its slice of the data; files and logs come from
process 0; checkpoints go through orbax from every process.

Test/benchmark hooks: ``train_iter`` (an iterator of host batches, or a callable
``start_step -> iterator`` for exact-resume tests), ``eval_iter_fn(split) -> iterable``,
``stats`` (dataset statistics; loaded from the pipeline when not given and the pipeline is
used) and ``preemption`` (the SIGTERM handler; the launcher installs one at process start).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Iterable, Optional

import jax
import ml_collections
import numpy as np

from d2m_jax.train import actions as actions_lib
from d2m_jax.train import checkpoint as ckpt_lib
from d2m_jax.train import distributed
from d2m_jax.train import evaluators
from d2m_jax.train import logs
from d2m_jax.train import parallel
from d2m_jax.train import state as state_lib
from d2m_jax.train import workdir as workdir_lib
from d2m_jax.train.task import Task
from d2m_jax.train.task import resolve_dtype_name

NonFiniteLossError = actions_lib.NonFiniteLossError


def _dtype_label(config: ml_collections.ConfigDict) -> str:
  """``config.dtype`` as it will run: ``'auto'`` is logged with what it resolves to here."""
  name = str(config.get("dtype", "float32"))
  return f"auto->{resolve_dtype_name(name)}" if name == "auto" else name


def _poison(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """``config.debug_nan_step``: every float input becomes NaN (tests the NaN stop)."""
  return {k: (np.full_like(v, np.nan) if np.issubdtype(np.asarray(v).dtype, np.floating) else v)
          for k, v in batch.items()}


@workdir_lib.locked_training  # lock, workdir and resume-config checks before anything is written
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, task: Task,
                       train_iter: Optional[Any] = None,
                       eval_iter_fn: Optional[Callable[[str], Iterable]] = None,
                       stats: Optional[Dict[str, np.ndarray]] = None,
                       preemption: Optional[actions_lib.PreemptionHandler] = None):
  """Trains ``task`` (built from ``config`` by the caller, e.g. ``d2m_jax.tasks.get_task``) in
  ``workdir``, resuming if it holds a checkpoint. Returns the final train state (one
  replicated copy, as checkpointed)."""
  run = _setup(config, os.path.abspath(workdir), task)
  own_handler = preemption is None
  handler = (preemption or actions_lib.PreemptionHandler()).install()
  try:
    return _train(run, handler, train_iter, eval_iter_fn, stats)
  finally:
    if own_handler:
      handler.uninstall()
    run.ckpt.close()
    run.writer.flush()
    run.writer.close()


def _setup(config, workdir: str, task: Task) -> actions_lib.Run:
  """Mesh, parallel wrapper, checks, the start-up line, writer, checkpointer."""
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
  log = (lambda msg: print(msg, flush=True)) if is_main else (lambda msg: None)
  global_batch = int(config.data.batch_size)
  dp = parallel.DataParallel(str(config.parallel),
                             parallel.make_mesh(int(config.get("num_devices", 0) or 0)))
  dp.check_batch_size(global_batch)
  if any(s.kind == "task_eval" and evaluators.applicable(task, s)
         for s in evaluators.specs(config).values()):
    dp.check_batch_size(int(config.data.get("eval_batch_size", global_batch)),
                        "config.data.eval_batch_size")
  log(f"task={config.task} parallel={dp.mode} devices={dp.num_devices} "
      f"({jax.devices()[0].device_kind}) processes={jax.process_count()} "
      f"global_batch={global_batch} dtype={_dtype_label(config)} workdir={workdir}")
  ckpt = ckpt_lib.Checkpointer(workdir, keep=int(config.get("keep_checkpoints", 3)),
                               async_save=bool(config.get("async_checkpoints", True)))
  return actions_lib.Run(config=config, workdir=workdir, task=task, dp=dp, ckpt=ckpt,
                         writer=logs.create_writer(workdir, is_main, log=log), log=log,
                         total_steps=int(config.num_train_steps), global_batch=global_batch)


def _train(run: actions_lib.Run, handler, train_iter, eval_iter_fn, stats):
  latest = run.ckpt.latest_step()
  if latest is not None:
    run.start_step = int(run.ckpt.restore_meta(latest).get("data_step", latest))
    run.last_saved = latest
    run.log(f"resuming from checkpoint step {latest} in {run.ckpt.directory}")
  it, stats = _train_iterator(run, train_iter, stats)
  first = next(it, None)
  if first is None:
    raise RuntimeError("the training iterator yielded no batch")
  state = _initial_state(run, first, stats, latest)
  if jax.process_index() == 0:  # config.json only once the restore worked (issue 26)
    logs.atomic_write_json(os.path.join(run.workdir, "config.json"),
                           json.loads(run.config.to_json_best_effort(indent=2, sort_keys=True)))
  if run.start_step >= run.total_steps:
    run.log(f"nothing to do: checkpoint step {run.start_step} >= "
            f"num_train_steps={run.total_steps}")
    return run.dp.get_state(state)
  run.eval_ctx = evaluators.EvalContext(run.config, run.task, run.dp,
                                        eval_iter_fn or evaluators.default_batches(run.config))
  nan_step = int(run.config.get("debug_nan_step", -1))
  batches = (_poison(b) if s == nan_step else b for s, b in _numbered(first, it, run.start_step))
  step_fn = _compile(run, state, first if nan_step != run.start_step else _poison(first))
  run.throughput = logs.Throughput(run.start_step, run.total_steps, run.global_batch,
                                   run.dp.num_devices)
  actions = actions_lib.default_actions(run, handler, jax.devices()[0].device_kind)
  distributed.sync("train_loop_start")  # every process meets before the first collective
  run.clock.start()
  step = run.start_step
  for step, batch in zip(range(run.start_step + 1, run.total_steps + 1), batches):
    with jax.profiler.StepTraceAnnotation("train", step_num=step - 1):
      state, metrics = step_fn(state, run.dp.put_batch(batch))
    run.pending.append((step, metrics))
    if step == run.start_step + 1:
      _first_step_done(run, state, step)
    for action in actions:
      action(run, step, state)
    if run.stop_reason:
      break
  for action in actions:
    action.end(run, step, state)
  run.ckpt.wait()
  run.log(f"done: step {step}{f' ({run.stop_reason})' if run.stop_reason else ''}, "
          f"{run.clock.train_wall_s():.1f}s of training and {run.clock.eval_s:.1f}s of "
          f"evaluation since the first step")
  return run.dp.get_state(state)


def _numbered(first, it, start_step: int):
  """``(step, batch)`` from the already-drawn first batch on; a short iterator is an error."""
  yield start_step, first
  step = start_step + 1
  while True:
    try:
      yield step, next(it)
    except StopIteration:
      raise RuntimeError(f"the training iterator ran out at step {step}") from None
    step += 1


def _train_iterator(run: actions_lib.Run, train_iter, stats):
  """The host batch iterator from ``run.start_step`` on, and the dataset stats."""
  if train_iter is None:
    from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    stats = pipeline.load_stats(run.config.data) if stats is None else stats
    return iter(pipeline.make_iterator(run.config.data, "train", start_step=run.start_step,
                                       shuffle=True, repeat=True)), stats
  if callable(train_iter) and not hasattr(train_iter, "__next__"):
    return iter(train_iter(run.start_step)), stats
  return iter(train_iter), stats


def _initial_state(run: actions_lib.Run, batch, stats, latest: Optional[int]):
  """A fresh state (built replicated on the mesh), or the checkpoint restored into the
  abstract state: never both."""
  t0 = time.perf_counter()
  rng = jax.random.PRNGKey(int(run.config.seed))
  sharding = run.dp.state_sharding()
  if latest is None:
    state = run.dp.put_state(state_lib.build_state(run.task, rng, batch, stats,
                                                   sharding=sharding))
  else:
    abstract = state_lib.abstract_state(run.task, rng, batch, stats, sharding=sharding)
    state, _ = run.ckpt.restore(abstract, step=latest)
    state = run.dp.put_state(state) if run.dp.mode == "pmap" else state
  run.log(f"state ready in {time.perf_counter() - t0:.2f}s "
          f"({state_lib.count_params(run.dp.get_state(state)):,} values in the state's float "
          f"arrays)")
  return state


def _compile(run: actions_lib.Run, state, batch):
  """The task's step for this parallel mode, lowered and compiled ahead of time."""
  compiled, seconds = run.dp.compile(run.dp.wrap(run.task.train_step), state,
                                     run.dp.put_batch(batch))
  run.clock.compile_s = seconds
  run.log(f"train step compiled in {seconds:.2f}s")
  run.writer.write_scalars(run.start_step, {"perf/compile_seconds": seconds})
  return compiled


def _first_step_done(run: actions_lib.Run, state, step: int):
  """The first step's time (after compile) is reported apart; the rate clock starts after it."""
  jax.block_until_ready(state)
  seconds = run.clock.wall_s()
  run.log(f"first step took {seconds:.3f}s (after compile)")
  run.writer.write_scalars(step, {"perf/first_step_seconds": seconds})
  run.throughput.start(step)
