"""The GPU benchmark suite of issue 13: the whole JAX-vs-PyTorch table and the batch sweep in one
unattended run of at most ``--budget_s`` (default 470 s: under 8 minutes on one H100/H200).

    bash benchmarks/gpu_suite.sh --out_dir=$OUT          # on the GPU machine (see the script)
    .venv/bin/python -m benchmarks.gpu_suite --preset=smoke --out_dir=/tmp/suite   # CPU, tiny

Sections (each its own subprocess, so a crash or a timeout loses only that section), in
priority order:

* ``compare`` sections (``benchmarks/compare.py``: JAX and the PyTorch peer alternating in one
  process, median ms per training step): Dancing2Music decomposition at batch 256 in bfloat16 and
  float32, the style extractor GRU-512x2 (``style_improved``) at 256, the phase-3 WGAN at 64
  windows and the composition at 256, each with one JAX row per ``model.rnn_impl`` variant (and,
  for the WGAN, per ``model.conv_impl``: ``xla`` = cuDNN convolutions vs ``im2col``) against the
  peer's rows (eager, AMP bf16, ``torch.compile``); the ratio is against the peer's best row;
* ``sweep`` (``benchmarks/train_step.py``): decomposition training step at batch 256/1024/4096 in
  bfloat16 and float32 with MFU.

Time: every section has a budget; a section may use what earlier ones left unused, never what
later ones need (its timeout is the time left minus the later sections' budgets), and compare
stops compiling further variants / starting rounds at its own deadline. Cold, the budget does
not cover every variant (JAX compiles of 15-45 s each on an H200, torch.compile on top): the
first variant of each section and the peer rows come first; what is cut is listed in the notes.
A second run on the same machine (``--only=...``) hits the persistent compilation cache. XLA's persistent
compilation cache (``--compilation_cache_dir``) lets the sweep reuse the compare compiles and a
rerun skip most compiling.

Output: ``OUT/gpu_<date>_<device>.jsonl`` (every record carries device, jax and torch versions,
commit, dtype, batch and implementation), ``.md`` (the tables printed at the end) and ``.log``
(every section's output). Only jax, flax, optax, numpy, ml-collections (and torch for the peer)
are imported: no TensorFlow, no librosa (``tests/test_gpu_suite.py`` runs the smoke preset with
them made unimportable).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Variant = Tuple[str, Dict[str, str]]


@dataclasses.dataclass
class Section:
  name: str
  kind: str                       # "compare" | "sweep"
  model: str
  dtypes: Sequence[str]
  batches: Sequence[int]
  budget_s: float
  variants: Sequence[Variant] = ()   # compare: JAX rows (label, overrides)
  overrides: Dict[str, str] = dataclasses.field(default_factory=dict)
  rounds: int = 3
  steps: int = 5
  torch_compile: bool = True
  xla_dump: bool = False          # dump XLA's modules and summarise its convolutions (item 4)
  xla_flags: str = ""             # appended to XLA_FLAGS of the section's subprocess


def _rnn(*impls: str, **extra: str) -> List[Variant]:
  out = []
  for impl in impls:
    ov = {"model.rnn_impl": impl}
    ov.update({f"model.{k}": v for k, v in extra.items()})
    label = impl if not extra else ",".join([f"rnn={impl}"] + [f"{k}={v}" for k, v in
                                                               extra.items()])
    out.append((label, ov))
  return out


# The first variant of a section is the expected default (auto = unrolled on GPU); further ones
# are compiled while the section's deadline allows (compare.py). WGAN: no torch.compile row (it
# could compile the generator only; the critic's double backward dominates the step), so its
# time goes to the conv_impl question (xla = cuDNN vs im2col). 'pallas' is timed only where some GRU is small enough for the fused kernel (H <= 64: the WGAN
# noise GRU, the composition's style GRU-30); for the H >= 512 models it would run 'unrolled'.
# XLA:GPU command buffers (CUDA graphs) for the default kinds plus while loops: the scan's 32
# steps become one graph launch instead of a host-driven loop (issue 25's suite row).
CMDBUF_WHILE = "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE"

FULL = [
    Section("decomposition_bf16", "compare", "d2m_decomposition", ["bfloat16"], [256], 75,
            _rnn("unrolled", "scan")),
    Section("decomposition_bf16_scan_cmdbuf", "compare", "d2m_decomposition", ["bfloat16"],
            [256], 40, _rnn("scan"), rounds=2, torch_compile=False, xla_flags=CMDBUF_WHILE),
    Section("decomposition_f32", "compare", "d2m_decomposition", ["float32"], [256], 65,
            _rnn("unrolled", "scan")),
    Section("style_gru512x2_f32", "compare", "style_improved", ["float32"], [256], 45,
            _rnn("unrolled", "scan")),
    Section("wgan_audio_f32", "compare", "wgan_audio", ["float32"], [64], 95,
            _rnn("unrolled", conv_impl="xla") + _rnn("unrolled", conv_impl="im2col")
            + _rnn("scan", conv_impl="xla") + _rnn("pallas", conv_impl="xla"),
            rounds=3, steps=3, torch_compile=False, xla_dump=True),
    Section("composition_f32", "compare", "d2m_composition", ["float32"], [256], 80,
            _rnn("unrolled", "scan", "pallas")),
    Section("sweep_decomposition", "sweep", "d2m_decomposition", ["bfloat16", "float32"],
            [256, 1024, 4096], 70),
]

# CPU smoke: every section kind and model, tiny JAX sizes (the PyTorch peer keeps its paper
# sizes), float32 (XLA:CPU compiles bfloat16 decomposition several times slower), one compile per
# row; budgets generous (on the shared 2-core CPU at load ~15-20 one tiny model compiles in
# 50-250 s of wall time).
_TINY_D2M = {"model.hidden": "16", "model.z_mov": "8", "model.init_hidden": "8"}
SMOKE = [
    Section("decomposition_f32", "compare", "d2m_decomposition", ["float32"], [4], 300,
            _rnn("scan"), overrides=_TINY_D2M, rounds=1, steps=2, torch_compile=False),
    Section("style_gru512x2_f32", "compare", "style_improved", ["float32"], [4], 300,
            _rnn("scan"), overrides={"model.hidden": "16"}, rounds=1, steps=2,
            torch_compile=False),
    Section("wgan_audio_f32", "compare", "wgan_audio", ["float32"], [8], 300,
            _rnn("scan", conv_impl="im2col"),
            overrides={"model.per_update_batch": "1", "model.enc_channels": "2",
                       "model.channels": "8", "model.audio_channels": "2",
                       "model.critic_code": "8", "model.latent": "20", "model.noise": "4",
                       "model.size": "16", "model.critic_hidden": "8", "model.enc_code": "16",
                       "model.n_cells": "1"},
            rounds=1, steps=1, torch_compile=False, xla_dump=True),
    Section("composition_f32", "compare", "d2m_composition", ["float32"], [4], 300,
            _rnn("scan"), overrides=dict(_TINY_D2M, **{"model.z_dance": "8",
                                                        "model.dance_hidden": "16"}),
            rounds=1, steps=1, torch_compile=False),
    Section("sweep_decomposition", "sweep", "d2m_decomposition", ["float32"], [4, 8], 300,
            overrides=_TINY_D2M),
]

PRESETS = {"full": FULL, "smoke": SMOKE}
DEFAULT_BUDGET_S = {"full": 470.0, "smoke": 1500.0}


# ----------------------------------------------------------------------------------------------

def _subprocess_env(cache_dir: Optional[str], preallocate: bool) -> Dict[str, str]:
  env = dict(os.environ)
  env["PYTHONUNBUFFERED"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
  if not preallocate:  # JAX and torch share the GPU in one process
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return env


PROBE = r"""
import json, importlib.metadata as md, importlib.util, sys
out = {}
try:
  import jax
  from benchmarks import common
  out.update(common.environment())
