r"""Figures of a training run: loss curves from workdirs' metrics.jsonl, a frame strip of a dance.

  python -m benchmarks.run_figures curves --out=benchmarks/results/real_d2m_curves.png \
      --workdir=decomposition=runs/real/d2m_decomp --workdir=composition=runs/real/d2m_comp
  python -m benchmarks.run_figures strip --dance=runs/real/dance.npz \
      --out=benchmarks/results/real_d2m_strip.png --frames=8 --seconds=8

``curves`` draws every ``train/*`` series named by ``--keys`` (default: each workdir's
``train/loss`` and its reconstruction terms) against the step, one panel per workdir.
``strip`` draws ``--frames`` evenly spaced poses of the first ``--seconds`` of a dance written by
``launch/generate.py`` (joints (N, T, J, 3), bones, mid_bones), side by side, with the frame's time
and whether a music beat falls on it. Outputs are written to a temporary name, then renamed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

DEFAULT_KEYS = ("train/loss", "train/self_recon", "train/cross_recon", "train/stdpseq_recon",
                "train/style_loss", "train/d_loss")


def read_metrics(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{key: (steps, values)} of every numeric series in WORKDIR/metrics.jsonl."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise SystemExit(f"run_figures: {path}: no metrics.jsonl (not a training workdir?)")
  series: dict[str, list] = {}
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      for k, v in rec.items():
        if k != "step" and isinstance(v, (int, float)):
          series.setdefault(k, []).append((rec["step"], v))
  return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in series.items()}


def _save(fig, out: str):
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  with files.atomic_path(out) as tmp:
    fig.savefig(tmp, dpi=110, bbox_inches="tight")


def curves(workdirs: list[tuple[str, str]], out: str, keys=DEFAULT_KEYS):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, len(workdirs), figsize=(5.5 * len(workdirs), 3.6), squeeze=False)
  for ax, (name, wd) in zip(axes[0], workdirs):
    m = read_metrics(wd)
    for k in keys:
      if k in m:
        ax.plot(*m[k], label=k.split("/", 1)[1], lw=1.2)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  _save(fig, out)
  plt.close(fig)


def strip(dance: str, out: str, frames: int = 8, seconds: float = 8.0):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from d2m_jax.render import project  # pylint: disable=import-outside-toplevel
  d = np.load(dance)
  joints = d["joints"][0] if d["joints"].ndim == 4 else d["joints"]
  fps = float(d["fps"])
  beats = set(int(b) for b in d["music_beats"]) if "music_beats" in d else set()
  last = min(len(joints), int(seconds * fps)) - 1
  idx = np.linspace(0, last, frames).round().astype(int)
  xy = project(joints[idx])
  segs = [(a, a, b, b) for a, b in d["bones"]] + [
      (a, b, c, e) for (a, b), (c, e) in d["mid_bones"]]
  fig, axes = plt.subplots(1, frames, figsize=(1.6 * frames, 3.0))
  lo, hi = xy.reshape(-1, 2).min(0), xy.reshape(-1, 2).max(0)
  for ax, i, p in zip(axes, idx, xy):
    for a, b, c, e in segs:
      s, t = (p[a] + p[b]) / 2, (p[c] + p[e]) / 2
      ax.plot([s[0], t[0]], [s[1], t[1]], "-", color="k", lw=1.5)
    ax.set_xlim(lo[0] - 5, hi[0] + 5)
    ax.set_ylim(lo[1] - 5, hi[1] + 5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{i / fps:.2f} s" + (" *beat" if any(abs(i - b) <= 1 for b in beats) else ""),
                 fontsize=8)
  _save(fig, out)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  c = sub.add_parser("curves")
  c.add_argument("--workdir", action="append", required=True, help="NAME=WORKDIR (repeatable)")
  c.add_argument("--out", required=True)
  c.add_argument("--keys", default=",".join(DEFAULT_KEYS))
  s = sub.add_parser("strip")
  s.add_argument("--dance", required=True)
  s.add_argument("--out", required=True)
  s.add_argument("--frames", type=int, default=8)
  s.add_argument("--seconds", type=float, default=8.0)
  a = p.parse_args(argv)
  if a.cmd == "curves":
    wds = [tuple(w.split("=", 1)) if "=" in w else (os.path.basename(w), w) for w in a.workdir]
    curves(wds, a.out, [k for k in a.keys.split(",") if k])
  else:
    if not os.path.exists(a.dance):
      sys.exit(f"run_figures: {a.dance}: no such file")
    strip(a.dance, a.out, a.frames, a.seconds)
  print(a.out)


if __name__ == "__main__":
  main()
