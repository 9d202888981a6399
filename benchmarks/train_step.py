"""Training-step throughput of every model, through the Task contract.

    python -m benchmarks.train_step --model=style_paper
    python -m benchmarks.train_step --model=d2m_decomposition --batches=32,256 --dtypes=float32 \
        --modes=train --out=/tmp/bench/results.jsonl

For each model (``configs/<model>.py``) and each batch size of the sweep (default 32, 64, ...,
4096), compute dtype and mode, it builds the task with ``d2m_jax.tasks.get_task(config)``, a
synthetic batch (``task.synthetic_batch``: compute isolated from input) and the initial state,
compiles ahead of time (compile time apart), runs >= 2 warm-up steps, then times steps ended by
``block_until_ready`` and reports median/p90 step time, examples/s total and per device, FLOPs per
step, TFLOP/s and MFU (see :mod:`benchmarks.common`).

Modes:
* ``train``: ``task.train_step`` (forward + backward + every optimiser update of one iteration),
  jitted with the state donated, the state carried from step to step;
* ``fwd``: forward only. Uses the task's optional ``forward(state, batch) -> loss`` hook when it
  has one, else its ``eval_step`` when it overrides the default; otherwise the row says why it was
  skipped.

Devices: the batch is sharded over every local device (``NamedSharding(mesh, P("data"))``) and
the state replicated, the engine's default ``jit`` mode; "per device" divides by the device count.

The sweep stops cleanly at the first batch that runs out of memory ("stopped at batch N: out of
memory") or whose predicted measuring time exceeds ``--budget_s`` (on a 2-core CPU the big
batches of the big models take minutes per step).

Examples per step = the leading dimension of the synthetic batch (what one step consumes; for the
WGANs that is whatever the task's step takes for its n_critic critic updates).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from d2m_jax import host_memory

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

# Models the suite knows about (configs/<name>.py); l2d_* configs are discovered by glob.
MODELS = ["style_paper", "style_improved", "d2m_decomposition", "d2m_composition",
          "wgan_pose", "wgan_seq", "wgan_audio", "kakashi"]

# Benchmark-only config overrides, for like-for-like comparison with the original modules'
# figures (dancing2music.md §5: OpenPose 28-d poses, one unit pair per decomposition example).
# Override further with --set key=value (e.g. --set model.units_per_example=3).
BENCH_OVERRIDES = {
    "d2m_decomposition": {"model.pose_size": 28, "model.units_per_example": 1},
    "d2m_composition": {"model.pose_size": 28},
}

DEFAULT_BATCHES = [32, 64, 128, 256, 512, 1024, 2048, 4096]

# The original PyTorch modules on a 2-vCPU VM (dancing2music.md §5, PyTorch 2.13.0+cpu,
# forward + backward + optimiser with the trainers' own update()): {model: {threads: {B: steps/s}}}.
ORIGINAL_CPU_STEPS_PER_S = {
    "style_paper": {1: {32: 232, 128: 126, 512: 43.0}, 2: {32: 70.6, 128: 53.6, 512: 49.4}},
    "style_improved": {1: {32: 2.53, 128: 0.710, 512: 0.181}, 2: {32: 1.49, 128: 0.297, 512: 0.051}},
    "d2m_decomposition": {1: {32: 0.299, 128: 0.0827, 512: 0.0213}, 2: {32: 0.430, 128: 0.138}},
    "d2m_composition": {1: {32: 0.214, 128: 0.0601}, 2: {32: 0.358, 128: 0.097}},
}


def original_cpu(model: str, batch: int) -> Dict[str, Optional[float]]:
  """The original modules' 2-vCPU figures at ``batch`` (examples/s, 1 and 2 threads) if known."""
  d = ORIGINAL_CPU_STEPS_PER_S.get(model, {})
  out = {}
  for threads in (1, 2):
    sps = d.get(threads, {}).get(batch)
    out[f"orig_torch_{threads}t_examples_per_s"] = sps * batch if sps else None
  return out