except Exception as e:
  out["error"] = f"{type(e).__name__}: {e}"
for pkg in ("torch", "flax", "optax", "ml-collections"):
  try:
    out[pkg.replace("-", "_") + "_version"] = md.version(pkg)
  except md.PackageNotFoundError:
    out[pkg.replace("-", "_") + "_version"] = None
out["torch_importable"] = importlib.util.find_spec("torch") is not None
fields = {}
for model in json.loads(sys.argv[1]):
  try:
    from benchmarks import train_step as ts
    cfg = ts.load_config(model)
    fields[model] = sorted(k for k in ("rnn_impl", "conv_impl") if k in cfg.model)
  except Exception as e:
    fields[model] = f"{type(e).__name__}: {e}"
out["model_fields"] = fields
print("PROBE " + json.dumps(out))
"""


def probe(models: Sequence[str], env: Dict[str, str], timeout: float) -> Dict[str, Any]:
  """Device, versions, commit and which config fields exist, from a short subprocess (the suite's
  own process never initialises a backend: it would hold GPU memory the sections need)."""
  p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(sorted(set(models)))], cwd=REPO,
                     env=env, capture_output=True, text=True, timeout=timeout)
  for line in p.stdout.splitlines():
    if line.startswith("PROBE "):
      return json.loads(line[len("PROBE "):])
  raise RuntimeError(f"probe failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")


def plan_variants(section: Section, fields) -> Tuple[List[Variant], List[str]]:
  """The variants a section can run with this code; notes for the ones it cannot.

  A variant that sets a config field the model does not have yet (``model.rnn_impl`` before it
  lands) is dropped with a note, except ``rnn_impl=scan``, which is today's behaviour: it runs
  without that override.
  """
  have = set(fields) if isinstance(fields, list) else set()
  keep, notes, seen = [], [], set()
  for label, ov in section.variants:
    missing = [k for k in ov if k.startswith("model.") and k.split(".", 1)[1] not in have]
    if missing:
      if set(missing) == {"model.rnn_impl"} and ov["model.rnn_impl"] == "scan":
        ov = {k: v for k, v in ov.items() if k != "model.rnn_impl"}
      else:
        notes.append(f"{section.name}: variant {label!r} not run: config has no "
                     f"{', '.join(missing)} yet")
        continue
    key = json.dumps(ov, sort_keys=True)
    if key not in seen:
      seen.add(key)
      keep.append((label, ov))
  return keep, notes


def section_command(section: Section, variants: List[Variant], out: str, timeout_s: float,
                    torch_threads: str) -> List[str]:
  py = sys.executable
  sets = [f"--set={k}={v}" for k, v in section.overrides.items()]
  if section.kind == "compare":
    # Leave 15 s of the timeout after the deadline: one round of every row (>= 1 round) and exit.
    return [py, "-m", "benchmarks.compare", f"--model={section.model}",
            f"--batch={section.batches[0]}", f"--dtype={section.dtypes[0]}",
            f"--rounds={section.rounds}", f"--steps={section.steps}",
            f"--torch_threads={torch_threads}", f"--variants_json={json.dumps(variants)}",
            f"--deadline_s={max(5.0, timeout_s - 15.0):.0f}", "--allow_no_torch",
            f"--out={out}"] + (["--torch_compile"] if section.torch_compile else []) + sets
  if section.kind == "sweep":
    return [py, "-m", "benchmarks.train_step", f"--model={section.model}",
            f"--batches={','.join(map(str, section.batches))}",
            f"--dtypes={','.join(section.dtypes)}", "--modes=train",
            f"--budget_s={max(5.0, timeout_s / 3):.0f}", "--min_steps=5", "--max_steps=30",
            "--min_time_s=1", f"--out={out}"] + sets
  raise ValueError(f"unknown section kind {section.kind!r}")


def enrich(rec: Dict[str, Any], section: Section, preset: str, info: Dict[str, Any]) -> Dict:
  """Stamps a section's record with what the suite knows (commit, torch version, impl)."""
  ov = dict(rec.get("overrides") or {})
  rnn = rec.get("rnn_impl") or ov.get("model.rnn_impl")
  conv = rec.get("conv_impl") or ov.get("model.conv_impl")
  if rec.get("framework", "jax").startswith("jax") or rec.get("bench") == "train_step":
    impl = f"rnn={rnn or 'auto'}" + (f",conv={conv}" if conv else "")
    if section.xla_flags:
      impl += ",cmdbuf=" + section.xla_flags.rsplit("=", 1)[-1].rsplit(",", 1)[-1]
  else:
    impl = rec.get("peer_impl") or rec.get("framework")
  out = {"suite": "gpu_suite", "preset": preset, "section": section.name,
         "commit": rec.get("commit") or info.get("commit"),
         "torch": rec.get("torch") or info.get("torch_version"), "impl": impl}
  out.update(rec)
  out["impl"] = impl
  if section.xla_flags:
    out["xla_flags"] = section.xla_flags
  out.pop("step_times_s", None) if preset == "smoke" else None
  return out


