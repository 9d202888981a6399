"""JAX vs the PyTorch peer, in one process, on the same device, alternating.

    PYTHONPATH=/work/torch_site .venv/bin/python -m benchmarks.compare --model=d2m_decomposition \
        --batch=32 --torch_threads=1,2 [--torch_compile] [--out=results.jsonl]

Both sides train on a fixed synthetic batch already on the device: JAX through the task's
``train_step`` (jitted, state donated; compile excluded), PyTorch through
``benchmarks.torch_reference`` (eager; ``torch.compile`` as an extra row with
``--torch_compile``). Rounds alternate JAX, torch (each thread count), JAX, ... so that a noisy,
shared machine slows both alike; every step is timed on its own (JAX: ``block_until_ready``;
torch: synchronous on CPU, ``torch.cuda.synchronize`` on GPU) and the medians over all rounds
are compared. The ratio printed is JAX examples/s / PyTorch examples/s.

torch threads: ``torch.set_num_threads(n)`` per row. XLA:CPU uses its own thread pool (all
cores); while one framework runs the other is idle.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Dict, List

import jax

from benchmarks import common
from benchmarks import train_step as ts


def _torch_device():
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def _time_torch(peer, steps: int, device: str, cpu: List[float]) -> List[float]:
  import torch
  out = []
  for _ in range(steps):
    t0, c0 = time.perf_counter(), time.process_time()
    peer.step()
    if device == "cuda":
      torch.cuda.synchronize()
    out.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return out


def compare(model: str, batch: int, *, dtype: str = "float32", rounds: int = 3,
            steps: int = 3, torch_threads=(1, 2), torch_compile: bool = False,
            overrides=None, out=None) -> List[Dict[str, Any]]:
  import torch
  from benchmarks import torch_reference

  env = common.environment()
  device = _torch_device()
  # --- JAX side
  bench = ts.Bench(model, dtype, overrides=overrides)
  task, state, jbatch, examples = bench.setup(batch)
  fn = lambda s, b: task.train_step(s, b)  # noqa: E731
  compiled, compile_s = common.compile_aot(fn, state, jbatch, donate_argnums=(0,))
  holder = [state]

  def jax_steps(n, cpu=None):
    ts_ = []
    for _ in range(n):
      t0, c0 = time.perf_counter(), time.process_time()
      holder[0] = jax.block_until_ready(compiled(holder[0], jbatch)[0])
      ts_.append(time.perf_counter() - t0)
      if cpu is not None:
        cpu.append(time.process_time() - c0)
    return ts_

  jax_steps(2)  # warm-up
  # --- torch side
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  pose = bench.config.model.get("pose_size", 28) if "model" in bench.config else 28
  kw = {"pose": pose} if model.startswith("d2m_") else {}
  peers = {}
  for th in torch_threads:
    torch.set_num_threads(th)
    peers[f"torch eager, {th} thr"] = (th, torch_reference.build(
        model, batch, device=device, dtype=tdtype, **kw))
  if torch_compile:
    th = torch_threads[0]
    torch.set_num_threads(th)
    try:
      p = torch_reference.build(model, batch, device=device, dtype=tdtype, compile=True, **kw)
      t0 = time.perf_counter()
      p.step()
      common.log(f"[compare] torch.compile first step {time.perf_counter() - t0:.1f} s")
      peers[f"torch.compile, {th} thr"] = (th, p)
    except Exception as e:  # noqa: BLE001  (inductor needs a C++ toolchain on CPU)
      common.log(f"[compare] torch.compile failed: {type(e).__name__}: {str(e)[:200]}")
  for name, (th, p) in peers.items():
    torch.set_num_threads(th)
    for _ in range(2):
      p.step()  # warm-up
  if any(p.examples != examples for _, p in peers.values()):
    common.log(f"[compare] WARNING: examples per step differ: JAX {examples}, torch "
               f"{[p.examples for _, p in peers.values()]}")
  # --- alternating rounds
  times: Dict[str, List[float]] = {"jax": []}
  times.update({k: [] for k in peers})
  cpu: Dict[str, List[float]] = {k: [] for k in times}
  for r in range(rounds):
    times["jax"] += jax_steps(steps, cpu["jax"])
    for name, (th, p) in peers.items():
      torch.set_num_threads(th)
      times[name] += _time_torch(p, steps, device, cpu[name])
    common.log(f"[compare] round {r + 1}/{rounds}: " + ", ".join(
        f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items()))
  jax_med = statistics.median(times["jax"])
  records = []
  base = {"bench": "compare", "model": model, "batch": batch, "dtype": dtype, **env,
          "torch": torch.__version__, "torch_device": device,
          "overrides": dict(ts.BENCH_OVERRIDES.get(model, {}), **(overrides or {}))}
  jax_cpu = statistics.median(cpu["jax"])
  rec = {**base, "framework": "jax (jit)", "compile_s": compile_s, "step_median_s": jax_med,
         "step_times_s": times["jax"], "cpu_s_per_step": jax_cpu,
         "examples_per_s": examples / jax_med, "examples_per_step": examples, "ratio": 1.0,
         "cpu_ratio": 1.0}
  records.append(rec)
  for name, (th, p) in peers.items():
    med = statistics.median(times[name])
    c = statistics.median(cpu[name])
    records.append({**base, "framework": name, "torch_threads": th, "step_median_s": med,
                    "step_times_s": times[name], "cpu_s_per_step": c,
                    "examples_per_step": p.examples, "examples_per_s": p.examples / med,
                    "ratio": (examples / jax_med) / (p.examples / med),
                    "cpu_ratio": (examples / jax_cpu) / (p.examples / c)})
  for r in records:
    r.update(ts.original_cpu(model, batch))
    common.append_jsonl(out, r)
  return records


def table(records) -> str:
  return common.markdown_table(
      records, ["model", "batch", "dtype", "framework", "step_median_s", "examples_per_s",
                "ratio", "cpu_s_per_step", "cpu_ratio"],
      ["model", "B", "dtype", "framework", "median s/step", "ex/s", "JAX speed-up (wall)",
       "CPU s/step", "JAX speed-up (CPU time)"])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=3, help="steps per framework per round")
  p.add_argument("--torch_threads", default="1,2")
  p.add_argument("--torch_compile", action="store_true")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  try:
    import torch  # noqa: F401
  except ImportError:
    print("compare: PyTorch is not installed (see benchmarks/requirements-torch.txt; install it "
          "outside the venv and put it on PYTHONPATH)", file=sys.stderr)
    return 2
  try:
    recs = compare(a.model, a.batch, dtype=a.dtype, rounds=a.rounds, steps=a.steps,
                   torch_threads=[int(x) for x in a.torch_threads.split(",")],
                   torch_compile=a.torch_compile, overrides=ts.parse_sets(a.set), out=a.out)
  except FileNotFoundError as e:
    print(f"compare: {e}", file=sys.stderr)
    return 2
  env = common.environment()
  print(f"\nDevice: {env['device_name']} ({env['device_kind']}), jax {env['jax']}, "
        f"{env['date_utc']} UTC\n")
  print(table(recs))
  orig = ts.original_cpu(a.model, a.batch)
  if any(orig.values()):
    print(f"\nOriginal modules on a 2-vCPU VM (dancing2music.md §5): "
          f"{common.fmt(orig['orig_torch_1t_examples_per_s'])} ex/s (1 thread), "
          f"{common.fmt(orig['orig_torch_2t_examples_per_s'])} ex/s (2 threads)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
