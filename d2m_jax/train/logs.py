"""Metric writers, timing and atomic JSON files for the training loop.

Writers: ``clu.metric_writers.create_default_writer`` (TensorBoard event files + absl logging)
on process 0, plus a JSON-lines file ``WORKDIR/metrics.jsonl`` (one ``{"step":..., ...}`` per
write, easy to grep or load with pandas). When clu's TensorBoard writer cannot be imported (it
needs ``tensorflow`` and ``tensorboard``; the GPU image may have neither) the engine falls back
to readable stdout + ``metrics.jsonl`` and says so once. Other processes get a no-op writer.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np

from d2m_jax import files

# JSON to a temporary name in the same folder, then ``os.replace`` (never half-written): the
# package's one atomic writer (d2m_jax/files.py), under the name the engine uses.
atomic_write_json = files.write_json
_json_default = files.json_default


def _scalar(v) -> float:
  return float(np.asarray(v))


class JsonlWriter:
  """Appends ``{"step": step, **scalars}`` lines to a file (flushed on every write)."""

  def __init__(self, path: str):
    self._f = open(path, "a", buffering=1)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._f.write(json.dumps({"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}})
                  + "\n")

  def write_hparams(self, hparams: Mapping[str, Any]):
    del hparams

  def flush(self):
    self._f.flush()

  def close(self):
    self._f.close()


class StdoutWriter:
  """Readable ``[step] name=value`` lines on stdout (used when clu cannot be imported)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    body = ", ".join(f"{k}={_scalar(v):.6g}" for k, v in sorted(scalars.items()))
    print(f"[{int(step)}] {body}", flush=True)

  def write_hparams(self, hparams: Mapping[str, Any]):
    del hparams

  def flush(self):
    sys.stdout.flush()

  def close(self):
    self.flush()


class NullWriter:
  def write_scalars(self, step, scalars):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class Writers:
  """Fans writes out to several writers (clu's MultiWriter needs clu's package import)."""

  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    scalars = {k: v for k, v in scalars.items() if np.ndim(v) == 0}
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_hparams(self, hparams: Mapping[str, Any]):
    for w in self.writers:
      try:
        w.write_hparams(hparams)
      except Exception:  # pylint: disable=broad-except
        pass  # hparams are a nicety; TensorBoard rejects some value types

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def create_writer(workdir: str, is_main: bool, log=print) -> Writers:
  """TensorBoard (via clu) + ``metrics.jsonl`` on process 0, nothing elsewhere."""
  if not is_main:
    return Writers([NullWriter()])
  writers = [JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
  try:
    from clu import metric_writers  # pylint: disable=import-outside-toplevel
    writers.append(metric_writers.create_default_writer(workdir, asynchronous=False))
  except Exception as e:  # pylint: disable=broad-except  (ImportError deep inside clu/tf)
    log(f"TensorBoard writer unavailable ({type(e).__name__}: {e}); logging to stdout and "
        f"{os.path.join(workdir, 'metrics.jsonl')} only")
    writers.append(StdoutWriter())
  return Writers(writers)


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Throughput:
  """Steps/s and examples/s over log intervals, excluding compile and pauses (eval, ckpt)."""

  def __init__(self, start_step: int, total_steps: int, global_batch: int, num_devices: int):
    self.total_steps = total_steps
    self.global_batch = global_batch
    self.num_devices = num_devices
    self._last_step = start_step
    self._last_time = None
    self._paused = 0.0
    self._pause_t0 = None
    self.train_seconds = 0.0  # sum of measured step time

  def start(self, step: int):
    """Starts (or restarts) the clock after the compiling first step."""
    self._last_step, self._last_time, self._paused = step, time.perf_counter(), 0.0

  def pause(self):
    self._pause_t0 = time.perf_counter()

  def resume(self):
    if self._pause_t0 is not None:
      self._paused += time.perf_counter() - self._pause_t0
      self._pause_t0 = None

  def measure(self, step: int) -> Optional[Dict[str, float]]:
    """Rates since the last call (the caller synchronised with the device before)."""
    if self._last_time is None or step <= self._last_step:
      return None
    now = time.perf_counter()
    dt = max(now - self._last_time - self._paused, 1e-9)
    steps = step - self._last_step
    self.train_seconds += dt
    self._last_step, self._last_time, self._paused = step, now, 0.0
    sps = steps / dt
    return {"perf/steps_per_sec": sps,
            "perf/examples_per_sec": sps * self.global_batch,
            "perf/examples_per_sec_per_device": sps * self.global_batch / self.num_devices,
            "perf/step_time_ms": 1000.0 / sps}

  def eta(self, step: int, steps_per_sec: float) -> float:
    return (self.total_steps - step) / max(steps_per_sec, 1e-9)