def write_jsonl_atomic(path: str, records: List[Dict[str, Any]]) -> None:
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  files.write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def run_suite(preset: str, out_dir: str, *, budget_s: Optional[float] = None,
              only: Optional[Sequence[str]] = None, cache_dir: Optional[str] = None,
              torch_threads: str = "8", work_dir: Optional[str] = None,
              log=print) -> Tuple[str, List[Dict[str, Any]]]:
  """Runs the preset's sections; returns (jsonl path, records)."""
  t0 = time.perf_counter()
  sections = [s for s in PRESETS[preset] if not only or s.name in only]
  if not sections:
    raise SystemExit(f"gpu_suite: no section of preset {preset!r} matches --only={only}")
  budget_s = budget_s if budget_s is not None else DEFAULT_BUDGET_S[preset]
  work_dir = work_dir or tempfile.mkdtemp(prefix="d2m_gpu_suite_")
  os.makedirs(out_dir, exist_ok=True)
  info = probe([s.model for s in sections], _subprocess_env(cache_dir, False), timeout=120)
  if "error" in info:
    raise SystemExit(f"gpu_suite: jax does not start: {info['error']}")
  date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
  stem = f"gpu_{date}_{info['device_kind']}" + ("_smoke" if preset == "smoke" else "")
  jsonl, log_path = (os.path.join(out_dir, stem + ext) for ext in (".jsonl", ".log"))
  log(f"[gpu_suite] {preset}: {len(sections)} sections, budget {budget_s:.0f} s; device "
      f"{info['device_name']} ({info['device_kind']}), jax {info['jax']}, torch "
      f"{info.get('torch_version')}, commit {info.get('commit')}; results -> {jsonl}")
  if not info.get("torch_importable"):
    log("[gpu_suite] WARNING: torch is not importable: compare sections time JAX only")
  records: List[Dict[str, Any]] = []
  notes: List[str] = []
  for i, sec in enumerate(sections):
    elapsed = time.perf_counter() - t0
    later = sum(s.budget_s for s in sections[i + 1:])
    timeout = budget_s - elapsed - later
    if timeout < 10:
      notes.append(f"{sec.name}: not run: {timeout:.0f} s left of its budget")
      log(f"[gpu_suite] {sec.name}: skipped, budget spent")
      continue
    variants, vnotes = plan_variants(sec, info["model_fields"].get(sec.model, []))
    notes += vnotes
    part = os.path.join(work_dir, f"{sec.name}.jsonl")
    if os.path.exists(part):
      os.remove(part)
    cmd = section_command(sec, variants, part, timeout, torch_threads)
    log(f"[gpu_suite] {sec.name}: timeout {timeout:.0f} s: {' '.join(cmd[1:])}")
    s0 = time.perf_counter()
    with open(log_path, "a") as lf:
      lf.write(f"\n===== {sec.name}: $ {' '.join(cmd)}\n")
      lf.flush()
      env = _subprocess_env(cache_dir, sec.kind != "compare")
      dump = os.path.join(work_dir, f"xla_dump_{sec.name}")
      if sec.xla_dump:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} "
                            "--xla_dump_hlo_as_text").strip()
      if sec.xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + sec.xla_flags).strip()
      try:
        rc = subprocess.run(cmd, cwd=REPO, stdout=lf, stderr=subprocess.STDOUT, timeout=timeout,
                            env=env).returncode
      except subprocess.TimeoutExpired:
        rc = 124
        lf.write(f"TIMEOUT after {timeout:.0f} s\n")
    took = time.perf_counter() - s0
    got = []
    if os.path.exists(part):
      with open(part) as f:
        got = [json.loads(line) for line in f if line.strip()]
    if sec.xla_dump and os.path.isdir(dump):
      from benchmarks import wgan_conv_census
      got.append({"bench": "xla_conv_census", "model": sec.model,
                  "modules": wgan_conv_census.xla_dump_summary(dump),
                  "device_kind": info["device_kind"], "jax": info["jax"]})
    records += [enrich(r, sec, preset, info) for r in got]
    write_jsonl_atomic(jsonl, records)
    if rc:
      notes.append(f"{sec.name}: exit {rc} after {took:.0f} s ({len(got)} records); see {stem}.log")
    log(f"[gpu_suite] {sec.name}: exit {rc}, {took:.0f} s, {len(got)} records")
  total = time.perf_counter() - t0
  md = report(records, info, notes, preset, total)
  md_path = os.path.join(out_dir, stem + ".md")
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  files.write_text(md_path, md)
  log(md)
  return jsonl, records


