r"""Roofline model of the training steps, calibrated on the recorded H200 figures.

    python -m benchmarks.roofline                          # the table of docs/performance.md
    python -m benchmarks.roofline --models=d2m_decomposition --batches=256 --json=/tmp/r.json

No accelerator needed: each train step is traced (``jax.make_jaxpr``, abstract shapes, nothing
runs) as a GPU/TPU would trace it (:func:`d2m_jax.target.targeting`), per ``rnn_impl``, and the
jaxpr is walked once:

* ``F``: matmul + convolution FLOPs (scan bodies times their trip count; a Pallas kernel's body
  times its grid). XLA's ``cost_analysis()`` counts a while body once, so the jaxpr is the
  count (benchmarks/common.py says why); it is XLA's figure when there is no loop.
* ``Q``: bytes the matmuls/convolutions read and write (operands + result, at their dtypes, loop
  bodies times their trip count) plus reading and writing the whole state once (the update).
  Unfused: an upper estimate of HBM traffic, a lower one of on-chip traffic.
* ``S``: sequential steps, by kind: ``loop`` (a ``lax.scan`` run as a device loop: one iteration
  per step), ``unrolled`` (a scan with ``unroll > 1``: no loop, still one dependent step after
  another), ``pallas`` (steps inside the fused GRU kernel). The recurrence is the bound here: a
  step of a batch-256 GRU-1024 is ~1.6 GFLOP, ~3 us of an H200's tensor cores, while launching
  its kernels and, for ``loop``, the while loop's per-iteration predicate round trip cost more.

Model, per device: ``t = max(F / peak, Q / HBM) + sum_kind S_kind * tau_kind``. The two
per-step costs of a GPU are fitted on two recorded H200 figures (decomposition float32 with the
scan -> ``tau_loop``; decomposition bfloat16 fully unrolled -> ``tau_unrolled``); the other
recorded figures are held out and printed as predicted/measured, so the model's error is known.
``tau_pallas`` = 0 (no measurement: the kernel's steps cost only their roofline share), and the
TPU rows reuse the GPU ``tau_unrolled`` for every kind (XLA:TPU runs loops on the chip; not
measured): both are marked. MFU ceiling = ``F / (t * peak)``: no implementation of this program
on that device can do better unless the per-step costs fall.

Peaks (dense, per chip; float32 matmuls on GPUs as TF32, on TPUs as bf16 passes -- what JAX's
default precision runs): NVIDIA H100 SXM datasheet (989 TFLOP/s bf16, 495 TF32, HBM3 3.35 TB/s);
NVIDIA H200 datasheet (same compute, HBM3e 4.8 TB/s); Google Cloud TPU v5e (197 TFLOP/s bf16,
819 GB/s) and TPU v5p (459 TFLOP/s bf16, 2765 GB/s) system-architecture pages. The same figures
as :data:`benchmarks.common.PEAK_TFLOPS` plus memory bandwidth.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Dict, List, Optional, Sequence

import jax
import jax.extend.core as jex_core
import numpy as np

from benchmarks import common


@dataclasses.dataclass(frozen=True)
class Device:
  name: str
  backend: str              # what d2m_jax.target traces for: gpu | tpu
  peak_tflops: Dict[str, float]
  hbm_gb_s: float


DEVICES = {
    "h100": Device("H100 SXM", "gpu", common.PEAK_TFLOPS["h100"], 3350.0),
    "h200": Device("H200 SXM", "gpu", common.PEAK_TFLOPS["h200"], 4800.0),
    "tpu-v5e": Device("TPU v5e", "tpu", common.PEAK_TFLOPS["tpu-v5e"], 819.0),
    "tpu-v5p": Device("TPU v5p", "tpu", common.PEAK_TFLOPS["tpu-v5p"], 2765.0),
}

# The recorded H200 figures (docs/performance.md, "GPU figures", commit 72689d6 and issue 13),
# ms per training step: (model, dtype, batch, rnn_impl) -> ms. Before rnn_impl existed every GRU
# was a plain scan, i.e. today's rnn_impl='scan'.
MEASURED_H200 = {
    ("d2m_decomposition", "float32", 256, "scan"): 19.8,
    ("d2m_decomposition", "bfloat16", 256, "scan"): 15.8,
    ("d2m_decomposition", "bfloat16", 256, "unrolled"): 10.4,
    ("d2m_composition", "float32", 256, "scan"): 18.2,
    ("style_improved", "float32", 256, "scan"): 9.03,
    ("wgan_audio", "float32", 64, "scan"): 396.0,
}
FIT_POINTS = {"loop": ("d2m_decomposition", "float32", 256, "scan"),
              "unrolled": ("d2m_decomposition", "bfloat16", 256, "unrolled"),
              "seq_slowdown": ("style_improved", "float32", 256, "scan")}

MODELS = ("d2m_decomposition", "d2m_composition", "style_paper", "style_improved", "wgan_audio",
          "wgan_seq", "wgan_pose")
BATCHES = (256, 1024, 4096)
IMPLS = ("scan", "unrolled", "pallas")


# ----------------------------------------------------------------------------------------------
# The jaxpr walk

@dataclasses.dataclass
class Counts:
  flops: float = 0.0
  bytes: float = 0.0
  seq: Dict[str, float] = dataclasses.field(
      default_factory=lambda: {"loop": 0.0, "unrolled": 0.0, "pallas": 0.0})
  seq_flops: float = 0.0    # of flops: inside sequential bodies (the recurrent matmuls)
  while_loops: int = 0      # trip count unknown: body counted once


def _nbytes(aval) -> float:
  return float(math.prod(aval.shape)) * np.dtype(aval.dtype).itemsize


def _subs(params):
  for v in params.values():
    for x in (v if isinstance(v, (list, tuple)) else [v]):
      if isinstance(x, jex_core.ClosedJaxpr):
        yield x.jaxpr
      elif isinstance(x, jex_core.Jaxpr):
        yield x


def walk(jaxpr, acc: Counts, fmult: float = 1.0, smult: float = 1.0,
         ctx: Optional[str] = None) -> Counts:
  """Adds ``jaxpr``'s FLOPs/bytes (times ``fmult``) and sequential steps (times ``smult``)."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in ("dot_general", "conv_general_dilated"):
      f = (common._dot_general_flops(eqn) if name == "dot_general"  # pylint: disable=protected-access
           else common._conv_flops(eqn))  # pylint: disable=protected-access
      acc.flops += fmult * f
      if smult > 1 or ctx == "pallas":
        acc.seq_flops += fmult * f
      acc.bytes += fmult * sum(_nbytes(v.aval) for v in list(eqn.invars[:2]) + eqn.outvars)
    elif name == "scan":
      n = eqn.params["length"]
      unroll = eqn.params.get("unroll", 1)
      unroll = n if unroll is True else int(unroll or 1)
      kind = ctx or ("unrolled" if unroll > 1 else "loop")
      acc.seq[kind] += smult * n
      walk(eqn.params["jaxpr"].jaxpr, acc, fmult * n, smult * n, ctx)
    elif name == "while":
      acc.while_loops += 1
      walk(eqn.params["body_jaxpr"].jaxpr, acc, fmult, smult, ctx)
    elif name == "cond":
      best = None
      for br in eqn.params["branches"]:
        c = walk(br.jaxpr, Counts())
        best = c if best is None or c.flops > best.flops else best
      acc.flops += fmult * best.flops
      acc.seq_flops += fmult * best.seq_flops
      acc.bytes += fmult * best.bytes
      for k, v in best.seq.items():
        acc.seq[k] += smult * v
    elif name == "pallas_call":
      grid = eqn.params["grid_mapping"].grid
      g = float(math.prod(int(d) for d in grid)) if grid else 1.0
      acc.bytes += fmult * sum(_nbytes(v.aval) for v in list(eqn.invars) + eqn.outvars)
      kernel = Counts()
      walk(eqn.params["jaxpr"], kernel, 1.0, 1.0, "pallas")
      acc.flops += fmult * g * kernel.flops      # programs of the grid run in parallel
      acc.seq_flops += fmult * g * kernel.flops
      for k, v in kernel.seq.items():
        acc.seq[k] += smult * v
    else:
      for sub in _subs(eqn.params):
        walk(sub, acc, fmult, smult, ctx)
  return acc


