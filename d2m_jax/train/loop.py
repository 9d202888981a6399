"""The training loop every task runs through: ``train_and_evaluate(config, workdir, task=task)``.

What it does, in order:

1. writes ``WORKDIR/config.json`` (process 0), takes the Task it is handed (the launcher builds
   it from ``config.task``), builds the 1-D
   ``("data",)`` mesh and the parallel wrapper (``config.parallel``: jit | shard_map | pmap);
2. resumes from the latest checkpoint in ``WORKDIR/checkpoints`` if there is one: the state and
   the input position (``make_iterator(start_step=...)``), so a resumed run is bit-identical to
   an uninterrupted one;
3. lowers and compiles the step ahead of time (compile time reported apart), runs the first
   step alone (its time reported apart), then the steady loop with the state donated;
4. every ``log_every_steps``: pulls the metrics of the interval off the device (the only
   device->host sync of the loop), checks every step's ``loss`` for NaN/inf, writes the means
   plus steps/s, examples/s (total and per device) and device kind, and prints a progress line
   with ETA;
5. every ``eval_every_steps`` and at the end: evaluation (``task.eval_step``) on
   ``config.eval_split``, at the end also on each of ``config.final_eval_splits``; written to
   the writer and to ``WORKDIR/eval.json`` (atomic);
6. every ``checkpoint_every_steps``, at the end and on SIGTERM: a checkpoint (after checking
   the losses and parameters are finite, so a NaN never overwrites the last good checkpoint).

A non-finite loss raises :class:`NonFiniteLossError` (the launcher turns it into a clear message
and exit 1). SIGTERM finishes the current step, saves, and returns normally (exit 0).

Multi-host: every process runs the same loop on its slice of the data; files and logs come from
process 0; checkpoints go through orbax from every process.

Test/benchmark hooks: ``train_iter`` (an iterator of host batches, or a callable
``start_step -> iterator`` for exact-resume tests), ``eval_iter_fn(split) -> iterable``, and
``stats`` (dataset statistics; loaded from the pipeline when not given and the pipeline is used).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import jax
import ml_collections
import numpy as np

from d2m_jax.train import checkpoint as ckpt_lib
from d2m_jax.train import distributed
from d2m_jax.train import logs
from d2m_jax.train import optim
from d2m_jax.train import parallel
from d2m_jax.train.task import Task
from d2m_jax.train.task import resolve_dtype_name


class NonFiniteLossError(RuntimeError):
  """Raised when the loss (or the parameters) become NaN/inf."""


class _Preemption:
  """SIGTERM -> a flag the loop checks after every step (then saves and returns)."""

  def __init__(self):
    self.requested = False
    self._old = None

  def install(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)

  def uninstall(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True


def _get(config, name, default):
  return config.get(name, default) if hasattr(config, "get") else default


def _dtype_label(config: ml_collections.ConfigDict) -> str:
  """``config.dtype`` as it will run: ``'auto'`` is logged with what it resolves to here."""
  name = str(_get(config, "dtype", "float32"))
  return f"auto->{resolve_dtype_name(name)}" if name == "auto" else name


def _dump_config(config, workdir):
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  path = os.path.join(workdir, "config.json")
  logs.atomic_write_json(path, json.loads(text))


def _poison(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """``config.debug_nan_step``: every float input becomes NaN (tests the NaN stop)."""
  return {k: (np.full_like(v, np.nan) if np.issubdtype(np.asarray(v).dtype, np.floating) else v)
          for k, v in batch.items()}


def _eval_batches(data_cfg, split: str) -> Iterator[Dict[str, np.ndarray]]:
  """Every example of ``split`` once, in a fixed order: global batches of
  ``data.eval_batch_size``, the last one padded (``eval_mask`` marks real rows), each process
  taking its rows of every global batch (so all processes run the same number of batches)."""
  from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  arrays = {k: v for k, v in pipeline.load_split(data_cfg, split).items()
            if not k.startswith("_")}
  n = len(next(iter(arrays.values())))
  gb = int(data_cfg.get("eval_batch_size", data_cfg.batch_size))
  n_proc, pid = jax.process_count(), jax.process_index()
  if gb % n_proc:
    raise ValueError(f"config.data.eval_batch_size={gb} not divisible by {n_proc} processes")
  local = gb // n_proc
  for start in range(0, n, gb):
    idx = np.arange(start, start + gb)
    mask = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)[pid * local:(pid + 1) * local]
    batch = {k: v[idx] for k, v in arrays.items()}
    batch["eval_mask"] = mask[pid * local:(pid + 1) * local]
    yield batch


def _pad_eval_batch(batch: Dict[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
  """Pads a short last eval batch to ``size`` rows (repeating its last row) and adds
  ``eval_mask`` (1 for real rows) so tasks can count exactly; full batches get all ones."""
  n = len(next(iter(batch.values())))
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if n < size:
      v = np.concatenate([v, np.repeat(v[-1:], size - n, axis=0)], axis=0)
    out[k] = v
  mask = np.asarray(batch["eval_mask"], np.float32) if "eval_mask" in batch else np.ones(n, np.float32)
  out["eval_mask"] = np.concatenate([mask, np.zeros(size - n, np.float32)]) if n < size else mask
  return out


def _has_eval(task: Task) -> bool:
  return type(task).eval_step is not Task.eval_step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, task: Task,
                       train_iter: Optional[Any] = None,
                       eval_iter_fn: Optional[Callable[[str], Iterable]] = None,
                       stats: Optional[Dict[str, np.ndarray]] = None):
  """Trains ``task`` (built from ``config`` by the caller, e.g. ``d2m_jax.tasks.get_task``) in
  ``workdir``, resuming if it holds a checkpoint. The engine never looks tasks up itself.

  Returns the final train state (one replicated copy, as checkpointed).
  """
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
  log = (lambda msg: print(msg, flush=True)) if is_main else (lambda msg: None)

  total_steps = int(config.num_train_steps)
  log_every = max(1, int(config.log_every_steps))
  eval_every = int(_get(config, "eval_every_steps", 0) or 0)
  ckpt_every = int(_get(config, "checkpoint_every_steps", 0) or 0)
  nan_step = int(_get(config, "debug_nan_step", -1))
  global_batch = int(config.data.batch_size)

  mesh = parallel.make_mesh(int(_get(config, "num_devices", 0) or 0))
  dp = parallel.DataParallel(str(config.parallel), mesh)
  dp.check_batch_size(global_batch)
  if _has_eval(task):
    dp.check_batch_size(int(config.data.get("eval_batch_size", global_batch)),
                        "config.data.eval_batch_size")
  device_kind = jax.devices()[0].device_kind
  log(f"task={config.task} parallel={dp.mode} devices={dp.num_devices} ({device_kind}) "
      f"processes={jax.process_count()} global_batch={global_batch} dtype={_dtype_label(config)} "
      f"workdir={workdir}")
  log(optim.describe_batch(config, dp.num_devices))

  if is_main:
    _dump_config(config, workdir)
  writer = logs.create_writer(workdir, is_main, log=log)
  ckpt = ckpt_lib.Checkpointer(workdir, keep=int(_get(config, "keep_checkpoints", 3)),
                               async_save=bool(_get(config, "async_checkpoints", True)))
  preemption = _Preemption()
  preemption.install()
  try:
    return _run(config, workdir, task, dp, ckpt, writer, preemption, log, device_kind,
                total_steps, log_every, eval_every, ckpt_every, nan_step, global_batch,
                train_iter, eval_iter_fn, stats)
  finally:
    preemption.uninstall()
    ckpt.close()
    writer.flush()
    writer.close()


def _run(config, workdir, task, dp, ckpt, writer, preemption, log, device_kind, total_steps,
         log_every, eval_every, ckpt_every, nan_step, global_batch, train_iter, eval_iter_fn,
         stats):
  # ---- resume point and input pipeline -----------------------------------------------------
  latest = ckpt.latest_step()
  start_step = 0
  if latest is not None:
    meta = ckpt.restore_meta(latest)
    start_step = int(meta.get("data_step", latest))
    log(f"resuming from checkpoint step {latest} in {ckpt.directory}")
  if train_iter is None:
    from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    if stats is None:
      stats = pipeline.load_stats(config.data)
    it = iter(pipeline.make_iterator(config.data, "train", start_step=start_step, shuffle=True,
                                     repeat=True))
  elif callable(train_iter) and not hasattr(train_iter, "__next__"):
    it = iter(train_iter(start_step))
  else:
    it = iter(train_iter)
  if eval_iter_fn is None and _has_eval(task):
    def eval_iter_fn(split):  # pylint: disable=function-redefined
      return _eval_batches(config.data, split)

  try:
    first_batch = next(it)
  except StopIteration:
    raise RuntimeError("the training iterator yielded no batch") from None

  # ---- state ---------------------------------------------------------------------------------
  t0 = time.perf_counter()
  state = _init_state(task, jax.random.PRNGKey(int(config.seed)), first_batch, stats, log)
  state = dp.put_state(state)
  if latest is not None:
    restored, _ = ckpt.restore(dp.abstract_state(state), step=latest)
    state = dp.put_state(restored) if dp.mode == "pmap" else restored
  log(f"state ready in {time.perf_counter() - t0:.2f}s "
      f"({_count_params(dp.get_state(state)):,} parameters in the state's float arrays)")

  if start_step >= total_steps:
    log(f"nothing to do: checkpoint step {start_step} >= num_train_steps={total_steps}")
    return dp.get_state(state)

  # ---- compile -------------------------------------------------------------------------------
  step_fn = dp.wrap(_with_optimizer_metrics(task.train_step))
  if nan_step == start_step:
    first_batch = _poison(first_batch)
  placed = dp.put_batch(first_batch)
  compiled, compile_s = dp.compile(step_fn, state, placed)
  log(f"train step compiled in {compile_s:.2f}s")
  writer.write_scalars(start_step, {"perf/compile_seconds": compile_s})

  eval_state = {"fn": None, "history": [], "final": {}}
  throughput = logs.Throughput(start_step, total_steps, global_batch, dp.num_devices)
  pending: List[Any] = []
  pending_steps: List[int] = []

  def flush_metrics(done: int):
    """Pulls the interval's metrics (the loop's only sync), checks losses, writes means."""
    if not pending:
      return
    host = [dp.metrics_to_host(m) for m in pending]
    for s, m in zip(pending_steps, host):
      loss = m.get("loss")
      if loss is not None and not np.all(np.isfinite(loss)):
        ckpt.wait()
        raise NonFiniteLossError(
            f"loss is {float(np.asarray(loss))} at step {s + 1}; stopping. The last good "
            f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is left untouched.")
    means = {f"train/{k}": float(np.mean([np.asarray(m[k]) for m in host]))
             for k in host[-1] if np.ndim(host[-1][k]) == 0}
    pending.clear()
    pending_steps.clear()
    rates = throughput.measure(done)
    if rates:
      means.update(rates)
    writer.write_scalars(done, means)
    loss_txt = f"loss={means.get('train/loss', float('nan')):.5g}"
    if rates:
      eta = logs.format_duration(throughput.eta(done, rates["perf/steps_per_sec"]))
      log(f"step {done}/{total_steps} ({100.0 * done / total_steps:.1f}%) {loss_txt} "
          f"{rates['perf/steps_per_sec']:.2f} steps/s {rates['perf/examples_per_sec']:.1f} ex/s "
          f"({rates['perf/examples_per_sec_per_device']:.1f}/device, {device_kind}) ETA {eta}")
    else:
      log(f"step {done}/{total_steps} {loss_txt}")

  def save(done: int, state):
    flush_metrics(done)
    host_state = dp.get_state(state)
    if not parallel.all_finite(host_state):
      ckpt.wait()
      raise NonFiniteLossError(
          f"the train state has NaN/inf values at step {done}; stopping. The last good "
          f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is left untouched.")
    ckpt.save(done, host_state, {"step": done, "data_step": done, "task": str(config.task),
                                 "parallel": dp.mode, "num_devices": dp.num_devices})

  def evaluate(done: int, state, splits):
    if eval_iter_fn is None:
      return
    for split in splits:
      t_eval = time.perf_counter()
      try:
        metrics = _evaluate(config, task, dp, eval_state, state, eval_iter_fn(split))
      except Exception as e:  # pylint: disable=broad-except
        if type(e).__name__ != "DataError":  # a split the dataset does not have: skip it
          raise
        log(f"eval on {split!r} skipped: {e}")
        continue
      if metrics is None:
        log(f"eval on {split!r}: no batches")
        continue
      metrics["eval_seconds"] = time.perf_counter() - t_eval
      scalars = {f"eval_{split}/{k}": v for k, v in metrics.items() if np.ndim(v) == 0}
      writer.write_scalars(done, scalars)
      body = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items())
                       if np.ndim(v) == 0)
      log(f"eval {split} @ step {done}: {body}")
      record = {"step": done, "split": split, **metrics}
      eval_state["history"].append({k: v for k, v in record.items() if np.ndim(v) == 0})
      eval_state["latest"] = record
      if splits is final_splits:
        eval_state["final"][split] = record
    if jax.process_index() == 0 and "latest" in eval_state:
      logs.atomic_write_json(os.path.join(workdir, "eval.json"), {
          "step": done, "latest": eval_state["latest"], "final": eval_state["final"],
          "history": eval_state["history"]})

  eval_split = str(_get(config, "eval_split", "validation"))
  final_splits = list(_get(config, "final_eval_splits", [eval_split, "test"]))

  # ---- loop ----------------------------------------------------------------------------------
  # All processes meet before the first collective (process 0 alone built the writer: CPU/gloo
  # collectives time out after ~30 s of waiting for a peer). No-op with one process.
  distributed.sync("train_loop_start")
  t_loop = time.perf_counter()
  done = start_step
  for step in range(start_step, total_steps):
    if step > start_step:
      try:
        batch = next(it)
      except StopIteration:
        raise RuntimeError(f"the training iterator ran out at step {step}") from None
      if step == nan_step:
        batch = _poison(batch)
      placed = dp.put_batch(batch)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = compiled(state, placed)
    pending.append(metrics)
    pending_steps.append(step)
    done = step + 1
    if step == start_step:
      jax.block_until_ready(state)
      first_s = time.perf_counter() - t_loop
      log(f"first step took {first_s:.3f}s (after compile)")
      writer.write_scalars(done, {"perf/first_step_seconds": first_s})
      throughput.start(done)
    is_last = done == total_steps
    stop = preemption.requested
    if jax.process_count() > 1:  # every process must take the same branch (collectives follow)
      stop = distributed.agree_any(stop)
    if done % log_every == 0 or is_last or stop:
      flush_metrics(done)
    if eval_every and _has_eval(task) and (done % eval_every == 0) and not is_last:
      throughput.pause()
      evaluate(done, state, [eval_split])
      throughput.resume()
    if (ckpt_every and done % ckpt_every == 0) or is_last or stop:
      throughput.pause()
      save(done, state)
      throughput.resume()
    if stop:
      log(f"SIGTERM: saved checkpoint at step {done}; exiting")
      break
  if done == total_steps and _has_eval(task):
    evaluate(done, state, final_splits)
  ckpt.wait()
  log(f"done: step {done}, {throughput.train_seconds:.1f}s of timed training steps, "
      f"{time.perf_counter() - t_loop:.1f}s wall since the first step")
  return dp.get_state(state)


def _evaluate(config, task, dp, eval_state, state, batches) -> Optional[Dict[str, Any]]:
  """Runs ``task.eval_step`` over the eval batches; scalars are means weighted by the number of
  real rows, array metrics (e.g. confusion counts) are summed; ``task.finalize_eval`` (optional)
  derives the rest (per-class accuracy, ...)."""
  size = int(config.data.eval_batch_size) // jax.process_count()
  limit = int(_get(config, "num_eval_batches", 0) or 0)
  sums: Dict[str, Any] = {}
  weight = 0.0
  n_batches = 0
  for i, batch in enumerate(batches):
    if limit > 0 and i >= limit:
      break
    batch = _pad_eval_batch(batch, size)
    placed = dp.put_batch(batch)
    n_real = float(_global_sum(placed["eval_mask"]))  # over all processes' rows
    if eval_state["fn"] is None:
      fn = dp.wrap(lambda s, b, axis_name=None: task.eval_step(s, b, axis_name=axis_name),
                   donate=False, out_state=False)
      eval_state["fn"], _ = dp.compile(fn, state, placed)
    m = dp.metrics_to_host(eval_state["fn"](state, placed))
    for k, v in m.items():
      v = np.asarray(v, np.float64)
      if v.ndim == 0:
        sums[k] = sums.get(k, 0.0) + v * n_real
      else:
        sums[k] = sums.get(k, 0.0) + v
    weight += n_real
    n_batches += 1
  if not n_batches:
    return None
  out = {k: (float(v / weight) if np.ndim(v) == 0 else v) for k, v in sums.items()}
  out["num_examples"] = int(weight)
  finalize = getattr(task, "finalize_eval", None)
  if finalize is not None:
    out.update(finalize(out))
  return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}


def _with_optimizer_metrics(train_step):
  """The task's step plus the optimiser's own scalars (effective lr, gradient noise scale)."""
  def step(state, batch, axis_name=None):
    state, metrics = train_step(state, batch, axis_name=axis_name)
    return state, {**metrics, **optim.optimizer_metrics(state)}
  return step


@jax.jit
def _global_sum(x):
  return x.sum()


def _init_state(task, rng, batch, stats, log):
  """``task.init_state`` under ``jax.jit`` (eager flax init of scans is many times slower);
  falls back to an eager call when the task's init needs concrete values."""
  try:
    return jax.jit(task.init_state)(rng, batch, stats)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
          jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError,
          TypeError) as e:
    log(f"init_state is not jittable ({type(e).__name__}); initialising eagerly")
    return task.init_state(rng, batch, stats)


def _count_params(state) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(state)
                 if hasattr(x, "dtype") and np.issubdtype(x.dtype, np.floating)))
