"""Shared benchmark machinery: timing protocol, FLOP counts, device peaks, MFU, output.

Timing protocol (``../shared/specs/jax_style_and_benchmarks.md`` §4.1, as big_vision and the
JAX docs do it):

* the function is compiled ahead of time, ``jax.jit(f).lower(*args).compile()``, and the
  compile time is reported apart;
* at least two warm-up calls are run and excluded;
* every timed call ends in ``jax.block_until_ready`` (asynchronous dispatch would otherwise
  time only the launch), so each step time is one complete step;
* the figures are the median and the 90th percentile of the step times, examples/s total and per
  device, the FLOPs per step, the achieved TFLOP/s and the MFU against :data:`PEAK_TFLOPS`.

FLOPs. XLA's ``compiled.cost_analysis()`` counts the body of a ``while`` loop **once**, whatever
its trip count (checked here: a 10-step ``lax.scan`` of a matmul reports the FLOPs of one step),
so for our recurrent models (every GRU is a ``lax.scan``) it under-counts by about the sequence
length. The benchmarks therefore count FLOPs on the jaxpr (:func:`jaxpr_flops`): every
``dot_general`` and convolution, scan bodies multiplied by their length, both branches of
nothing (``cond`` takes the costliest branch). That is the matmul/conv work, which is what MFU is
about; elementwise work is left out. The XLA figure is reported beside it (``xla_flops``).

Peaks live in ONE place, :data:`PEAK_TFLOPS`; :func:`device_kind` maps ``jax.devices()[0]`` to a
key of that table.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import jax
import jax.extend.core as jex_core
import numpy as np

from d2m_jax import host_memory

# ----------------------------------------------------------------------------------------------
# Device peaks (dense TFLOP/s per device). ONE table; MFU = achieved / peak.
#
# * cpu: measured on this project's 2-vCPU development VM (AMD EPYC, AVX-512), jax 0.10.2:
#   a jitted (256x1024)x(1024x3072) float32 matmul, the shape of one GRU-1024 step at batch
#   256, ran at ~0.355 TFLOP/s (``../shared/specs/stack.md``, "CPU ceilings"). No bf16 peak was
#   measured; XLA:CPU does bf16 matmuls no faster, so the float32 figure is used for both.
# * GPUs: NVIDIA datasheet dense (no sparsity) figures, SXM parts. For float32 the TF32
#   tensor-core peak is used because XLA:GPU runs float32 matmuls as TF32 at JAX's default
#   matmul precision; with ``jax_default_matmul_precision=highest`` the true fp32 peak (67) is
#   the relevant one.
# * TPUs: Google Cloud published bf16 peaks per chip; float32 matmuls run as bf16 passes at the
#   default precision, so the bf16 figure is used for both.
PEAK_TFLOPS: Dict[str, Dict[str, float]] = {
    "cpu-2vcpu-epyc": {"float32": 0.355, "bfloat16": 0.355},
    "h100": {"float32": 494.7, "bfloat16": 989.4},
    "h200": {"float32": 494.7, "bfloat16": 989.4},
    "a100": {"float32": 156.0, "bfloat16": 312.0},
    "tpu-v4": {"float32": 275.0, "bfloat16": 275.0},
    "tpu-v5e": {"float32": 197.0, "bfloat16": 197.0},
    "tpu-v5p": {"float32": 459.0, "bfloat16": 459.0},
    "tpu-v6e": {"float32": 918.0, "bfloat16": 918.0},
}


def device_kind(device=None) -> str:
  """A key of :data:`PEAK_TFLOPS` for ``device`` (default: the first local device).

  Unknown accelerators return their lower-cased ``device_kind`` (MFU is then left out).
  """
  d = device if device is not None else jax.local_devices()[0]
  kind = (getattr(d, "device_kind", "") or "").lower()
  if d.platform == "cpu":
    return "cpu-2vcpu-epyc"
  for key, needles in (("h200", ("h200",)), ("h100", ("h100",)), ("a100", ("a100",)),
                       ("tpu-v5e", ("v5 lite", "v5e", "v5litepod")), ("tpu-v5p", ("v5p", "v5")),
                       ("tpu-v6e", ("v6 lite", "v6e", "trillium")), ("tpu-v4", ("v4",))):
    if any(n in kind for n in needles):
      return key
  return kind or d.platform


def peak_tflops(kind: str, dtype: str) -> Optional[float]:
  """Peak dense TFLOP/s of one device of ``kind`` for compute ``dtype`` (None if unknown)."""
  return PEAK_TFLOPS.get(kind, {}).get(dtype)


def mfu(flops_per_step: Optional[float], step_s: float, num_devices: int,
        peak: Optional[float]) -> Optional[float]:
  """Model FLOPs utilisation: (FLOPs/step / step time / devices) / per-device peak."""
  if not flops_per_step or not peak or step_s <= 0:
    return None
  return flops_per_step / step_s / num_devices / (peak * 1e12)


# ----------------------------------------------------------------------------------------------
# FLOPs

def xla_flops(compiled) -> Optional[float]:
  """``flops`` from ``compiled.cost_analysis()`` (a dict, or a list of dicts in older jax).

  Note: XLA counts a while-loop body once (see the module docstring).
  """
  try:
    ca = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if ca is None:
    return None
  if isinstance(ca, (list, tuple)):
    vals = [c.get("flops") for c in ca if isinstance(c, dict) and c.get("flops") is not None]
    return float(sum(vals)) if vals else None
  v = ca.get("flops")
  return None if v is None else float(v)


def _dot_general_flops(eqn) -> float:
  a, b = (v.aval for v in eqn.invars[:2])
  (lc, rc), (lb, _) = eqn.params["dimension_numbers"]
  contract = math.prod(a.shape[i] for i in lc)
  batch = math.prod(a.shape[i] for i in lb)
  lfree = math.prod(s for i, s in enumerate(a.shape) if i not in lc and i not in lb)
  rfree = math.prod(s for i, s in enumerate(b.shape) if i not in rc and i not in eqn.params[
      "dimension_numbers"][1][1])
  return 2.0 * batch * lfree * rfree * contract


def _conv_flops(eqn) -> float:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  out = eqn.outvars[0].aval
  dn = eqn.params["dimension_numbers"]
  # rhs spec: (out feature dim, in feature dim, spatial...)
  rhs_spec = dn.rhs_spec
  kernel_in = rhs.shape[rhs_spec[1]]
  kernel_spatial = math.prod(rhs.shape[i] for i in rhs_spec[2:])
  # each output element needs kernel_in * kernel_spatial MACs (feature_group_count divides
  # the input features already in the kernel shape)
  return 2.0 * math.prod(out.shape) * kernel_in * kernel_spatial


def _sub_jaxprs(params) -> Iterable:
  for v in params.values():
    if isinstance(v, jex_core.ClosedJaxpr):
      yield v.jaxpr
    elif isinstance(v, jex_core.Jaxpr):
      yield v
    elif isinstance(v, (list, tuple)):
      for x in v:
        if isinstance(x, jex_core.ClosedJaxpr):
          yield x.jaxpr
        elif isinstance(x, jex_core.Jaxpr):
          yield x


def _count(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_general_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max((_count(b.jaxpr) for b in eqn.params["branches"]), default=0.0)
    elif name == "while":
      total += _count(eqn.params["body_jaxpr"].jaxpr)  # trip count unknown: counted once
    else:
      total += sum(_count(j) for j in _sub_jaxprs(eqn.params))
  return total


def jaxpr_flops(fn: Callable, *args, **kwargs) -> float:
  """Matmul + convolution FLOPs of ``fn(*args)``, scan bodies times their length."""
  closed = jax.make_jaxpr(fn, **kwargs)(*args)
  return _count(closed.jaxpr)


# ----------------------------------------------------------------------------------------------
# Out of memory

def is_oom(err: BaseException) -> bool:
  """True for device/host out-of-memory errors raised by XLA (or Python)."""
  if isinstance(err, MemoryError):
    return True
  msg = str(err)
  return any(s in msg for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                "OOM", "Failed to allocate", "Resource exhausted"))


# ----------------------------------------------------------------------------------------------
# Timing

@dataclasses.dataclass
class Timing:
  """Step times (seconds) of one measured configuration."""
  compile_s: float
  step_s: List[float]
  cpu_s: Optional[List[float]] = None  # process CPU seconds per step (all threads)

  @property
  def median_s(self) -> float:
    return statistics.median(self.step_s)

  @property
  def p90_s(self) -> float:
    return float(np.percentile(np.asarray(self.step_s), 90))

  @property
  def mean_s(self) -> float:
    return float(np.mean(self.step_s))


def compile_aot(fn: Callable, *args, donate_argnums=(), **jit_kwargs):
  """``jax.jit(fn).lower(*args).compile()``; returns (compiled, seconds)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums, **jit_kwargs).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def time_steps(call: Callable[[Any], Any], carry: Any, *, warmup: int = 2, min_steps: int = 3,
               max_steps: int = 50, min_time_s: float = 2.0, max_time_s: float = 60.0,
               cpu_out: Optional[List[float]] = None):
  """Times ``carry = call(carry)`` step by step, each ended by ``block_until_ready``.

  Runs ``warmup`` (>= 2) untimed steps, then timed steps until ``max_steps`` or until both
  ``min_steps`` and ``min_time_s`` are reached, never (after ``min_steps``) past ``max_time_s``.
  Returns (step_times, final carry). With ``cpu_out`` (a list), the process CPU time of each
  step (user + system, all threads) is appended to it: on a shared host whose cores other jobs
  also use, CPU seconds per step move much less than wall seconds.
  """
  warmup = max(2, warmup)
  for _ in range(warmup):
    carry = jax.block_until_ready(call(carry))
  times: List[float] = []
  t_start = time.perf_counter()
  while len(times) < max_steps:
    t0, c0 = time.perf_counter(), time.process_time()
    carry = jax.block_until_ready(call(carry))
    times.append(time.perf_counter() - t0)
    if cpu_out is not None:
      cpu_out.append(time.process_time() - c0)
    elapsed = time.perf_counter() - t_start
    if len(times) >= min_steps and (elapsed >= min_time_s or elapsed >= max_time_s):
      break
  return times, carry


