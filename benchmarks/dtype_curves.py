"""bfloat16 vs float32 training curves (issue 13 item 3): the evidence for ``config.dtype='auto'``.

    # the runs (embedded synthetic default, same seed, 2000 steps each):
    for dt in float32 bfloat16; do
      .venv/bin/python launch/train.py --config=configs/style_paper.py \
          --workdir=/tmp/curves/style_$dt --config.dtype=$dt --config.num_train_steps=2000 \
          --config.log_every_steps=20 --config.eval_every_steps=500
    done
    # the plot and the final figures:
    .venv/bin/python -m benchmarks.dtype_curves --run=style_paper:/tmp/curves/style_float32,\
/tmp/curves/style_bfloat16 --out=benchmarks/results/bf16_vs_f32_curves.png

Reads each workdir's ``metrics.jsonl`` (written by the engine), plots ``train/loss`` against the
step for both dtypes (one panel per model, log scale), and prints the final figures: the mean
training loss over the last ``--tail`` logged points, its spread between the two halves of that
tail (a noise yardstick) and the last evaluation metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Tuple


def read_metrics(workdir: str) -> List[Dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no metrics.jsonl (did the run finish?)")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def series(rows: List[Dict], key: str) -> Tuple[List[int], List[float]]:
  pts = [(r["step"], r[key]) for r in rows if key in r]
  return [p[0] for p in pts], [p[1] for p in pts]


def final_figures(rows: List[Dict], tail: int) -> Dict[str, float]:
  _, loss = series(rows, "train/loss")
  last = loss[-tail:]
  half = len(last) // 2
  out = {"train_loss_tail_mean": statistics.fmean(last),
         "train_loss_tail_halves_diff": abs(statistics.fmean(last[:half]) -
                                            statistics.fmean(last[half:])) if half else 0.0,
         "steps": max(r["step"] for r in rows)}
  for r in rows:  # the last value of every eval metric
    for k, v in r.items():
      if k.startswith("eval_") and isinstance(v, (int, float)):
        out[k] = v
  return out


def plot(runs: Dict[str, Dict[str, List[Dict]]], out: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 3.8), squeeze=False)
  for ax, (model, by_dtype) in zip(axes[0], runs.items()):
    for dtype, rows in by_dtype.items():
      steps, loss = series(rows, "train/loss")
      ax.plot(steps, loss, label=dtype, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.set_title(f"{model}: bfloat16 vs float32 (same seed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  fig.tight_layout()
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  with files.atomic_path(out) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--run", action="append", required=True,
                 help="MODEL:F32_WORKDIR,BF16_WORKDIR (repeatable)")
  p.add_argument("--out", required=True, help="PNG path")
  p.add_argument("--tail", type=int, default=10, help="logged points averaged at the end")
  a = p.parse_args(argv)
  runs: Dict[str, Dict[str, List[Dict]]] = {}
  try:
    for spec in a.run:
      model, dirs = spec.split(":", 1)
      f32, bf16 = dirs.split(",")
      runs[model] = {"float32": read_metrics(f32), "bfloat16": read_metrics(bf16)}
  except (ValueError, FileNotFoundError) as e:
    print(f"dtype_curves: {e}", file=sys.stderr)
    return 2
  plot(runs, a.out)
  for model, by_dtype in runs.items():
    for dtype, rows in by_dtype.items():
      figs = final_figures(rows, a.tail)
      print(f"{model} {dtype}: " + ", ".join(
          f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figs.items()
          if k == "steps" or k.startswith("train") or "accuracy" in k or k.endswith("/loss")))
  print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
