r"""What a float16 portable export changes: feature error over a split and one train step's loss.

  python launch/export_data.py --config=configs/style_paper.py \
      --config.data.source=music_to_dance --out=/tmp/style_paper.npz
  python benchmarks/portable_precision.py --config=configs/style_paper.py \
      --portable=/tmp/style_paper.npz --source=music_to_dance

Compares the numpy loader on the processed dataset (float32, what tf.data gives) with the same
config reading the portable file: max / mean absolute error of every float batch key over the whole
train split, then ``train_step`` from one initial state on the same global batch of each. Needs the
processed dataset and the portable file; no TensorFlow.
"""
from __future__ import annotations

import argparse

import numpy as np


def _config(path):
  from d2m_jax import configs  # pylint: disable=import-outside-toplevel
  return configs.load(path)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True)
  p.add_argument("--portable", required=True)
  p.add_argument("--source", default="music_to_dance")
  p.add_argument("--step", type=int, default=7, help="which global batch to train on")
  a = p.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  config = _config(a.config)
  config.data.source, config.data.loader = a.source, "numpy"
  port = config.data.copy_and_resolve_references()
  port.portable = a.portable
  full, part = pipeline.load_split(config.data, "train"), pipeline.load_split(port, "train")
  for k in sorted(part):
    if part[k].dtype.kind == "f":
      d = np.abs(part[k].astype(np.float64) - full[k])
      print(f"{k}: max |err| {d.max():.3g} (max |x| {np.abs(full[k]).max():.3g}), "
            f"mean |err| {d.mean():.3g}")
  b16 = next(pipeline.make_iterator(port, "train", start_step=a.step))
  b32 = {k: v for k, v in next(pipeline.make_iterator(config.data, "train",
                                                       start_step=a.step)).items() if k in b16}
  task = get_task(config)
  state = state_lib.build_state(task, jax.random.PRNGKey(0), b32, pipeline.load_stats(config.data))
  step = jax.jit(task.train_step)
  _, m32 = step(state, b32)
  _, m16 = step(state, b16)
  for k in sorted(m32):
    x, y = float(m32[k]), float(m16[k])
    print(f"step {a.step} {k}: float32 data {x:.7g}, portable {y:.7g} "
          f"(rel diff {abs(x - y) / max(abs(x), 1e-12):.1e})")


if __name__ == "__main__":
  main()