def summarise(timing: Timing, *, examples: int, num_devices: int, flops: Optional[float],
              kind: str, dtype: str) -> Dict[str, Any]:
  """The standard figures for one measured configuration."""
  med = timing.median_s
  peak = peak_tflops(kind, dtype)
  out = {
      "compile_s": round(timing.compile_s, 4),
      "steps_timed": len(timing.step_s),
      "step_median_s": med,
      "step_p90_s": timing.p90_s,
      "steps_per_s": 1.0 / med,
      "examples_per_s": examples / med,
      "examples_per_s_per_device": examples / med / num_devices,
      "flops_per_step": flops,
      "tflops_per_s": (flops / med / 1e12) if flops else None,
      "peak_tflops_per_device": peak,
      "mfu": mfu(flops, med, num_devices, peak),
  }
  if timing.cpu_s:
    cpu = statistics.median(timing.cpu_s)
    out["cpu_s_per_step"] = cpu
    out["examples_per_cpu_s"] = examples / cpu if cpu > 0 else None
  return out


# ----------------------------------------------------------------------------------------------
# Output

def commit() -> Optional[str]:
  """The code's commit: ``$D2M_COMMIT`` (set by ``benchmarks/gpu_suite.sh`` from the packed
  ``COMMIT`` file where the copy has no ``.git``), else ``git rev-parse``; ``+dirty`` when the
  working tree differs from it."""
  env = os.environ.get("D2M_COMMIT")
  if env:
    return env
  import subprocess
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                          text=True, timeout=10)
    if head.returncode:
      return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def environment() -> Dict[str, Any]:
  """Device, versions, commit, date: stamped on every record."""
  d = jax.local_devices()[0]
  return {
      "commit": commit(),
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
      "device_kind": device_kind(d),
      "device_name": getattr(d, "device_kind", d.platform),
      "platform": d.platform,
      "num_devices": jax.local_device_count(),
      "jax": jax.__version__,
      "python": platform.python_version(),
      "host_cpus": os.cpu_count(),
      "host_malloc": host_memory.current() or "system",
  }


