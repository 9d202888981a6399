r"""Input-pipeline throughput: examples/s and MB/s of ``pipeline.make_iterator`` at several
batch sizes, against an in-memory numpy iterator over the same arrays (the ceiling: one fancy-
index gather per batch, no tf.data).

  python benchmarks/data_loading.py                       # synthetic default, feature windows
  python benchmarks/data_loading.py --waveform            # windows incl. the 16 kHz clip
  python benchmarks/data_loading.py --kind=units --batch_sizes=32,256
  python benchmarks/data_loading.py --source=music_to_dance --data_dir=DIR
  python benchmarks/data_loading.py --device              # + to_global() onto all devices

Target (issue 2): >= 15,000 feature windows (120 frames of pose + frame features) per second at
batch 256 on 2 cores. The first call builds the synthetic dataset if it is missing (minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _nbytes(batch) -> int:
  return sum(int(v.nbytes) for v in batch.values())


def _time(it, steps, warmup=3):
  for _ in range(warmup):
    b = next(it)
  nb = _nbytes(b)
  t0 = time.perf_counter()
  for _ in range(steps):
    b = next(it)
  dt = time.perf_counter() - t0
  return dt, nb


def _numpy_iterator(arrays, batch, seed=0):
  rng = np.random.default_rng(seed)
  keys = [k for k in arrays if not k.startswith("_")]
  n = arrays[keys[0]].shape[0]
  while True:
    idx = rng.integers(0, n, batch)
    yield {k: arrays[k][idx] for k in keys}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--source", default="synthetic")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--raw_dir", default=None)
  p.add_argument("--kind", default="windows", choices=["windows", "units", "sequences"])
  p.add_argument("--waveform", action="store_true", help="windows with the 16 kHz clip")
  p.add_argument("--batch_sizes", default="32,64,128,256,512,1024")
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--device", action="store_true", help="also time to_global() onto devices")
  a = p.parse_args()

  from d2m_jax.data import pipeline
  from d2m_jax.train.defaults import data_config
  cfg = data_config()
  cfg.source, cfg.kind, cfg.waveform = a.source, a.kind, a.waveform
  if a.data_dir:
    cfg.data_dir = a.data_dir
  if a.raw_dir:
    cfg.raw_dir = a.raw_dir
  t0 = time.perf_counter()
  arrays = pipeline.load_split(cfg, "train")
  print(f"# {a.source}/{a.kind}{'' if a.kind != 'windows' else ' +waveform' if a.waveform else ' (no waveform)'}: "
        f"{arrays['_seq'].shape[0]} train examples, loaded in {time.perf_counter() - t0:.1f} s; "
        f"cores: {os.cpu_count()}")
  mesh = None
  if a.device:
    import jax
    mesh = jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
  rows = []
  print(f"{'batch':>6} {'pipeline ex/s':>14} {'MB/s':>8} {'numpy ex/s':>12} {'MB/s':>8}"
        + (f" {'+device ex/s':>13}" if mesh is not None else ""))
  for bs in [int(x) for x in a.batch_sizes.split(",")]:
    cfg.batch_size = bs
    steps = max(5, min(a.steps, int(a.steps * 256 / bs)))
    it = pipeline.make_iterator(cfg, "train")
    dt, nb = _time(it, steps)
    dt_np, _ = _time(_numpy_iterator(arrays, bs), steps)
    row = dict(batch=bs, steps=steps, ex_s=bs * steps / dt, mb_s=nb * steps / dt / 1e6,
               numpy_ex_s=bs * steps / dt_np, numpy_mb_s=nb * steps / dt_np / 1e6,
               batch_mb=nb / 1e6)
    line = (f"{bs:>6} {row['ex_s']:>14,.0f} {row['mb_s']:>8,.0f} {row['numpy_ex_s']:>12,.0f} "
            f"{row['numpy_mb_s']:>8,.0f}")
    if mesh is not None:
      dev_it = pipeline.prefetch_to_device(pipeline.make_iterator(cfg, "train"), mesh)
      for _ in range(3):
        b = next(dev_it)
      import jax
      t1 = time.perf_counter()
      for _ in range(steps):
        b = next(dev_it)
      jax.block_until_ready(b)
      row["device_ex_s"] = bs * steps / (time.perf_counter() - t1)
      line += f" {row['device_ex_s']:>13,.0f}"
    print(line, flush=True)
    rows.append(row)
  print(json.dumps({"benchmark": "data_loading", "source": a.source, "kind": a.kind,
                    "waveform": a.waveform, "rows": rows}))


if __name__ == "__main__":
  main()