# ----------------------------------------------------------------------------------------------

def _ms(x):
  return "-" if x is None else f"{x * 1e3:.2f}"


def report(records: List[Dict[str, Any]], info: Dict[str, Any], notes: List[str], preset: str,
           total_s: float) -> str:
  """The issue's table (best JAX row vs the peer's best row), every row, and the sweep."""
  from benchmarks import common
  lines = [f"# GPU suite ({preset}): {info.get('device_name')} ({info.get('device_kind')}), "
           f"jax {info.get('jax')}, torch {info.get('torch_version')}, commit "
           f"{info.get('commit')}, {info.get('date_utc')} UTC, {total_s:.0f} s", ""]
  comp = [r for r in records if r.get("bench") == "compare" and "step_median_s" in r]
  groups: Dict[Tuple, List[Dict[str, Any]]] = {}
  for r in comp:
    groups.setdefault((r["model"], r["batch"], r["dtype"]), []).append(r)
  lines += ["## JAX vs the PyTorch peer (median ms per training step, alternating in one "
            "process)", "",
            "| model, batch, dtype | JAX best (impl) | JAX ms | peer best (row) | peer ms | "
            "JAX/peer |", "|---|---|---|---|---|---|"]
  for (model, batch, dtype), rows in groups.items():
    jx = [r for r in rows if r["framework"].startswith("jax")]
    pt = [r for r in rows if not r["framework"].startswith("jax")]
    bj = min(jx, key=lambda r: r["step_median_s"] / r["examples_per_step"]) if jx else None
    bp = min(pt, key=lambda r: r["step_median_s"] / r["examples_per_step"]) if pt else None
    ratio = (bj["examples_per_s"] / bp["examples_per_s"]) if bj and bp else None
    lines.append(f"| {model}, {batch}, {dtype} | {bj['impl'] if bj else '-'} | "
                 f"{_ms(bj and bj['step_median_s'])} | {bp['framework'] if bp else '-'} | "
                 f"{_ms(bp and bp['step_median_s'])} | "
                 f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
  lines += ["", "## Every compare row", "",
            common.markdown_table(comp, ["model", "batch", "dtype", "framework", "impl",
                                         "compile_s", "step_median_s", "examples_per_s",
                                         "ratio_vs_best_peer"],
                                  ["model", "B", "dtype", "row", "impl", "compile s",
                                   "median s", "ex/s", "JAX/best peer"]), ""]
  sweep = [r for r in records if r.get("bench") == "train_step"]
  if sweep:
    ok = [r for r in sweep if "step_median_s" in r]
    lines += ["## Batch sweep (`benchmarks/train_step.py`, train step)", "",
              common.markdown_table(ok, ["model", "dtype", "batch", "impl", "compile_s",
                                         "step_median_s", "examples_per_s", "tflops_per_s",
                                         "mfu"],
                                    ["model", "dtype", "B", "impl", "compile s", "median s",
                                     "ex/s", "TFLOP/s", "MFU"]), ""]
    notes += [f"sweep {r.get('dtype')} B={r.get('batch')}: "
              f"{r.get('stopped') or r.get('skipped') or r.get('error')}"
              for r in sweep if "step_median_s" not in r]
  dumps = [r for r in records if r.get("bench") == "xla_conv_census"]
  for r in dumps:
    lines += [f"## XLA's convolutions, {r['model']} section (optimised modules; "
              "`benchmarks/wgan_conv_census.py`)", ""]
    lines += [f"- {m['module']}: cuDNN {m['cudnn']}, of which with lhs dilation "
              f"{m['cudnn_lhs_dilated']}; plain convolution ops {m['plain_convolutions']}"
              for m in r["modules"]] or ["- no module with convolutions"]
    lines.append("")
  notes += [f"{r['model']} {r['dtype']} {r['framework']}: {r['skipped']}"
            for r in records if r.get("bench") == "compare" and "skipped" in r]
  if notes:
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="full", choices=sorted(PRESETS))
  p.add_argument("--smoke", action="store_true", help="same as --preset=smoke (tiny, CPU)")
  p.add_argument("--out_dir", default=None,
                 help="default: benchmarks/results (full), a temp folder (smoke)")
  p.add_argument("--budget_s", type=float, default=None,
                 help=f"whole-suite wall budget (default {DEFAULT_BUDGET_S})")
  p.add_argument("--only", default="", help="comma list of section names")
  p.add_argument("--compilation_cache_dir",
                 default=os.path.expanduser("~/.cache/d2m_jax/xla_cache_gpu_suite"),
                 help="XLA persistent compilation cache ('' to turn it off)")
  p.add_argument("--torch_threads", default="8")
  p.add_argument("--work_dir", default=None, help="per-section scratch (default: a temp dir)")
  a = p.parse_args(argv)
  preset = "smoke" if a.smoke else a.preset
  out_dir = a.out_dir or (os.path.join(REPO, "benchmarks", "results") if preset == "full"
                          else tempfile.mkdtemp(prefix="d2m_gpu_suite_smoke_"))
  only = [s for s in a.only.split(",") if s]
  try:
    jsonl, recs = run_suite(preset, out_dir, budget_s=a.budget_s, only=only,
                            cache_dir=a.compilation_cache_dir or None,
                            torch_threads=a.torch_threads, work_dir=a.work_dir)
  except (RuntimeError, subprocess.TimeoutExpired) as e:
    print(f"gpu_suite: {e}", file=sys.stderr)
    return 2
  print(f"[gpu_suite] wrote {jsonl}")
  return 0 if any("step_median_s" in r for r in recs) else 1


if __name__ == "__main__":
  sys.exit(main())