# ----------------------------------------------------------------------------------------------
# Counting one train step

def count_step(model: str, dtype: str, batch: int, impl: str, backend: str, *, config=None,
               host=None) -> Dict:
  """Traces ``model``'s train step at ``batch`` for ``backend`` and counts it; ``config`` (a
  ConfigDict, copied) replaces ``configs/<model>.py`` and ``host`` (a host batch of ``batch``
  examples) the task's synthetic batch, e.g. for a model at another size."""
  from benchmarks import train_step as ts  # pylint: disable=import-outside-toplevel
  from d2m_jax import target  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  cfg = ts.load_config(model) if config is None else config.copy_and_resolve_references()
  cfg.dtype = dtype
  if "rnn_impl" in cfg.model:
    cfg.model.rnn_impl = impl
  if "conv_impl" in cfg.model:
    cfg.model.conv_impl = "xla"
  cfg.data.batch_size = batch
  task = get_task(cfg)
  if host is None:
    host = task.synthetic_batch(batch, np.random.default_rng(0))
  stats = ts.synthetic_stats(host)
  from d2m_jax.train import state as train_state  # pylint: disable=import-outside-toplevel
  task.prepare_host(host, stats)
  with target.targeting(backend):
    state = train_state.abstract_state(task, jax.random.PRNGKey(0), host, stats)
    closed = jax.make_jaxpr(lambda s, b: task.train_step(s, b))(state, host)
  acc = walk(closed.jaxpr, Counts())
  state_bytes = sum(_nbytes(x) for x in jax.tree.leaves(state))
  del closed
  jax.clear_caches()          # every trace is of a new task: keep memory flat over the sweep
  acc.bytes += 2 * state_bytes
  return {"model": model, "dtype": dtype, "batch": batch, "rnn_impl": impl, "backend": backend,
          "flops": acc.flops, "seq_flops": acc.seq_flops, "bytes": acc.bytes,
          "seq": dict(acc.seq),
          "while_loops": acc.while_loops,
          "examples": int(next(iter(host.values())).shape[0])}


