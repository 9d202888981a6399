"""Data parallelism three ways (jit + sharding, shard_map, pmap) and weak scaling 1 -> N devices.

    python -m benchmarks.parallel --model=style_improved --per_device_batch=32
    python -m benchmarks.parallel --fake_devices=4 --model=style_paper   # CPU demo

Runs the task's ONE per-device step body through the engine's wrappers
(``d2m_jax.train.parallel.DataParallel``: exactly what ``launch/train.py`` runs for
``config.parallel = jit | shard_map | pmap``) on meshes of 1, 2, 4, ... local devices with a fixed
per-device batch (weak scaling), and reports examples/s, examples/s per device and the scaling
efficiency ``throughput(n) / (n * throughput(1))`` of each mode.

``--fake_devices=N`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (before jax is
imported) so the three modes can be exercised on a CPU. Fake CPU devices share the machine's
cores (2 here), so on CPU the efficiency measures overhead, not a speed-up: only real
accelerators show real scaling.
"""
from __future__ import annotations

import os
import sys


def _early_fake_devices(argv):
  for a in argv:
    if a.startswith("--fake_devices="):
      n = int(a.split("=", 1)[1])
      if n > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
          os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()


if __name__ == "__main__":
  _early_fake_devices(sys.argv[1:])

import argparse  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import train_step as ts  # noqa: E402


def measure(model: str, mode: str, n: int, per_device_batch: int, dtype: str, overrides,
            timing_kw) -> Dict[str, Any]:
  from d2m_jax.tasks import get_task
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from d2m_jax.train.parallel import DataParallel, make_mesh
  cfg = ts.load_config(model, overrides)
  cfg.dtype = dtype
  B = per_device_batch * n
  cfg.data.batch_size = B
  task = get_task(cfg)
  host_batch = task.synthetic_batch(B, np.random.default_rng(0))
  stats = ts.synthetic_stats(host_batch)
  key = jax.random.PRNGKey(0)
  dp = DataParallel(mode, make_mesh(n))
  state = state_lib.build_state(task, key, host_batch, stats, sharding=dp.state_sharding())
  state = dp.put_state(state)
  batch = dp.put_batch(host_batch)
  compiled, compile_s = dp.compile(dp.wrap(task.train_step), state, batch)
  times, _ = common.time_steps(lambda s: compiled(s, batch)[0], state, **timing_kw)
  return common.summarise(common.Timing(compile_s, times), examples=B, num_devices=n, flops=None,
                          kind=common.device_kind(), dtype=dtype)


def run(model: str, modes: List[str], per_device_batch: int, dtype: str, overrides=None,
        out=None, timing_kw=None, max_devices: int = 0) -> List[Dict[str, Any]]:
  env = common.environment()
  total = jax.local_device_count()
  if max_devices:
    total = min(total, max_devices)
  counts = sorted({1, total} | {2 ** k for k in range(1, 8) if 2 ** k <= total})
  recs = []
  base1: Dict[str, float] = {}
  for n in counts:
    for mode in modes:
      rec = {"bench": "parallel", "model": model, "mode": mode, "devices": n,
             "per_device_batch": per_device_batch, "dtype": dtype, **env}
      try:
        rec.update(measure(model, mode, n, per_device_batch, dtype, overrides, timing_kw or {}))
      except FileNotFoundError as e:
        rec["skipped"] = str(e)
      except Exception as e:  # noqa: BLE001
        rec["stopped" if common.is_oom(e) else "error"] = (
            f"stopped at {n} devices: out of memory" if common.is_oom(e)
            else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
      if "examples_per_s" in rec:
        if n == 1:
          base1[mode] = rec["examples_per_s"]
        if mode in base1:
          rec["weak_scaling_efficiency"] = rec["examples_per_s"] / (n * base1[mode])
      common.append_jsonl(out, rec)
      recs.append(rec)
      common.log(f"[parallel] {model} {mode} x{n}: " + (
          f"{rec['examples_per_s']:.1f} ex/s, compile {rec['compile_s']:.1f} s"
          if "examples_per_s" in rec else str(rec.get("skipped") or rec.get("error") or
                                               rec.get("stopped"))))
      if "skipped" in rec:
        return recs
  return recs


def table(recs) -> str:
  rows = [r for r in recs if "examples_per_s" in r]
  out = common.markdown_table(
      rows, ["model", "mode", "devices", "per_device_batch", "compile_s", "step_median_s",
             "examples_per_s", "examples_per_s_per_device", "weak_scaling_efficiency"],
      ["model", "mode", "devices", "B/device", "compile s", "median s", "ex/s", "ex/s/device",
       "weak-scaling eff."])
  notes = [f"- {r['mode']} x{r['devices']}: {r.get('skipped') or r.get('error') or r.get('stopped')}"
           for r in recs if "examples_per_s" not in r]
  return out + ("\n\n" + "\n".join(notes) if notes else "")


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="style_paper")
  p.add_argument("--modes", default="jit,shard_map,pmap")
  p.add_argument("--per_device_batch", type=int, default=32)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--fake_devices", type=int, default=0,
                 help="CPU demo: this many fake host devices (set before jax starts)")
  p.add_argument("--max_devices", type=int, default=0)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--min_steps", type=int, default=3)
  p.add_argument("--min_time_s", type=float, default=2.0)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  recs = run(a.model, a.modes.split(","), a.per_device_batch, a.dtype, ts.parse_sets(a.set),
             a.out, dict(min_steps=a.min_steps, min_time_s=a.min_time_s, max_steps=30),
             a.max_devices)
  env = common.environment()
  fake = " (fake CPU devices sharing the host's cores)" if env["platform"] == "cpu" and \
      env["num_devices"] > 1 else ""
  print(f"\nDevice: {env['device_name']} x{env['num_devices']}{fake}, jax {env['jax']}, "
        f"{env['date_utc']} UTC\n")
  print(table(recs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