def add_host_malloc_flag(p) -> None:
  """``--host_malloc keep|system`` on an argparse parser (default: ``$D2M_HOST_MALLOC``, else
  keep); the benchmark applies it with ``host_memory.configure_or_exit`` before JAX starts."""
  p.add_argument("--host_malloc", default=None, choices=host_memory.MODES,
                 help="keep: freed host memory stays mapped for the next step (default, or "
                      "$D2M_HOST_MALLOC), system: glibc's defaults (d2m_jax/host_memory.py)")


def append_jsonl(path: Optional[str], record: Dict[str, Any]) -> None:
  """Appends one JSON line (no-op when ``path`` is None)."""
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  return str(x)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temp file in the same folder and ``os.replace``."""
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  files.write_text(path, text)


def fmt(x, digits: int = 3) -> str:
  """Compact number formatting for tables."""
  if x is None:
    return "-"
  if isinstance(x, str):
    return x
  if isinstance(x, (int, np.integer)):
    return f"{x:,}"
  ax = abs(x)
  if ax == 0:
    return "0"
  if ax >= 1000:
    return f"{x:,.0f}"
  if ax >= 1:
    return f"{x:.{digits}g}" if ax < 100 else f"{x:.0f}"
  return f"{x:.{digits}g}"


def markdown_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str],
                   headers: Optional[Sequence[str]] = None) -> str:
  """A GitHub markdown table of ``rows`` restricted to ``columns``."""
  headers = list(headers or columns)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  for r in rows:
    lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
  return "\n".join(lines)


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)
