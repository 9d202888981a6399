r"""Scaling model for data-parallel training: when do more devices stop paying?

For every model config (``configs/*.py``; missing or broken ones are reported and skipped) this
counts the gradient that data parallelism all-reduces each step (``jax.eval_shape`` of the task's
state: no compute, no memory), takes a single-device step time (measured here with ``--measure``,
or given with ``--step_ms=name=ms,...``, e.g. a GPU figure from ``benchmarks/train_step.py``),
and projects step time, throughput and parallel efficiency to 8, 64 and 256 devices at a fixed
per-device batch (weak scaling: the global batch grows with the device count):

  t(n) = t_1 + t_allreduce(n, bytes)         (no overlap of compute and communication: pessimistic)
  throughput(n) = n * b / t(n),  efficiency(n) = t_1 / t(n)

The all-reduce cost is the better of NCCL's two algorithms for a flat group of n devices over one
link type of per-device bandwidth ``bw`` and per-hop latency ``a``:

  ring: 2 (n-1)/n * bytes / bw + 2 (n-1) a         tree: 2 * bytes / bw + 2 log2(n) a

and, for GPUs beyond one 8-GPU node, hierarchically: reduce-scatter/all-gather inside the node over
NVLink (ring, 8 devices) plus an all-reduce of bytes/8 across the n/8 nodes over each GPU's own
InfiniBand NIC. Interconnect figures are nominal per-device unidirectional bandwidths from vendor
sheets (NVLink 4 / NVSwitch on H100: 450 GB/s; InfiniBand NDR200/NDR400: 25/50 GB/s per GPU with one
NIC per GPU; TPU v4 ICI: 6 links x ~45 GB/s, of which an all-reduce over the 3-D torus uses all)
derated to 80 % achieved bus bandwidth. They are estimates, not measurements on such clusters.

"Stops paying" is flagged where efficiency falls below 50 %: beyond that each added device buys
less than half a device of throughput. The break-even step time (t_1 = t_allreduce) is printed per
model and device count: a model whose single-device step is shorter than that spends more time
communicating than computing.

Usage:
  python benchmarks/scaling_model.py                                  # comm only, all configs
  python benchmarks/scaling_model.py --measure --batch=32            # + CPU step time measured here
  python benchmarks/scaling_model.py --step_ms=style_improved=4.1,d2m_decomp=35
  python benchmarks/scaling_model.py --configs=configs/style_paper.py --json=out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib.util
import json
import math
import os
import re
import sys
import time
import traceback

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:      # configs import each other as ``configs.<name>``
  sys.path.insert(0, REPO)

DEVICE_COUNTS = (1, 8, 64, 256)
EFFICIENCY = 0.8          # achieved / nominal bus bandwidth
GPUS_PER_NODE = 8
GB = 1e9


@dataclasses.dataclass(frozen=True)
class Link:
  name: str
  bandwidth: float        # bytes/s per device, one direction, nominal
  latency: float          # seconds per hop

  @property
  def bw(self) -> float:
    return self.bandwidth * EFFICIENCY


NVLINK = Link("NVLink4/NVSwitch (H100)", 450 * GB, 3e-6)
IB200 = Link("InfiniBand 200 Gb/s per GPU", 25 * GB, 6e-6)
IB400 = Link("InfiniBand 400 Gb/s per GPU", 50 * GB, 6e-6)
TPU_ICI = Link("TPU v4 ICI (3-D torus)", 6 * 45 * GB, 2e-6)


def flat_allreduce_s(n: int, nbytes: float, link: Link) -> float:
  """Seconds for an all-reduce of ``nbytes`` over ``n`` devices (best of ring and tree)."""
  if n <= 1 or nbytes <= 0:
    return 0.0
  ring = 2 * (n - 1) / n * nbytes / link.bw + 2 * (n - 1) * link.latency
  tree = 2 * nbytes / link.bw + 2 * math.log2(n) * link.latency
  return min(ring, tree)


def gpu_allreduce_s(n: int, nbytes: float, network: Link) -> float:
  """GPUs: NVLink inside an 8-GPU node, ``network`` (one NIC per GPU) between nodes."""
  if n <= GPUS_PER_NODE:
    return flat_allreduce_s(n, nbytes, NVLINK)
  nodes = n // GPUS_PER_NODE
  k = GPUS_PER_NODE
  # reduce-scatter + all-gather in the node (each half of a ring all-reduce) ...
  intra = 2 * (k - 1) / k * nbytes / NVLINK.bw + 2 * (k - 1) * NVLINK.latency
  # ... and each GPU all-reduces its 1/8 shard with its peers on the other nodes.
  return intra + flat_allreduce_s(nodes, nbytes / k, network)


SCENARIOS = {
    "gpu_ib200": ("H100 nodes of 8 (NVLink), IB 200 Gb/s/GPU between nodes",
                  lambda n, b: gpu_allreduce_s(n, b, IB200)),
    "gpu_ib400": ("H100 nodes of 8 (NVLink), IB 400 Gb/s/GPU between nodes",
                  lambda n, b: gpu_allreduce_s(n, b, IB400)),
    "tpu_v4": ("TPU v4 pod slice, ICI", lambda n, b: flat_allreduce_s(n, b, TPU_ICI)),
}


def project(step_s: float, nbytes: float, per_device_batch: int, allreduce) -> list:
  rows = []
  for n in DEVICE_COUNTS:
    comm = allreduce(n, nbytes)
    t = step_s + comm
    rows.append({"devices": n, "comm_ms": comm * 1e3, "step_ms": t * 1e3,
                 "examples_per_s": n * per_device_batch / t if t > 0 else None,
                 "efficiency": step_s / t if t > 0 else None})
  return rows


# ----------------------------------------------------------------------------------------------
# Model side: gradient bytes from the abstract state; optional single-device step timing.

_NOT_GRAD = re.compile(r"opt_state|ema|batch_stats|stats|\bmu\b|\bnu\b|momentum|rng|step",
                       re.IGNORECASE)
_CRITIC = re.compile(r"critic|disc|\bd_|\.d\b|_d\b|\['d'\]|\.D\b", re.IGNORECASE)


def _fake_stats(batch: dict) -> dict:
  """Normalisation stats shaped like ``pipeline.load_stats`` from a synthetic batch."""
  stats = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind != "f" or value.ndim < 2:
      continue
    flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
    stats[f"{key}_mean"] = flat.mean(0).astype(np.float32)
    stats[f"{key}_std"] = (flat.std(0) + 1e-3).astype(np.float32)
    stats[f"{key}_min"], stats[f"{key}_max"] = flat.min(0), flat.max(0)
  pose_key = "pose" if "pose" in batch else ("units" if "units" in batch else None)
  if pose_key:
    for s in ("mean", "std", "min", "max"):
      stats[f"pose_{s}"] = stats[f"{pose_key}_{s}"].astype(np.float32)
  return stats


def _find(config, key):
  """First value of ``key`` anywhere in a (nested) ConfigDict, else None."""
  try:
    items = config.items()
  except AttributeError:
    return None
  for k, v in items:
    if k == key:
      return v
    found = _find(v, key)
    if found is not None:
      return found
  return None


def load_config(path: str):
  spec = importlib.util.spec_from_file_location(f"_scaling_cfg_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def analyse(path: str, batch: int, measure: bool, steps: int) -> dict:
  import jax
  from d2m_jax.tasks import get_task

  config = load_config(path)
  config.data.batch_size = batch
  task = get_task(config)
  host_batch = task.synthetic_batch(batch, np.random.default_rng(0))
  stats = _fake_stats(host_batch)
  shapes = jax.eval_shape(lambda rng: task.init_state(rng, host_batch, stats),
                          jax.random.PRNGKey(0))
  grad_bytes = critic_bytes = state_bytes = 0
  grad_params = 0
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    name = jax.tree_util.keystr(keypath)
    nbytes = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    state_bytes += nbytes
    if (np.issubdtype(leaf.dtype, np.floating) and "params" in name.lower()
        and not _NOT_GRAD.search(name)):
      grad_bytes += nbytes
      grad_params += int(np.prod(leaf.shape))
      if _CRITIC.search(name):
        critic_bytes += nbytes
  n_critic = _find(config, "n_critic")
  reduced = grad_bytes + (int(n_critic) - 1) * critic_bytes if n_critic and critic_bytes else \
      grad_bytes
  out = {"config": os.path.basename(path)[:-3], "task": config.task, "per_device_batch": batch,
         "grad_params": grad_params, "grad_bytes": grad_bytes, "critic_bytes": critic_bytes,
         "n_critic": n_critic, "allreduce_bytes_per_step": reduced, "state_bytes": state_bytes}
  if measure:
    out.update(_measure(task, host_batch, stats, steps))
  return out


def _measure(task, host_batch, stats, steps: int) -> dict:
  import jax
  device = jax.devices()[0]
  state = jax.jit(lambda rng: task.init_state(rng, host_batch, stats))(jax.random.PRNGKey(0))
  batch = jax.device_put(host_batch, device)
  step = jax.jit(lambda s, b: task.train_step(s, b, None), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  return {"measured_step_ms": (time.perf_counter() - t0) / steps * 1e3,
          "compile_s": compile_s, "device": device.device_kind, "steps_timed": steps}


# ----------------------------------------------------------------------------------------------

def _fmt_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1000:
      return f"{n:.3g} {unit}"
    n /= 1000
  return f"{n:.3g} TB"


def report(results: list, step_ms: dict) -> list:
  """Prints one block per model: all-reduce ms (= break-even step time) and, given a step time,
  efficiency and examples/s at each device count and scenario."""
  tables = []
  counts = DEVICE_COUNTS[1:]
  for r in results:
    t1_ms = step_ms.get(r["config"], r.get("measured_step_ms"))
    source = ("given" if r["config"] in step_ms else
              f"measured, {r.get('device')}" if "measured_step_ms" in r else None)
    print(f"\n== {r['config']} (task {r['task']}): {r['grad_params']:,} trainable params, "
          f"all-reduce {_fmt_bytes(r['allreduce_bytes_per_step'])}/step"
          + (f" (critic x{r['n_critic']})" if r.get("critic_bytes") and r.get("n_critic") else "")
          + (f"; 1-device step {t1_ms:.2f} ms at batch {r['per_device_batch']} ({source})"
             if t1_ms is not None else "; no step time (--measure / --step_ms): comm only"))
    head = "".join(f" | n={n:<3} allred.ms" + ("   eff  examples/s" if t1_ms else "")
                   for n in counts)
    print(f"   {'scenario':<10}{head}")
    for key, (desc, allreduce) in SCENARIOS.items():
      rows = project((t1_ms or 0) / 1e3, r["allreduce_bytes_per_step"], r["per_device_batch"],
                     allreduce)[1:]
      line, stop = f"   {key:<10}", None
      for row in rows:
        line += f" | {row['comm_ms']:>15.3f}"
        if t1_ms:
          line += f" {row['efficiency']:>5.0%} {row['examples_per_s']:>11.0f}"
          if row["efficiency"] < 0.5 and stop is None:
            stop = row["devices"]
      if t1_ms:
        line += ("   stops paying (eff < 50%) at n=" + str(stop)) if stop else "   pays to n=256"
      print(line)
      tables.append({"config": r["config"], "scenario": key, "description": desc,
                     "step_ms_1": t1_ms, "rows": rows, "stops_paying_at": stop})
  return tables


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="configs/*.py", help="glob or comma list of configs")
  parser.add_argument("--batch", type=int, default=32, help="per-device batch")
  parser.add_argument("--measure", action="store_true",
                      help="time the step on this machine's first device")
  parser.add_argument("--steps", type=int, default=10, help="timed steps with --measure")
  parser.add_argument("--step_ms", default="",
                      help="given single-device step times: name=ms,name=ms (config names)")
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args(argv)

  paths = []
  for pattern in args.configs.split(","):
    paths.extend(sorted(glob.glob(pattern)))
  step_ms = {}
  for item in filter(None, args.step_ms.split(",")):
    name, _, value = item.partition("=")
    step_ms[name.strip()] = float(value)
  if not paths:
    print(f"no configs match {args.configs!r}: nothing to model", file=sys.stderr)
    return 1
  results, skipped = [], []
  for path in paths:
    try:
      results.append(analyse(path, args.batch, args.measure, args.steps))
    except Exception as e:  # pylint: disable=broad-except  # models land independently
      skipped.append((path, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
      if os.environ.get("SCALING_DEBUG"):
        traceback.print_exc()
  print(f"Scaling model: weak scaling, per-device batch {args.batch}, float32 gradients, no "
        f"compute/communication overlap, links at {EFFICIENCY:.0%} of nominal.")
  for key, (desc, _) in SCENARIOS.items():
    print(f"  {key}: {desc}")
  tables = report(results, step_ms)
  for path, why in skipped:
    print(f"\nskipped {path}: {why}")
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"models": results, "tables": tables, "skipped": skipped}, f, indent=1)
    os.replace(tmp, args.json)
  return 0


if __name__ == "__main__":
  sys.exit(main())