def roof_s(c: Dict, dev: Device) -> float:
  peak = dev.peak_tflops[c["dtype"]] * 1e12
  return max(c["flops"] / peak, c["bytes"] / (dev.hbm_gb_s * 1e9))


def _terms(c: Dict, dev: Device) -> List[float]:
  """The model's regressors: loop steps, unrolled steps, sequential FLOPs / peak (seconds)."""
  peak = dev.peak_tflops[c["dtype"]] * 1e12
  return [c["seq"]["loop"], c["seq"]["unrolled"], c["seq_flops"] / peak]


def predict_s(c: Dict, dev: Device, tau: Dict[str, float]) -> float:
  a = _terms(c, dev)
  return (roof_s(c, dev) + a[0] * tau["loop"] + a[1] * tau["unrolled"]
          + a[2] * tau["seq_slowdown"])


def calibrate(counts: Dict[tuple, Dict]) -> Dict[str, float]:
  """``tau_loop``, ``tau_unrolled`` (seconds per sequential step) and ``seq_slowdown`` (how
  many times its roofline share a recurrent matmul takes: small dependent GEMMs run far below
  peak) solved exactly on the three :data:`FIT_POINTS`; the rest are held out."""
  dev = DEVICES["h200"]
  A = np.array([_terms(counts[k], dev) for k in FIT_POINTS.values()])
  y = np.array([MEASURED_H200[k] * 1e-3 - roof_s(counts[k], dev) for k in FIT_POINTS.values()])
  x, *_ = np.linalg.lstsq(A, y, rcond=None)
  x = np.maximum(x, 0.0)
  return {"loop": float(x[0]), "unrolled": float(x[1]), "seq_slowdown": float(x[2]),
          "pallas": 0.0}


def device_tau(dev: Device, tau_gpu: Dict[str, float]) -> Dict[str, float]:
  if dev.backend == "gpu":
    return tau_gpu
  return dict(tau_gpu, loop=tau_gpu["unrolled"])


# ----------------------------------------------------------------------------------------------

