r"""Time to quality: train a config to its ``config.target`` with several seeds, MLPerf-style.

    python benchmarks/time_to_quality.py --config=configs/style_paper.py --seeds=3 \
        --out=runs/ttq/style_paper --config.eval_every_steps=100 \
        --config.target.metric=eval_validation/accuracy --config.target.threshold=0.98
    python benchmarks/time_to_quality.py --config=configs/wgan_seq.py --seeds=3 \
        --out=runs/ttq/wgan_seq --add_eval=motion,motion_ratio,validation,25 \
        --config.target.metric=eval_motion/generated_ratio --config.target.threshold=0.8

Each seed trains in ``OUT/seed_<k>`` through the engine (``launch/train.py``'s path: the task,
the evaluators, the target action), which stops at the first evaluation that meets the target
and writes ``time_to_target.json``: steps, examples, wall and CPU seconds of training counted
from the first step after compilation, with compile and evaluation time apart (MLPerf
Training's rule). This script collects them into ``OUT/runs.jsonl`` (one row per seed, plus a
``summary`` row: median, min and max of each figure over the seeds that reached the target)
and ``OUT/curves.png``: the target metric against examples seen and against training wall
time, one curve per seed, with the threshold drawn.

A seed that does not reach the target by ``num_train_steps`` is a row with ``reached: false``;
the summary says how many reached it. Re-running resumes each seed's workdir (a finished seed
is not retrained).
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (configs/*.py[:arg]).",
                                lock_config=False)
flags.DEFINE_integer("seeds", 3, "Number of seeds (config.seed = 0..N-1).")
flags.DEFINE_string("out", None, "Output folder (one workdir per seed, runs.jsonl, curves.png).")
flags.DEFINE_multi_string("add_eval", [], "NAME,KIND,SPLIT,EVERY_STEPS: adds an evaluator to "
                          "config.evals (e.g. motion,motion_ratio,validation,100), repeatable.")
flags.mark_flags_as_required(["config", "out"])

FIGURES = ("step", "examples", "train_wall_s", "train_cpu_s", "compile_s", "eval_s")


def summary(rows):
  """Median / min / max of each figure over the rows that reached the target."""
  hit = [r for r in rows if r["reached"]]
  out = {"summary": True, "seeds": len(rows), "reached": len(hit)}
  for k in FIGURES:
    vals = [float(r[k]) for r in hit]
    if vals:
      out[k] = {"median": float(np.median(vals)), "min": min(vals), "max": max(vals)}
  return out


def curve(workdir: str, metric: str):
  """(examples_seen, wall_s, value) of every logged value of ``metric`` in metrics.jsonl."""
  pts = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if metric in row:
        pts.append((row["examples_seen"], row["wall_s"], row[metric]))
  return np.array(pts, np.float64).reshape(-1, 3)


def plot(curves, metric: str, threshold: float, path: str):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for seed, pts in curves.items():
    for ax, col in zip(axes, (0, 1)):
      ax.plot(pts[:, col], pts[:, 2], marker="o", ms=3, label=f"seed {seed}")
  for ax, label in zip(axes, ("examples seen", "training wall time since the first step [s]")):
    ax.axhline(threshold, color="k", ls="--", lw=1, label="target")
    ax.set_xlabel(label)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  from d2m_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.configure_or_exit()  # $D2M_HOST_MALLOC or keep; before JAX starts
  from d2m_jax import compile_cache  # pylint: disable=import-outside-toplevel
  compile_cache.enable(True)
  from d2m_jax.metrics import evaluation  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import actions, evaluators, loop  # pylint: disable=import-outside-toplevel
  preemption = actions.PreemptionHandler().install()  # SIGTERM: end this seed, skip the rest
  config = FLAGS.config
  try:
    evaluators.add_evals(config, FLAGS.add_eval)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  target = config.get("target")
  if not target or not target.get("metric"):
    print("error: the config has no target: set --config.target.metric and "
          "--config.target.threshold", file=sys.stderr)
    return 2
  os.makedirs(FLAGS.out, exist_ok=True)
  rows, curves = [], {}
  for seed in range(FLAGS.seeds):
    c = config.copy_and_resolve_references()
    c.seed = seed
    workdir = os.path.join(FLAGS.out, f"seed_{seed}")
    done = os.path.join(workdir, "time_to_target.json")
    if not os.path.exists(done):
      loop.train_and_evaluate(c, workdir, task=get_task(c), preemption=preemption)
    with open(done) as f:
      rows.append(dict(json.load(f), seed=seed, config=str(c.task), workdir=workdir))
    curves[seed] = curve(workdir, target.metric)
    print(f"seed {seed}: {json.dumps(rows[-1])}", flush=True)
    if preemption.requested:
      print("SIGTERM: the remaining seeds are skipped", flush=True)
      break
  rows.append(summary(rows))
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  files.write_text(os.path.join(FLAGS.out, "runs.jsonl"), "".join(json.dumps(r) + "\n"
                                                                  for r in rows))
  plot(curves, target.metric, float(target.threshold), os.path.join(FLAGS.out, "curves.png"))
  print(json.dumps(rows[-1], indent=1))
  print(f"wrote {FLAGS.out}/runs.jsonl and {FLAGS.out}/curves.png")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
