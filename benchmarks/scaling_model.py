r"""Scaling model for data-parallel training: when do more devices stop paying?

For every model config (``configs/*.py``; missing or broken ones are reported and skipped) this
counts the gradient that data parallelism all-reduces each step (``jax.eval_shape`` of the task's
state: no compute, no memory; a WGAN critic's gradient counts ``n_critic`` times, one all-reduce
per critic update), takes a single-device step time model ``t(b) = fixed + per_example * b``
(measured here at batch b and b/4 with ``--measure``, or given with ``--step_ms``, e.g. GPU figures
from ``benchmarks/train_step.py``) and projects to 8, 64 and 256 devices:

  weak scaling (per-device batch b fixed, global batch n*b):   t_n = t(b) + t_allreduce(n)
  strong scaling (global batch G fixed, G/n per device):       t_n = t(G/n) + t_allreduce(n)
  efficiency = throughput(n) / (n * throughput(1))             (no compute/communication overlap)

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
less than half a device of throughput. Without a step time the all-reduce time alone is printed:
it is the break-even step time (a step shorter than that spends more time communicating than
computing).

Usage:
  python benchmarks/scaling_model.py                                  # comm only, all configs
  python benchmarks/scaling_model.py --measure --batch=32 --configs=configs/style_paper.py
  python benchmarks/scaling_model.py --step_ms=style_improved=4.1@32/9.0@256 --global_batch=256
  python benchmarks/scaling_model.py --json=scaling.json
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
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
  from d2m_jax import configs  # pylint: disable=import-outside-toplevel
  return configs.load(path)


def analyse(path: str, batch: int, measure: bool, steps: int) -> dict:
  import jax
  from d2m_jax.tasks import get_task
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel

  config = load_config(path)
  config.data.batch_size = batch
  task = get_task(config)
  host_batch = task.synthetic_batch(batch, np.random.default_rng(0))
  stats = _fake_stats(host_batch)
  shapes = state_lib.abstract_state(task, jax.random.PRNGKey(0), host_batch, stats)
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
  out["global_batch"] = int(getattr(load_config(path).data, "batch_size", batch))
  if measure:
    points = []
    for b in sorted({max(1, batch // 4), batch}):
      hb = host_batch if b == batch else task.synthetic_batch(b, np.random.default_rng(0))
      timing = _measure(task, hb, stats, steps)
      points.append((b, timing["step_ms"]))
      out["device"], out["compile_s"] = timing["device"], timing["compile_s"]
    out["measured"] = points
  return out


def _measure(task, host_batch, stats, steps: int) -> dict:
  import jax
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  state = state_lib.build_state(task, jax.random.PRNGKey(0), host_batch, stats)
  batch = jax.device_put(host_batch, device)
  step = jax.jit(lambda s, b: task.train_step(s, b, None), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(2):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  return {"step_ms": (time.perf_counter() - t0) / steps * 1e3, "compile_s": compile_s,
          "device": device.device_kind}


@dataclasses.dataclass(frozen=True)
class StepTime:
  """Single-device step time t(b) = fixed + per_example * b (ms), from one or two measurements.

  With one point the fixed part is unknown and taken as 0 (optimistic for strong scaling: a
  recurrent step has a serial floor that smaller per-device batches do not remove)."""
  fixed_ms: float
  per_example_ms: float
  source: str

  @classmethod
  def from_points(cls, points, source):
    points = sorted(points)
    if len(points) == 1 or points[0][0] == points[-1][0]:
      b, t = points[-1]
      return cls(0.0, t / b, source + f", {t:.3g} ms at batch {b}; fixed part unknown (0)")
    (b0, t0), (b1, t1) = points[0], points[-1]
    slope = max(0.0, (t1 - t0) / (b1 - b0))
    fixed = max(0.0, t1 - slope * b1)
    return cls(fixed, slope, source + f", {t0:.3g} ms at batch {b0}, {t1:.3g} ms at batch {b1}")

  def __call__(self, b: float) -> float:
    return self.fixed_ms + self.per_example_ms * b


def parse_step_ms(text: str) -> dict:
  """``name=ms@batch[/ms@batch],name=...`` -> {name: [(batch, ms), ...]}."""
  out = {}
  for item in filter(None, (t.strip() for t in text.split(","))):
    name, _, spec = item.partition("=")
    points = []
    for part in spec.split("/"):
      ms, _, b = part.partition("@")
      if not b:
        raise SystemExit(f"--step_ms {item!r}: expected name=MS@BATCH[/MS@BATCH]")
      points.append((int(b), float(ms)))
    out[name.strip()] = points
  return out


# ----------------------------------------------------------------------------------------------

def _fmt_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1000:
      return f"{n:.3g} {unit}"
    n /= 1000
  return f"{n:.3g} TB"


def report(results: list, given: dict, global_batch_override=None) -> list:
  """Prints per model: all-reduce ms per device count and scenario; with a step time, weak
  scaling (fixed per-device batch) and strong scaling (fixed global batch) efficiency."""
  tables = []
  counts = DEVICE_COUNTS[1:]
  for r in results:
    points = given.get(r["config"]) or r.get("measured")
    src = "given" if r["config"] in given else f"measured on {r.get('device')}"
    t = StepTime.from_points(points, src) if points else None
    print(f"\n== {r['config']} (task {r['task']}): {r['grad_params']:,} trainable params, "
          f"all-reduce {_fmt_bytes(r['allreduce_bytes_per_step'])}/step"
          + (f" (critic x{r['n_critic']})" if r.get("critic_bytes") and r.get("n_critic") else ""))
    if t is None:
      print("   no step time (--measure / --step_ms): all-reduce ms only "
            "(= the step time below which communication dominates)")
    else:
      print(f"   step time t(b) = {t.fixed_ms:.3g} + {t.per_example_ms:.3g}*b ms ({t.source})")
    b = r["per_device_batch"]
    G = global_batch_override or r["global_batch"]
    head = "".join(f" | n={n:<4}" + (" allred.ms" if t is None else
                                    "  ms  weak  strong") for n in counts)
    print(f"   {'scenario':<10}{head}" + (f"   (weak: batch {b}/device; strong: global {G})"
                                          if t else ""))
    for key, (desc, allreduce) in SCENARIOS.items():
      line, rows, weak_stop, strong_stop = f"   {key:<10}", [], None, None
      t1_weak = t(b) if t else None
      t1_strong = t(G) if t else None
      for n in counts:
        comm = allreduce(n, r["allreduce_bytes_per_step"]) * 1e3
        row = {"devices": n, "allreduce_ms": comm}
        if t is None:
          line += f" | {comm:>14.3f}"
        else:
          weak = t1_weak / (t1_weak + comm)
          row["weak_efficiency"] = weak
          row["weak_examples_per_s"] = n * b / (t1_weak + comm) * 1e3
          if G >= n:
            ts = t(G / n) + comm
            strong = t1_strong / ts / n
            row["strong_efficiency"], row["strong_examples_per_s"] = strong, G / ts * 1e3
            strong_txt = f"{strong:>6.0%}"
          else:
            strong, strong_txt = None, "   n/a"
          line += f" | {comm:>7.3f} {weak:>5.0%} {strong_txt}"
          if weak < 0.5 and weak_stop is None:
            weak_stop = n
          if (strong is None or strong < 0.5) and strong_stop is None:
            strong_stop = n
        rows.append(row)
      if t is not None:
        line += f"   eff<50% from n={weak_stop or '-'} (weak), n={strong_stop or '-'} (strong)"
      print(line)
      tables.append({"config": r["config"], "scenario": key, "description": desc,
                     "per_device_batch": b, "global_batch": G, "rows": rows,
                     "step_time": None if t is None else dataclasses.asdict(t),
                     "weak_stops_paying_at": weak_stop, "strong_stops_paying_at": strong_stop})
  return tables


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="configs/*.py", help="glob or comma list of configs")
  parser.add_argument("--batch", type=int, default=32, help="per-device batch (weak scaling)")
  parser.add_argument("--global_batch", type=int, default=None,
                      help="global batch for strong scaling (default: each config's)")
  parser.add_argument("--measure", action="store_true",
                      help="time the step here at batch and batch/4 (first device)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps with --measure")
  parser.add_argument("--step_ms", default="",
                      help="given step times: name=MS@BATCH[/MS@BATCH],... (config names)")
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args(argv)

  paths = []
  for pattern in args.configs.split(","):
    paths.extend(sorted(glob.glob(pattern)))
  given = parse_step_ms(args.step_ms)
  if not paths:
    print(f"no configs match {args.configs!r}: nothing to model", file=sys.stderr)
    return 1
  print(f"Scaling model: float32 gradients all-reduced once per step (critic: n_critic times), "
        f"no compute/communication overlap, links at {EFFICIENCY:.0%} of nominal. "
        f"weak = efficiency at a fixed per-device batch, strong = at a fixed global batch.")
  for key, (desc, _) in SCENARIOS.items():
    print(f"  {key}: {desc}")
  results, skipped, tables = [], [], []
  for path in paths:   # reported one by one (measuring a big model on a CPU takes minutes)
    try:
      results.append(analyse(path, args.batch, args.measure, args.steps))
    except Exception as e:  # pylint: disable=broad-except  # models land independently
      skipped.append((path, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
      if os.environ.get("SCALING_DEBUG"):
        traceback.print_exc()
      continue
    tables.extend(report(results[-1:], given, args.global_batch))
    sys.stdout.flush()
  for path, why in skipped:
    print(f"\nskipped {path}: {why}")
  if args.json:
    from d2m_jax import files  # pylint: disable=import-outside-toplevel
    files.write_json(args.json, {"models": results, "tables": tables, "skipped": skipped},
                     indent=1, sort_keys=False)
  return 0


if __name__ == "__main__":
  sys.exit(main())
