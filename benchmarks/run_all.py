"""One entry point for the whole benchmark suite (or a subset).

    python -m benchmarks.run_all --out_dir=bench_out                       # everything
    python -m benchmarks.run_all --out_dir=bench_out --suite=train_step,compare \
        --models=style_paper,d2m_decomposition --batches=32,256 --dtypes=float32
    python -m benchmarks.run_all --out_dir=bench_out --suite=report         # tables/plots only

Each part runs in its own subprocess (fake-device flags, memory and compile caches stay
separate; a part that crashes does not take the others down) and appends JSON lines to
``OUT/results.jsonl``. Then ``OUT/results.md`` (markdown tables per part, with device and date)
and PNG plots are written: ``OUT/throughput_<model>.png`` (examples/s vs batch, one line per
dtype x mode) and ``OUT/jax_vs_torch.png`` (examples/s of JAX and the PyTorch peer per model).

Parts (``--suite``): ``train_step``, ``compare`` (needs PyTorch on PYTHONPATH, see
``benchmarks/requirements-torch.txt``; skipped with a message otherwise), ``rnn``, ``parallel``
(with ``--fake_devices`` on CPU), ``data_loading`` and ``inference`` (their own scripts; their
stdout is saved as ``OUT/<part>.txt``), ``report``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import defaultdict
from typing import Any, Dict, List

PARTS = ("train_step", "compare", "rnn", "parallel", "data_loading", "inference")
COMPARE_MODELS = ("style_paper", "style_improved", "d2m_decomposition", "d2m_composition",
                  "wgan_audio")


def _run(cmd: List[str], log_path: str, timeout: float) -> int:
  print("$ " + " ".join(cmd), flush=True)
  with open(log_path, "a") as log:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    try:
      p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
      return p.returncode
    except subprocess.TimeoutExpired:
      log.write(f"TIMEOUT after {timeout:.0f} s\n")
      print(f"  timed out after {timeout:.0f} s", flush=True)
      return 124


def run_parts(a) -> None:
  py = sys.executable
  out = os.path.join(a.out_dir, "results.jsonl")
  parts = PARTS if a.suite == "all" else [p for p in a.suite.split(",") if p != "report"]
  for part in parts:
    log = os.path.join(a.out_dir, f"{part}.txt")
    if part == "train_step":
      for model in a.models.split(","):
        rc = _run([py, "-m", "benchmarks.train_step", f"--model={model}", f"--batches={a.batches}",
                   f"--dtypes={a.dtypes}", f"--modes={a.modes}", f"--budget_s={a.budget_s}",
                   f"--out={out}"], log, a.part_timeout_s)
        print(f"  train_step {model}: exit {rc}", flush=True)
    elif part == "compare":
      try:
        import importlib.util
        have_torch = importlib.util.find_spec("torch") is not None
      except Exception:  # noqa: BLE001
        have_torch = False
      if not have_torch:
        print("  compare: skipped, PyTorch not importable (benchmarks/requirements-torch.txt)")
        continue
      models = [m for m in a.models.split(",") if m in COMPARE_MODELS] if a.models != "all" \
          else list(COMPARE_MODELS)
      for model in models:
        for b in a.compare_batches.split(","):
          b = int(b)
          if model.startswith("wgan"):  # n_critic (8) slices per step
            b = max(8, b // 8 * 8)
          cmd = [py, "-m", "benchmarks.compare", f"--model={model}", f"--batch={b}",
                 f"--torch_threads={a.torch_threads}", f"--out={out}"]
          rc = _run(cmd, log, a.part_timeout_s)
          print(f"  compare {model} B={b}: exit {rc}", flush=True)
    elif part == "rnn":
      rc = _run([py, "-m", "benchmarks.rnn", f"--batch={a.rnn_batch}", f"--out={out}"], log,
                a.part_timeout_s)
      print(f"  rnn: exit {rc}", flush=True)
    elif part == "parallel":
      cmd = [py, "-m", "benchmarks.parallel", f"--model={a.parallel_model}", f"--out={out}"]
      if a.fake_devices:
        cmd.append(f"--fake_devices={a.fake_devices}")
      rc = _run(cmd, log, a.part_timeout_s)
      print(f"  parallel: exit {rc}", flush=True)
    elif part in ("data_loading", "inference"):
      path = os.path.join(os.path.dirname(__file__), f"{part}.py")
      if not os.path.exists(path):
        print(f"  {part}: skipped, benchmarks/{part}.py not present")
        continue
      rc = _run([py, "-m", f"benchmarks.{part}"], log, a.part_timeout_s)
      print(f"  {part}: exit {rc} (output in {log})", flush=True)
    else:
      raise SystemExit(f"unknown part {part!r}; expected {PARTS} or report")


# ----------------------------------------------------------------------------------------------
# Report

def report(out_dir: str) -> str:
  from benchmarks import common
  from benchmarks import compare as cmp
  from benchmarks import parallel as par
  from benchmarks import rnn
  from benchmarks import train_step as ts
  path = os.path.join(out_dir, "results.jsonl")
  if not os.path.exists(path):
    raise SystemExit(f"{path} does not exist: run some parts first")
  recs = common.read_jsonl(path)
  by: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
  for r in recs:
    by[r.get("bench", "?")].append(r)
  devices = sorted({f"{r.get('device_name')} x{r.get('num_devices')} ({r.get('device_kind')})"
                    for r in recs})
  dates = sorted({r.get("date_utc", "") for r in recs})
  md = ["# Benchmark results", "",
        f"Devices: {', '.join(devices)}; jax {recs[0].get('jax') if recs else '?'}; "
        f"measured {dates[0] if dates else '?'} .. {dates[-1] if dates else '?'} UTC.", ""]
  if by.get("train_step"):
    md += ["## Training step (`benchmarks/train_step.py`)", "", ts.table(by["train_step"]), ""]
  if by.get("compare"):
    md += ["## JAX vs the PyTorch peer (`benchmarks/compare.py`)", "", cmp.table(by["compare"]),
           ""]
  if by.get("rnn"):
    md += ["## GRU vs LSTM scans (`benchmarks/rnn.py`, one layer fwd+bwd)", "",
           rnn.table(by["rnn"]), ""]
  if by.get("parallel"):
    md += ["## Data parallelism (`benchmarks/parallel.py`)", "", par.table(by["parallel"]), ""]
  text = "\n".join(md) + "\n"
  common.atomic_write(os.path.join(out_dir, "results.md"), text)
  plots(by, out_dir)
  return text


def plots(by, out_dir: str) -> List[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from benchmarks import train_step as ts
  written = []
  rows = [r for r in by.get("train_step", []) if "examples_per_s" in r]
  models = sorted({r["model"] for r in rows})
  for m in models:
    fig, ax = plt.subplots(figsize=(6, 4))
    series = defaultdict(list)
    for r in rows:
      if r["model"] == m:
        series[(r["dtype"], r["mode"])].append((r["batch"], r["examples_per_s"]))
    for (dtype, mode), pts in sorted(series.items()):
      pts.sort()
      ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{mode} {dtype}")
    orig = [(b, ts.original_cpu(m, b)["orig_torch_1t_examples_per_s"]) for b in (32, 128, 512)]
    orig = [o for o in orig if o[1]]
    if orig:
      ax.plot([p[0] for p in orig], [p[1] for p in orig], "k--", marker="x",
              label="original PyTorch, 1 thr (spec §5)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("examples / s")
    kind = rows[0].get("device_kind", "")
    ax.set_title(f"{m} on {kind}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = os.path.join(out_dir, f"throughput_{m}.png")
    fig.savefig(p, dpi=100)
    plt.close(fig)
    written.append(p)
  comp = [r for r in by.get("compare", []) if "examples_per_s" in r]
  if comp:
    keys = sorted({(r["model"], r["batch"]) for r in comp})
    fws = sorted({r["framework"] for r in comp}, key=lambda s: (not s.startswith("jax"), s))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 4))
    width = 0.8 / len(fws)
    for i, fw in enumerate(fws):
      vals = []
      for k in keys:
        v = [r["examples_per_s"] for r in comp if (r["model"], r["batch"]) == k and
             r["framework"] == fw]
        vals.append(v[-1] if v else 0)
      ax.bar([j + i * width for j in range(len(keys))], vals, width, label=fw)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{m}\nB={b}" for m, b in keys], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("examples / s (training)")
    ax.set_title(f"JAX vs PyTorch, same device ({comp[0].get('device_kind', '')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = os.path.join(out_dir, "jax_vs_torch.png")
    fig.savefig(p, dpi=100)
    plt.close(fig)
    written.append(p)
  return written


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out_dir", required=True)
  p.add_argument("--suite", default="all", help="'all' or a comma list of " + ", ".join(PARTS)
                 + ", report")
  p.add_argument("--models", default="all")
  p.add_argument("--batches", default="32,64,128,256,512,1024,2048,4096")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--modes", default="fwd,train")
  p.add_argument("--budget_s", type=float, default=120.0)
  p.add_argument("--compare_batches", default="32,256")
  p.add_argument("--torch_threads", default="1",
                 help="torch intra-op threads per row (on a shared CPU host more threads than "
                      "free cores make OpenMP spin: 2 threads ran 10-60x slower here)")
  p.add_argument("--rnn_batch", type=int, default=64)
  p.add_argument("--parallel_model", default="style_paper")
  p.add_argument("--fake_devices", type=int, default=4,
                 help="parallel part on CPU: fake host devices (0: real devices only)")
  p.add_argument("--part_timeout_s", type=float, default=3600.0)
  a = p.parse_args(argv)
  os.makedirs(a.out_dir, exist_ok=True)
  if a.models == "all":
    from benchmarks import train_step as ts
    a.models = ",".join(ts.available_models())
  if a.suite != "report":
    run_parts(a)
  text = report(a.out_dir)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