def _wgan_batch(model: str, batch: int) -> int:
  if not model.startswith("wgan"):
    return batch
  from benchmarks import train_step as ts  # pylint: disable=import-outside-toplevel
  n = int(ts.load_config(model).model.get("n_critic", 1))
  return max(n, batch // n * n)


def run(models: Sequence[str], batches: Sequence[int], impls: Sequence[str],
        devices: Sequence[str], dtypes: Sequence[str] = ("bfloat16", "float32"),
        log=print, partial: Optional[str] = None) -> Dict:
  counts: Dict[tuple, Dict] = {}

  def get(model, dtype, batch, impl, backend):
    # dtype, rnn_impl and conv_impl are explicit, so only the Pallas fallback depends on the
    # backend: one trace serves GPU and TPU for scan/unrolled
    key = (model, dtype, batch, impl, backend if impl == "pallas" else "any")
    if key not in counts:
      counts[key] = count_step(model, dtype, batch, impl, backend)
    return counts[key]

  meas = {k: get(*k, "gpu") for k in MEASURED_H200}
  tau = calibrate({k: v for k, v in meas.items()})
  h200 = DEVICES["h200"]
  calib = []
  for k, ms in MEASURED_H200.items():
    pred = predict_s(meas[k], h200, tau) * 1e3
    calib.append({"model": k[0], "dtype": k[1], "batch": k[2], "rnn_impl": k[3],
                  "measured_ms": ms, "predicted_ms": pred, "ratio": pred / ms,
                  "fitted": k in FIT_POINTS.values()})
  rows = []
  for model in models:
    for impl in impls:
      for b in batches:
        for dtype in dtypes:
          for dname in devices:
            dev = DEVICES[dname]
            try:
              c = get(model, dtype, _wgan_batch(model, b), impl, dev.backend)
            except Exception as e:  # a model that cannot be traced is one row, not the table
              rows.append({"model": model, "rnn_impl": impl, "batch": b, "dtype": dtype,
                           "device": dname, "error": f"{type(e).__name__}: {e}"[:200]})
              continue
            t = predict_s(c, dev, device_tau(dev, tau))
            peak = dev.peak_tflops[dtype] * 1e12
            rows.append({"model": model, "rnn_impl": impl, "batch": c["batch"], "dtype": dtype,
                         "device": dname, "gflop": c["flops"] / 1e9, "gbytes": c["bytes"] / 1e9,
                         "seq_steps": sum(c["seq"].values()), "seq": c["seq"],
                         "roof_ms": roof_s(c, dev) * 1e3, "step_ms": t * 1e3,
                         "examples_per_s": c["examples"] / t,
                         "mfu_ceiling": c["flops"] / (t * peak)})
          log(f"[roofline] {model} {impl} B={b} done")
          if partial:                      # long runs: what is done survives a kill
            common.atomic_write(partial, json.dumps(
                {"tau_s": tau, "calibration": calib, "rows": rows}, default=float))
  return {"tau_s": tau, "calibration": calib, "rows": rows}


def report(res: Dict) -> str:
  tau = res["tau_s"]
  lines = ["Per-step costs fitted on the H200: "
           f"tau_loop = {tau['loop'] * 1e6:.2f} us, tau_unrolled = {tau['unrolled'] * 1e6:.2f} us "
           f"per sequential step, recurrent matmuls at 1/{1 + tau['seq_slowdown']:.1f} of peak "
           "(pallas steps: no per-step term, not measured; TPU rows: tau_unrolled for loops too, "
           "not measured).",
           "", "| recorded H200 figure | measured ms | predicted ms | predicted/measured |",
           "|---|---|---|---|"]
  for c in res["calibration"]:
    fit = " (fitted)" if c["fitted"] else ""
    lines.append(f"| {c['model']} {c['dtype']} B={c['batch']} {c['rnn_impl']}{fit} | "
                 f"{c['measured_ms']:.2f} | {c['predicted_ms']:.2f} | {c['ratio']:.2f} |")
  return "\n".join(lines) + "\n\n" + wide_table(res["rows"])


def wide_table(rows: List[Dict]) -> str:
  """One line per (model, rnn_impl, dtype, batch): GFLOP, sequential steps, then per device the
  lower-bound ms and the MFU ceiling."""
  devices = list(dict.fromkeys(r["device"] for r in rows))
  head = ("| model | rnn_impl | dtype | B | GFLOP | seq. steps | "
          + " | ".join(f"{DEVICES[d].name} ms (MFU max)" for d in devices) + " |")
  lines = [head, "|" + "---|" * (6 + len(devices))]
  groups: Dict[tuple, Dict[str, Dict]] = {}
  for r in rows:
    groups.setdefault((r["model"], r["rnn_impl"], r["dtype"], r["batch"]), {})[r["device"]] = r
  for (model, impl, dtype, b), by in groups.items():
    first = next(iter(by.values()))
    if "error" in first:
      lines.append(f"| {model} | {impl} | {dtype} | {b} | error: {first['error']} |")
      continue
    cells = [f"{by[d]['step_ms']:.2f} ({100 * by[d]['mfu_ceiling']:.0f}%)" if d in by and
             "error" not in by[d] else "-" for d in devices]
    lines.append(f"| {model} | {impl} | {dtype} | {b} | {first['gflop']:.0f} | "
                 f"{first['seq_steps']:.0f} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--batches", default=",".join(map(str, BATCHES)))
  p.add_argument("--impls", default=",".join(IMPLS))
  p.add_argument("--devices", default=",".join(DEVICES))
  p.add_argument("--dtypes", default="bfloat16,float32")
  p.add_argument("--json", default=None, help="write every figure here")
  a = p.parse_args(argv)
  unknown = [d for d in a.devices.split(",") if d not in DEVICES]
  if unknown:
    print(f"roofline: unknown device(s) {unknown}; expected {sorted(DEVICES)}", file=sys.stderr)
    return 2
  res = run(a.models.split(","), [int(b) for b in a.batches.split(",")], a.impls.split(","),
            a.devices.split(","), a.dtypes.split(","),
            log=lambda s: print(s, file=sys.stderr, flush=True), partial=a.json)
  if a.json:
    common.atomic_write(a.json, json.dumps(res, indent=1, default=float))
  print(report(res))
  return 0


if __name__ == "__main__":
  sys.exit(main())
