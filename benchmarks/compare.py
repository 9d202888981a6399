"""JAX vs the PyTorch peer on the same device, alternating, each in a process of its own on CPU.

    PYTHONPATH=/work/torch_site .venv/bin/python -m benchmarks.compare --model=d2m_decomposition \
        --batch=32 --torch_threads=1,2 [--torch_compile] [--out=results.jsonl]

Both sides train on a fixed synthetic batch already on the device: JAX through the task's
``train_step`` (jitted, state donated; compile excluded), PyTorch through
``benchmarks.torch_reference``: eager in the compute dtype (modules cast, RNN weights flattened),
in bfloat16 also the AMP row (float32 modules, bfloat16 autocast), and ``torch.compile`` as an
extra row with ``--torch_compile``. ``--variants_json`` times several JAX rows (e.g. one per
``model.rnn_impl``); each JAX row's ``ratio_vs_best_peer`` is against the fastest PyTorch row. Rounds alternate JAX, torch (each thread count), JAX, ... so that a noisy,
shared machine slows both alike; both are warmed up by one rule (:func:`benchmarks.peers.warm_up`:
at least two steps, then until a step first-touches under 4 MiB of fresh pages: the host heap
has settled), every step is timed on its own (JAX: ``block_until_ready``;
torch: synchronous on CPU, ``torch.cuda.synchronize`` on GPU) and the medians over all rounds
are compared, each row's per-step minor page faults recorded beside them
(``minor_faults_per_step``). The ratio printed is JAX examples/s / PyTorch examples/s.

On CPU the report also names the CPU (/proc/cpuinfo "model name"), measures the float32 matmul
ceiling (a 2048^3 GEMM: JAX and torch per thread count, interleaved; ``gemm_peak_gflops`` = the
best) and gives every row's achieved GFLOP/s (the step's matmul + conv FLOPs counted on the JAX
jaxpr, the same model on both sides, over its median step time) and its fraction of that peak.

Where the peer runs (``--peer_isolation``, :mod:`benchmarks.peers`): on CPU in a child process
of its own, driven over a pipe, so the two frameworks share no C heap (in one process the peer's
allocations can split the block XLA:CPU reuses between steps; what that changed, and the spread
that remains, are measured in docs/performance.md); ``none`` runs it in this process, as every
record before 2026-12-06 was taken, and is the default on GPU. Either way both run under the same
``--host_malloc`` and the records say where the peer ran (``peer_isolation``).

torch threads: ``torch.set_num_threads(n)`` per row. XLA:CPU uses its own thread pool (all
cores); while one framework runs the other is idle (waiting on the pipe, or not called).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import jax

from benchmarks import common
from benchmarks import peers as peers_mod
from benchmarks import train_step as ts
from d2m_jax import host_memory


def cpu_model() -> Optional[str]:
  """The CPU's name as /proc/cpuinfo gives it ("model name"), None elsewhere."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def gemm_peak(n: int = 2048, reps: int = 7, torch_threads=None, peers=None) -> Dict[str, Any]:
  """Measured float32 matmul rate (GFLOP/s) of an n^3 GEMM: JAX (jitted, XLA's own thread pool)
  and, given ``peers`` (:mod:`benchmarks.peers`, wherever the peer runs), torch.mm per thread
  count; medians of ``reps`` timed calls, one framework after the other, interleaved rep by rep
  (a shared machine slows both alike)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  flops = 2.0 * n ** 3
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), np.float32)
  b = rng.standard_normal((n, n), np.float32)
  ja, jb = jax.device_put(a), jax.device_put(b)
  mm = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(mm(ja, jb))
  threads = list(torch_threads or []) if peers is not None and peers.version else []
  rows = {"jax": [], **{f"torch {th} thr": [] for th in threads}}
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(ja, jb))
    rows["jax"].append(time.perf_counter() - t0)
    for th in threads:
      rows[f"torch {th} thr"].append(peers.mm_seconds(n, th))
  out = {f"gemm{n}_gflops_{k.replace(' ', '_')}": flops / statistics.median(v) / 1e9
         for k, v in rows.items()}
  out["gemm_peak_gflops"] = max(out.values())
  return out


def _impl_fields(overrides) -> Dict[str, Any]:
  o = overrides or {}
  return {"rnn_impl": o.get("model.rnn_impl"), "conv_impl": o.get("model.conv_impl")}


def _peer_rows(dtype: str, torch_threads, torch_compile: bool):
  """(row name, threads, build kwargs) of the PyTorch rows for a JAX compute ``dtype``.

  float32: eager float32 per thread count (+ ``torch.compile``); bfloat16: eager with the modules
  cast to bfloat16 per thread count, AMP (float32 modules, bfloat16 autocast), and
  ``torch.compile`` of the AMP step. Every row is a same-dtype competitor of the JAX rows.
  """
  rows = [(f"torch eager {dtype}, {th} thr", th, {"cast": dtype, "amp": False, "compile": False})
          for th in torch_threads]
  th = torch_threads[0]
  if dtype == "bfloat16":
    rows.append((f"torch AMP bf16, {th} thr", th,
                 {"cast": "float32", "amp": True, "compile": False}))
  if torch_compile:
    amp = dtype == "bfloat16"
    rows.append((f"torch.compile{' AMP bf16' if amp else ' ' + dtype}, {th} thr", th,
                 {"cast": "float32" if amp else dtype, "amp": amp, "compile": True}))
  return rows


def compare(model: str, batch: int, *, dtype: str = "float32", rounds: int = 3,
            steps: int = 3, torch_threads=(1, 2), torch_compile: bool = False,
            overrides=None, out=None, jax_variants=None,
            deadline_s: Optional[float] = None, peer: bool = True,
            isolation: Optional[str] = None,
            peer_factory: str = peers_mod.FACTORY) -> List[Dict[str, Any]]:
  """Times JAX (one row per variant) against the PyTorch rows, alternating; returns records.

  ``jax_variants``: [(label, overrides)] timed as separate JAX rows on top of ``overrides``
  (e.g. ``[("scan", {"model.rnn_impl": "scan"}), ...]``); default one row. Order of work: the
  first variant, the PyTorch rows, then the further variants, then the rounds. ``deadline_s``
  (seconds from the call): a further variant is compiled only if 1.3x the slowest compile so far
  plus a reserve still fits, ``torch.compile`` only if 30 s are left, and no round starts after
  it (at least one round always runs); what is skipped leaves a record saying so. ``peer=False``:
  JAX rows only (``benchmarks/suite.py`` times a section's further variants in processes of
  their own and divides by the peer rows of the first). ``isolation``: where the peer runs
  (:mod:`benchmarks.peers`: ``"process"``, its own, the default on CPU; ``"none"``, this one);
  ``peer_factory``: ``"module:function"`` that builds a peer row (tests pass a stand-in).
  """
  isolation = isolation or peers_mod.default_isolation(jax.default_backend())
  runner = None
  if peer and (peer_factory != peers_mod.FACTORY or importlib.util.find_spec("torch")):
    runner = peers_mod.open_peers(isolation, peer_factory)  # torch is imported where it runs
  try:
    return _compare(model, batch, dtype, rounds, steps, torch_threads, torch_compile, overrides,
                    out, jax_variants, deadline_s, runner)
  finally:
    if runner is not None:
      runner.close()


def _compare(model, batch, dtype, rounds, steps, torch_threads, torch_compile, overrides, out,
             jax_variants, deadline_s, runner) -> List[Dict[str, Any]]:
  t_start = time.perf_counter()

  def left() -> float:
    return float("inf") if deadline_s is None else deadline_s - (time.perf_counter() - t_start)

  env = common.environment()
  if jax.default_backend() == "cpu":      # the real CPU and its measured matmul ceiling
    env["cpu_model"] = cpu_model()
    env.update(gemm_peak(torch_threads=list(torch_threads), peers=runner))
    common.log(f"[compare] {env['cpu_model']}: float32 GEMM 2048^3 " + ", ".join(
        f"{k.split('gflops_')[1]} {v:.0f}" for k, v in env.items() if k.startswith("gemm2048"))
        + " GFLOP/s")
  variants = list(jax_variants or [("default", {})])
  base = {"bench": "compare", "model": model, "batch": batch, "dtype": dtype, **env,
          "torch": runner and runner.version, "torch_device": runner and runner.device,
          "peer_isolation": runner and runner.isolation,
          "peer_host_malloc": runner and runner.host_malloc}
  records: List[Dict[str, Any]] = []
  jax_rows: Dict[str, Dict[str, Any]] = {}
  state_of = {"examples": None, "bench": None, "slowest": 0.0}

  def jax_steps(row, n, cpu=None, faults=None):
    ts_ = []
    for _ in range(n):
      t0, c0, f0 = time.perf_counter(), time.process_time(), peers_mod.minor_faults()
      row["holder"][0] = jax.block_until_ready(row["compiled"](row["holder"][0], row["batch"])[0])
      ts_.append(time.perf_counter() - t0)
      if cpu is not None:
        cpu.append(time.process_time() - c0)
        faults.append(peers_mod.minor_faults() - f0)
    return ts_

  def add_variant(label, extra, reserve_s: float):
    ov = dict(overrides or {}, **extra)
    name = f"jax (jit) {label}" if len(variants) > 1 else "jax (jit)"
    info = {**base, "framework": name, "jax_variant": label, **_impl_fields(ov),
            "overrides": dict(ts.BENCH_OVERRIDES.get(model, {}), **ov)}
    if jax_rows and left() < 1.3 * state_of["slowest"] + reserve_s:
      records.append({**info, "skipped": f"deadline: {max(0.0, left()):.0f} s left, compiles "
                                         f"took up to {state_of['slowest']:.0f} s"})
      common.log(f"[compare] {name}: skipped (deadline)")
      return
    bench = ts.Bench(model, dtype, overrides=ov)
    task, state, jbatch, ex = bench.setup(batch)
    state_of["examples"] = ex if state_of["examples"] is None else state_of["examples"]
    state_of["bench"] = state_of["bench"] or bench
    fn = lambda s, b, task=task: task.train_step(s, b)  # noqa: E731
    compiled, compile_s = common.compile_aot(fn, state, jbatch, donate_argnums=(0,))
    if state_of.get("flops") is None:    # matmul + conv FLOPs of one step (same on both sides)
      try:
        state_of["flops"] = common.jaxpr_flops(fn, state, jbatch)
      except Exception:  # noqa: BLE001
        state_of["flops"] = None
    state_of["slowest"] = max(state_of["slowest"], compile_s)
    common.log(f"[compare] {name}: compiled in {compile_s:.1f} s")
    row = {"info": info, "compiled": compiled, "holder": [state], "batch": jbatch,
           "compile_s": compile_s}
    row["warmup_steps"] = peers_mod.warm_up(lambda: jax_steps(row, 1))  # the peer's rule too
    jax_rows[name] = row

  # --- JAX: the first variant
  add_variant(*variants[0], reserve_s=0.0)
  examples, bench = state_of["examples"], state_of["bench"]
  # --- torch side
  pose = bench.config.model.get("pose_size", 28) if "model" in bench.config else 28
  kw = {"pose": pose} if model.startswith("d2m_") else {}
  peers = {}
  for name, th, spec in _peer_rows(dtype, torch_threads, torch_compile) if runner else []:
    info = {**base, "framework": name, "torch_threads": th, "peer_impl": name.split(",")[0],
            "peer_cast": spec["cast"], "peer_amp": spec["amp"], "peer_compile": spec["compile"]}
    if spec["compile"] and left() < 30:
      records.append({**info, "skipped": f"deadline: {max(0.0, left()):.0f} s left for "
                                         "torch.compile"})
      common.log(f"[compare] {name}: skipped (deadline)")
      continue
    try:
      built = runner.build(name, model, batch, th, spec["cast"], spec["amp"], spec["compile"], kw)
    except peers_mod.PeerError as e:
      common.log(f"[compare] {name} failed: {e}")
      records.append({**info, "skipped": f"failed: {e}"})
      continue
    info["compile_s"], info["warmup_steps"] = built["compile_s"], built["warmup_steps"]
    info["peer_warnings"] = built["warnings"]
    for w in info["peer_warnings"]:
      common.log(f"[compare] {name} warned: {w}")
    peers[name] = (th, built["examples"], info)
  if any(ex != examples for _, ex, _ in peers.values()):
    common.log(f"[compare] WARNING: examples per step differ: JAX {examples}, torch "
               f"{[ex for _, ex, _ in peers.values()]}")
  # --- JAX: further variants, while they fit (reserve: one round of every row so far)
  for label, extra in variants[1:]:
    add_variant(label, extra, reserve_s=15.0)
  # --- alternating rounds
  times: Dict[str, List[float]] = {k: [] for k in jax_rows}
  times.update({k: [] for k in peers})
  cpu: Dict[str, List[float]] = {k: [] for k in times}
  faults: Dict[str, List[int]] = {k: [] for k in times}
  round_s = 0.0
  for r in range(rounds):
    if r > 0 and left() < round_s:
      common.log(f"[compare] deadline: stopping after {r} round(s)")
      break
    r0 = time.perf_counter()
    for name, row in jax_rows.items():
      times[name] += jax_steps(row, steps, cpu[name], faults[name])
    for name, (th, _, _) in peers.items():
      wall, c, f = runner.time(name, steps, th)
      times[name] += wall
      cpu[name] += c
      faults[name] += f
    round_s = time.perf_counter() - r0
    common.log(f"[compare] round {r + 1}/{rounds}: " + ", ".join(
        f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items()))
  peer_eps = {name: ex / statistics.median(times[name]) for name, (_, ex, _) in peers.items()}
  best_peer = max(peer_eps, key=peer_eps.get) if peer_eps else None
  first_jax = None
  for name, row in jax_rows.items():
    med = statistics.median(times[name])
    c = statistics.median(cpu[name])
    eps = examples / med
    first_jax = first_jax or (eps, c)
    records.append({**row["info"], "compile_s": row["compile_s"],
                    "warmup_steps": row["warmup_steps"], "step_median_s": med,
                    "step_times_s": times[name], "cpu_s_per_step": c, "examples_per_s": eps,
                    "minor_faults_per_step": faults[name],
                    "examples_per_step": examples, "best_peer": best_peer,
                    "ratio_vs_best_peer": eps / peer_eps[best_peer] if best_peer else None})
  jax_eps, jax_cpu = first_jax or (None, None)
  flops = state_of.get("flops")
  for name, (th, ex, info) in peers.items():
    med = statistics.median(times[name])
    c = statistics.median(cpu[name])
    records.append({**info, "step_median_s": med, "step_times_s": times[name],
                    "minor_faults_per_step": faults[name], "cpu_s_per_step": c,
                    "examples_per_step": ex, "examples_per_s": ex / med,
                    "ratio": jax_eps / (ex / med), "cpu_ratio": (examples / jax_cpu) / (ex / c)})
  peak = env.get("gemm_peak_gflops")
  for r in records:
    r.update(ts.original_cpu(model, batch))
    if flops and r.get("step_median_s"):
      r["flops_per_step"] = flops
      r["gflops_per_s"] = flops / r["step_median_s"] / 1e9
      r["fraction_of_gemm_peak"] = r["gflops_per_s"] / peak if peak else None
    common.append_jsonl(out, r)
  return records


def table(records, extra=()) -> str:
  """Every timed row; ``extra``: (field, header) columns after the framework's."""
  return common.markdown_table(
      [r for r in records if "step_median_s" in r],
      ["model", "batch", "dtype", "framework", *[c for c, _ in extra], "step_median_s",
       "examples_per_s", "ratio", "cpu_s_per_step", "cpu_ratio", "ratio_vs_best_peer",
       "gflops_per_s", "fraction_of_gemm_peak"],
      ["model", "B", "dtype", "framework", *[h for _, h in extra], "median s/step", "ex/s",
       "JAX speed-up (wall)", "CPU s/step", "JAX speed-up (CPU time)", "JAX / best peer",
       "GFLOP/s", "of measured GEMM peak"])


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
  p.add_argument("--variants_json", default=None,
                 help='JAX rows as JSON [[label, {"key": "value"}], ...], e.g. '
                      '\'[["scan", {"model.rnn_impl": "scan"}], ["unrolled", '
                      '{"model.rnn_impl": "unrolled"}]]\'')
  p.add_argument("--deadline_s", type=float, default=None,
                 help="stop compiling further variants / starting rounds after this many s")
  p.add_argument("--allow_no_torch", action="store_true",
                 help="without PyTorch, time the JAX rows only (instead of exit 2)")
  p.add_argument("--no_peer", action="store_true", help="time the JAX rows only")
  common.add_host_malloc_flag(p)   # both frameworks alike, wherever the peer runs
  p.add_argument("--peer_isolation", default=None, choices=peers_mod.ISOLATIONS,
                 help="process: the peer in a process of its own (default on CPU); none: in "
                      "this one (default on GPU; how records before 2026-12-06 were taken)")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  host_memory.configure_or_exit(a.host_malloc)   # before JAX's backend starts
  variants = None
  if a.variants_json:
    try:
      variants = [(str(lbl), {str(k): str(v) for k, v in ov.items()})
                  for lbl, ov in json.loads(a.variants_json)]
    except (ValueError, TypeError, AttributeError) as e:
      print(f"compare: --variants_json: {e}", file=sys.stderr)
      return 2
  if not a.no_peer and importlib.util.find_spec("torch") is None:
    if a.allow_no_torch:
      print("compare: PyTorch is not installed: JAX rows only", file=sys.stderr)
    else:
      print("compare: PyTorch is not installed (see benchmarks/requirements-torch.txt; install it "
            "outside the venv and put it on PYTHONPATH)", file=sys.stderr)
      return 2
  try:
    recs = compare(a.model, a.batch, dtype=a.dtype, rounds=a.rounds, steps=a.steps,
                   torch_threads=[int(x) for x in a.torch_threads.split(",")],
                   torch_compile=a.torch_compile, overrides=ts.parse_sets(a.set), out=a.out,
                   jax_variants=variants, deadline_s=a.deadline_s, peer=not a.no_peer,
                   isolation=a.peer_isolation)
  except (FileNotFoundError, peers_mod.PeerError) as e:
    print(f"compare: {e}", file=sys.stderr)
    return 2
  env = common.environment()
  r0 = recs[0] if recs else {}
  cpu = f"; CPU: {r0['cpu_model']}" if r0.get("cpu_model") else ""
  gemm = ", ".join(f"{k.split('gflops_')[1]} {v:.0f}" for k, v in r0.items()
                   if k.startswith("gemm2048_gflops_"))
  print(f"\nDevice: {env['device_name']} ({env['device_kind']}){cpu}, jax {env['jax']}, "
        f"{env['date_utc']} UTC" + (f"\nMeasured float32 GEMM 2048^3: {gemm} GFLOP/s "
                                    f"(peak used: {r0['gemm_peak_gflops']:.0f})" if gemm else "")
        + "\n")
  print(table(recs))
  orig = ts.original_cpu(a.model, a.batch)
  if any(orig.values()):
    print(f"\nOriginal modules on a 2-vCPU VM (dancing2music.md §5): "
          f"{common.fmt(orig['orig_torch_1t_examples_per_s'])} ex/s (1 thread), "
          f"{common.fmt(orig['orig_torch_2t_examples_per_s'])} ex/s (2 threads)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