def available_models() -> List[str]:
  names = list(MODELS)
  names += sorted(p.stem for p in CONFIG_DIR.glob("l2d_*.py"))
  return names


def load_config(model: str, overrides: Optional[Dict[str, Any]] = None):
  """``configs/<model>.py:get_config()`` with :data:`BENCH_OVERRIDES` and ``overrides`` applied
  (string values parsed as ``--config.<field>=<value>`` would be: ``d2m_jax.configs.load``).

  Raises FileNotFoundError when the model is not there.
  """
  from d2m_jax import configs  # pylint: disable=import-outside-toplevel
  path = CONFIG_DIR / f"{model}.py"
  if not path.exists():
    raise FileNotFoundError(f"configs/{model}.py does not exist (model not written yet)")
  return configs.load(str(path), dict(BENCH_OVERRIDES.get(model, {}), **(overrides or {})))


FEATURE_DIMS = {"d2m28": 28, "fact35": 35, "mfcc20": 20, "mel_tempogram512": 512}


def synthetic_stats(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Normalisation stats with the keys of ``pipeline.load_stats`` (identity normalisation)."""
  if "pose" in batch:
    P = batch["pose"].shape[-1]
  elif "units" in batch:
    P = batch["units"].shape[-1]
  else:
    P = 69
  stats = {"pose_mean": np.zeros(P, np.float32), "pose_std": np.ones(P, np.float32),
           "pose_min": -np.ones(P, np.float32), "pose_max": np.ones(P, np.float32)}
  for name, D in FEATURE_DIMS.items():
    stats[f"{name}_mean"] = np.zeros(D, np.float32)
    stats[f"{name}_std"] = np.ones(D, np.float32)
  return stats


def forward_fn(task):
  """The forward-only function of ``task``, or (None, reason)."""
  from d2m_jax.train.task import Task
  if task.supports("forward"):
    return (lambda state, batch: task.forward(state, batch)), "forward"
  if type(task).eval_step is not Task.eval_step:
    return (lambda state, batch: task.eval_step(state, batch)), "eval_step"
  return None, "task has neither forward() nor eval_step()"


class Bench:
  """Builds one model once per (dtype) and measures it at many batch sizes."""

  def __init__(self, model: str, dtype: str, seed: int = 0, config=None,
               overrides: Optional[Dict[str, Any]] = None):
    self.model = model
    self.dtype = dtype
    self.config = load_config(model, overrides) if config is None else config
    self.config.dtype = dtype
    from d2m_jax.tasks import get_task  # the package; imports the model lazily
    from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
    self.get_task = get_task
    self.build_state = state_lib.build_state
    self.seed = seed
    self.num_devices = jax.local_device_count()
    self.mesh = jax.make_mesh((self.num_devices,), ("data",),
                              axis_types=(jax.sharding.AxisType.Auto,))

  def setup(self, batch_size: int):
    cfg = self.config
    with cfg.unlocked() if hasattr(cfg, "unlocked") else _null():
      cfg.data.batch_size = batch_size
    task = self.get_task(cfg)
    rng = np.random.default_rng(self.seed)
    host_batch = task.synthetic_batch(batch_size, rng)
    stats = synthetic_stats(host_batch)
    key = jax.random.PRNGKey(self.seed)
    repl = jax.sharding.NamedSharding(self.mesh, jax.P())
    data = jax.sharding.NamedSharding(self.mesh, jax.P("data"))
    state = self.build_state(task, key, host_batch, stats, sharding=repl)
    batch = jax.device_put(host_batch, data)
    examples = int(next(iter(host_batch.values())).shape[0])
    return task, state, batch, examples

  def measure(self, batch_size: int, mode: str, **timing_kw) -> Dict[str, Any]:
    task, state, batch, examples = self.setup(batch_size)
    if mode == "train":
      fn = lambda s, b: task.train_step(s, b)  # noqa: E731
      donate = (0,)
      flops = common.jaxpr_flops(fn, state, batch)
      compiled, compile_s = common.compile_aot(fn, state, batch, donate_argnums=donate)
      call = lambda s: compiled(s, batch)[0]  # noqa: E731
      carry = state
      how = "train_step"
    else:
      fwd, how = forward_fn(task)
      if fwd is None:
        return {"skipped": how}
      flops = common.jaxpr_flops(fwd, state, batch)
      compiled, compile_s = common.compile_aot(fwd, state, batch)
      call = lambda _: compiled(state, batch)  # noqa: E731
      carry = None
    xla = common.xla_flops(compiled)
    cpu: List[float] = []
    times, _ = common.time_steps(call, carry, cpu_out=cpu, **timing_kw)
    timing = common.Timing(compile_s, times, cpu)
    kind = common.device_kind()
    rec = common.summarise(timing, examples=examples, num_devices=self.num_devices, flops=flops,
                           kind=kind, dtype=self.dtype)
    rec.update({"xla_flops_per_step": xla, "examples_per_step": examples, "via": how})
    return rec


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def sweep(model: str, *, batches: List[int], dtypes: List[str], modes: List[str],
          budget_s: float, out: Optional[str], timing_kw: Dict[str, Any],
          overrides: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
  """Measures ``model`` over the grid; returns the records (also appended to ``out``)."""
  env = common.environment()
  records: List[Dict[str, Any]] = []
  base = {"bench": "train_step", "model": model, **env,
          "overrides": dict(BENCH_OVERRIDES.get(model, {}), **(overrides or {}))}
  for dtype in dtypes:
    try:
      bench = Bench(model, dtype, overrides=overrides)
    except FileNotFoundError as e:
      rec = {**base, "dtype": dtype, "skipped": str(e)}
      common.log(f"[train_step] {model}: skipped: {e}")
      common.append_jsonl(out, rec)
      records.append(rec)
      return records
    except Exception as e:  # a model that is being written may not import yet
      rec = {**base, "dtype": dtype, "skipped": f"could not build: {type(e).__name__}: {e}"}
      common.log(f"[train_step] {model}: skipped: {rec['skipped']}")
      common.append_jsonl(out, rec)
      records.append(rec)
      return records
    for mode in modes:
      last_step_s = None
      prev_b = None
      for b in batches:
        if b % bench.num_devices:
          continue
        # Predict the cost of this point from the previous one (linear in batch) and stop
        # before the measuring time would blow the budget.
        if last_step_s is not None:
          predicted = last_step_s * (b / prev_b) * (timing_kw.get("min_steps", 3) + 2)
          if predicted > budget_s:
            msg = (f"stopped at batch {b}: time budget (predicted {predicted:.0f} s > "
                   f"--budget_s={budget_s:.0f})")
            rec = {**base, "dtype": dtype, "mode": mode, "batch": b, "stopped": msg}
            common.log(f"[train_step] {model} {dtype} {mode}: {msg}")
            common.append_jsonl(out, rec)
            records.append(rec)
            break
        rec = {**base, "dtype": dtype, "mode": mode, "batch": b}
        t0 = time.perf_counter()
        try:
          rec.update(bench.measure(b, mode, **timing_kw))
        except Exception as e:  # noqa: BLE001
          if common.is_oom(e):
            msg = f"stopped at batch {b}: out of memory"
            rec["stopped"] = msg
            common.log(f"[train_step] {model} {dtype} {mode}: {msg}")
            common.append_jsonl(out, rec)
            records.append(rec)
            break
          rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
          common.log(f"[train_step] {model} {dtype} {mode} batch {b}: ERROR {rec['error']}")
          if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
          common.append_jsonl(out, rec)
          records.append(rec)
          break
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        if mode == "train":
          rec.update(original_cpu(model, b))
        common.append_jsonl(out, rec)
        records.append(rec)
        if "skipped" in rec:
          common.log(f"[train_step] {model} {dtype} {mode}: skipped: {rec['skipped']}")
          break
        common.log(
            f"[train_step] {model} {dtype} {mode} B={b}: median {rec['step_median_s']*1e3:.1f} ms"
            f" p90 {rec['step_p90_s']*1e3:.1f} ms, {rec['examples_per_s']:.1f} ex/s, compile "
            f"{rec['compile_s']:.1f} s, {common.fmt(rec['tflops_per_s'])} TFLOP/s, MFU "
            f"{common.fmt(rec['mfu'])}")
        last_step_s, prev_b = rec["step_median_s"], b
  return records


TABLE_COLUMNS = ["model", "dtype", "mode", "batch", "compile_s", "step_median_s", "step_p90_s",
                 "examples_per_s", "examples_per_s_per_device", "cpu_s_per_step", "tflops_per_s",
                 "mfu",
                 "orig_torch_1t_examples_per_s", "orig_torch_2t_examples_per_s"]
TABLE_HEADERS = ["model", "dtype", "mode", "B", "compile s", "median s", "p90 s", "ex/s",
                 "ex/s/dev", "CPU s/step", "TFLOP/s", "MFU", "orig. torch 1 thr ex/s",
                 "orig. torch 2 thr ex/s"]


def table(records: List[Dict[str, Any]]) -> str:
  rows = [r for r in records if "step_median_s" in r]
  notes = [f"- {r['model']} {r.get('dtype', '')} {r.get('mode', '')}: "
           f"{r.get('stopped') or r.get('skipped') or r.get('error')}"
           for r in records if "step_median_s" not in r]
  out = common.markdown_table(rows, TABLE_COLUMNS, TABLE_HEADERS)
  if notes:
    out += "\n\n" + "\n".join(notes)
  return out


def parse_ints(s: str) -> List[int]:
  return [int(x) for x in s.split(",") if x]


def add_common_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--modes", default="fwd,train")
  p.add_argument("--budget_s", type=float, default=120.0,
                 help="stop the sweep before a batch whose predicted measuring time exceeds this")
  p.add_argument("--min_steps", type=int, default=3)
  p.add_argument("--max_steps", type=int, default=50)
  p.add_argument("--min_time_s", type=float, default=3.0)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override, e.g. --set model.hidden=64 (repeatable)")
  common.add_host_malloc_flag(p)


def parse_sets(sets: List[str]) -> Dict[str, str]:
  out = {}
  for s in sets:
    if "=" not in s:
      raise SystemExit(f"--set {s!r}: expected KEY=VALUE")
    k, v = s.split("=", 1)
    out[k.strip()] = v.strip()
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="style_paper",
                 help="a configs/<model>.py name, a comma list, or 'all'")
  p.add_argument("--out", default=None, help="JSON-lines file to append the records to")
  add_common_flags(p)
  a = p.parse_args(argv)
  host_memory.configure_or_exit(a.host_malloc)   # before JAX's backend starts
  models = available_models() if a.model == "all" else a.model.split(",")
  timing_kw = dict(warmup=a.warmup, min_steps=a.min_steps, max_steps=a.max_steps,
                   min_time_s=a.min_time_s)
  records = []
  for m in models:
    records += sweep(m, batches=parse_ints(a.batches), dtypes=a.dtypes.split(","),
                     modes=a.modes.split(","), budget_s=a.budget_s, out=a.out,
                     timing_kw=timing_kw, overrides=parse_sets(a.set))
  env = common.environment()
  print(f"\nDevice: {env['device_name']} x{env['num_devices']} ({env['device_kind']}), "
        f"jax {env['jax']}, {env['date_utc']} UTC\n")
  print(table(records))
  return 0 if any("step_median_s" in r for r in records) or all(
      "skipped" in r for r in records) else 1


if __name__ == "__main__":
  sys.exit(main())
