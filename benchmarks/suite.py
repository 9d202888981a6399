"""The benchmark suite: one runner for every preset (CPU tables, the GPU suite, a smoke run).

    python -m benchmarks.suite --out_dir=OUT          # preset from the device: gpu, else cpu
    python -m benchmarks.suite --preset=smoke         # tiny sizes, CPU, a few minutes unloaded
    python -m benchmarks.suite --preset=cpu --only=sweep,compare --models=style_paper \
        --batches=32,256                              # a subset
    python -m benchmarks.suite --report=OUT/cpu_<date>_<device>.jsonl   # tables and plots again
    bash benchmarks/gpu_suite.sh --out_dir=OUT        # the gpu preset on a bare GPU machine

Presets (default: ``gpu`` when the JAX backend is an accelerator, else ``cpu``; the sections'
budgets are in the lists below and docs/performance.md):

* ``gpu`` (alias ``full``): issue 13's table in at most 470 s (8 minutes on one H100/H200):
  compare sections (``compare.py``: JAX and the PyTorch peer alternating, in one process on a GPU
  and in two on CPU (``benchmarks/peers.py``), one JAX row per ``model.rnn_impl``/``conv_impl``
  variant against the peer's eager, AMP bf16 and ``torch.compile`` rows), then the
  decomposition's batch sweep (``train_step.py``, MFU).
* ``cpu``: per model a ``train_step.py`` sweep (fwd and train, f32 and bf16, B=32..4096), JAX vs
  the peer at B=32 and 256 (1 torch thread), ``rnn.py``, ``parallel.py`` on 4 fake devices,
  ``data_loading.py`` and ``inference.py`` (their output in the .log); up to an hour a section.
* ``smoke``: the gpu preset's models at tiny JAX sizes in float32, one compile per row.

Isolation: each section runs in subprocesses of its own, a compare section one per JAX variant:
the first with the peer rows, every further one JAX-only (``--no_peer``; ``ratio_vs_best_peer``
against the section's best peer row). A variant that fails to compile, crashes or times out loses
its row (a record saying why), not the section. Time: a section may use what earlier ones left,
never what later ones need; a further variant starts only while 1.3x the section's slowest
compile + 15 s fits; a timeout kills the process group. ``--compilation_cache_dir`` lets reruns
(``--only=...``) skip most compiling.

Output: ``OUT/<preset>_<date>_<device>.jsonl`` (records stamped with preset, section, commit,
torch version, impl), ``.md`` (the tables, also printed), ``.log`` (every subprocess's output)
and, with matplotlib, ``_throughput_<model>.png`` and ``_jax_vs_torch.png``. No TensorFlow or
librosa is imported (``tests/test_suite.py`` runs the smoke preset without them).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Variant = Tuple[str, Dict[str, str]]


@dataclasses.dataclass
class Section:
  name: str
  kind: str                       # compare | sweep | rnn | parallel | script (benchmarks.<name>)
  model: str = ""
  dtypes: Sequence[str] = ("float32",)
  batches: Sequence[int] = ()
  budget_s: float = 3600.0
  variants: Sequence[Variant] = ()   # compare: JAX rows (label, overrides); () = the default row
  overrides: Dict[str, str] = dataclasses.field(default_factory=dict)
  rounds: int = 3
  steps: int = 5
  torch_compile: bool = True
  xla_dump: bool = False          # dump XLA's modules and summarise their convolutions
  xla_flags: str = ""             # appended to XLA_FLAGS of the section's subprocesses
  modes: Sequence[str] = ("train",)   # sweep


def _rnn(*impls: str, **extra: str) -> List[Variant]:
  tail = "".join(f",{k}={v}" for k, v in extra.items())
  return [(f"rnn={i}{tail}" if extra else i,
           {"model.rnn_impl": i, **{f"model.{k}": v for k, v in extra.items()}}) for i in impls]


# The first variant of a section is the expected default (auto = unrolled on GPU). WGAN: no
# torch.compile row (it could compile the generator only; the critic's double backward
# dominates), so its time goes to conv_impl (xla = cuDNN vs im2col). 'pallas' is timed only where
# some GRU is small enough for the fused kernel (H <= 64: the WGAN noise GRU, the composition's
# style GRU-30). Command buffers (CUDA graphs) for while loops too: each scan's steps become one
# graph launch instead of a host-driven loop (issue 25's row).
CMDBUF_WHILE = "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE"
GPU = [
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
            steps=3, torch_compile=False, xla_dump=True),
    Section("composition_f32", "compare", "d2m_composition", ["float32"], [256], 80,
            _rnn("unrolled", "scan", "pallas")),
    Section("sweep_decomposition", "sweep", "d2m_decomposition", ["bfloat16", "float32"],
            [256, 1024, 4096], 70),
]

# CPU smoke: tiny JAX sizes, float32 (XLA:CPU compiles the bf16 decomposition several times
# slower), one compile per row; budgets generous (at load 15-20 on the shared 2-core VM one tiny
# model compiles in 50-250 s of wall time).
_TINY_D2M = {"model.hidden": "16", "model.z_mov": "8", "model.init_hidden": "8"}
_QUICK = dict(rounds=1, steps=2, torch_compile=False)
SMOKE = [
    Section("decomposition_f32", "compare", "d2m_decomposition", ["float32"], [4], 300,
            _rnn("scan"), overrides=_TINY_D2M, **_QUICK),
    Section("style_gru512x2_f32", "compare", "style_improved", ["float32"], [4], 300,
            _rnn("scan"), overrides={"model.hidden": "16"}, **_QUICK),
    Section("wgan_audio_f32", "compare", "wgan_audio", ["float32"], [8], 300,
            _rnn("scan", conv_impl="im2col"),
            overrides={"model.per_update_batch": "1", "model.enc_channels": "2",
                       "model.channels": "8", "model.audio_channels": "2",
                       "model.critic_code": "8", "model.latent": "20", "model.noise": "4",
                       "model.size": "16", "model.critic_hidden": "8", "model.enc_code": "16",
                       "model.n_cells": "1"}, **dict(_QUICK, steps=1), xla_dump=True),
    Section("composition_f32", "compare", "d2m_composition", ["float32"], [4], 300,
            _rnn("scan"), overrides=dict(_TINY_D2M, **{"model.z_dance": "8",
                                                        "model.dance_hidden": "16"}),
            **dict(_QUICK, steps=1)),
    Section("sweep_decomposition", "sweep", "d2m_decomposition", ["float32"], [4, 8], 300,
            overrides=_TINY_D2M),
]
COMPARE_MODELS = ("style_paper", "style_improved", "d2m_decomposition", "d2m_composition",
                  "wgan_audio")


def cpu_sections() -> List[Section]:
  from benchmarks import train_step as ts  # pylint: disable=import-outside-toplevel
  return ([Section(f"sweep_{m}", "sweep", m, ["float32", "bfloat16"], ts.DEFAULT_BATCHES,
                   modes=("fwd", "train")) for m in ts.available_models()]
          + [Section(f"compare_{m}_b{b}", "compare", m, ["float32"], [b], steps=3,
                     torch_compile=False) for m in COMPARE_MODELS for b in (32, 256)]
          + [Section("rnn", "rnn", batches=[64]), Section("parallel", "parallel", "style_paper"),
             Section("data_loading", "script"), Section("inference", "script")])


PRESETS = {"gpu": lambda: GPU, "cpu": cpu_sections, "smoke": lambda: SMOKE}
DEFAULT_BUDGET_S = {"gpu": 470.0, "smoke": 1500.0}   # cpu: the sum of its sections' budgets


# ----------------------------------------------------------------------------------------------
# Subprocesses

def subprocess_env(cache_dir: Optional[str], preallocate: bool, xla_flags: str = "") -> Dict:
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
  if not preallocate:  # JAX and torch share the GPU in one process
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  if xla_flags:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  return env


def run_logged(cmd: List[str], log_path: str, timeout: float, env: Dict,
               title: str = "") -> Tuple[int, str]:
  """Runs ``cmd`` with its output appended to ``log_path``; at ``timeout`` (124) and at its end
  kills its whole process group (torch.compile's workers included). Returns (exit code, its last
  error line, else its last line)."""
  with open(log_path, "a") as lf:
    lf.write(f"\n===== {title}: $ {' '.join(cmd)}\n")
    lf.flush()
    start = lf.tell()
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT,
                         start_new_session=True)
    rc = None
    try:
      rc = p.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
      pass
    finally:  # timeout, ^C or leftovers (compile workers): nothing of the section lives on
      with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
      p.wait()
    if rc is None:
      rc = 124
      lf.write(f"TIMEOUT after {timeout:.0f} s\n")
  with open(log_path) as f:
    f.seek(start)
    tail = [line for line in f.read().splitlines() if line.strip()]
  why = [x for x in tail if re.match(r"(TIMEOUT after|[\w.]+(Error|Exception)\b)", x)]
  return rc, (why or tail or [""])[-1][:300]


PROBE = r"""
import json, importlib.metadata as md, importlib.util
out = {"torch_importable": importlib.util.find_spec("torch") is not None, "torch_version": None}
try:
  out["torch_version"] = md.version("torch")
except md.PackageNotFoundError:
  pass
try:
  import jax
  from benchmarks import common
  out.update(common.environment(), backend=jax.default_backend())
except Exception as e:
  out["error"] = f"{type(e).__name__}: {e}"
print("PROBE " + json.dumps(out))
"""


def probe(env: Dict[str, str], timeout: float = 120) -> Dict[str, Any]:
  """Backend, device, versions and commit, from a short subprocess (the runner never starts a
  backend: it would hold GPU memory the sections need)."""
  p = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=timeout)
  for line in p.stdout.splitlines():
    if line.startswith("PROBE "):
      return json.loads(line[len("PROBE "):])
  raise RuntimeError(f"probe failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")


def command(sec: Section, out: str, timeout: float, torch_threads: str, info: Dict[str, Any],
            variant: Optional[Variant] = None, peer: bool = True) -> List[str]:
  module = {"sweep": "train_step", "script": sec.name}.get(sec.kind, sec.kind)
  head = [sys.executable, "-m", f"benchmarks.{module}"]
  sets = [f"--set={k}={v}" for k, v in sec.overrides.items()]
  if sec.kind == "compare":  # compare keeps 15 s of the timeout for one round of every row
    return head + [
        f"--model={sec.model}", f"--batch={sec.batches[0]}", f"--dtype={sec.dtypes[0]}",
        f"--rounds={sec.rounds}", f"--steps={sec.steps}", f"--torch_threads={torch_threads}",
        f"--deadline_s={max(5.0, timeout - 15.0):.0f}", "--allow_no_torch", f"--out={out}"] + (
            [f"--variants_json={json.dumps([variant])}"] if variant else []) + (
            ["--torch_compile"] if peer and sec.torch_compile else []) + (
            [] if peer else ["--no_peer"]) + sets
  if sec.kind == "sweep":  # a point predicted to take over 1/3 of the time or 2 min is not begun
    return head + [f"--model={sec.model}", f"--batches={','.join(map(str, sec.batches))}",
                   f"--dtypes={','.join(sec.dtypes)}", f"--modes={','.join(sec.modes)}",
                   f"--budget_s={min(120.0, max(5.0, timeout / 3)):.0f}", "--min_steps=5",
                   "--max_steps=30", "--min_time_s=1", f"--out={out}"] + sets
  if sec.kind == "rnn":
    return head + [f"--batch={sec.batches[0]}", f"--out={out}"]
  if sec.kind == "parallel":
    fake = ["--fake_devices=4"] if info.get("backend") == "cpu" else []
    return head + [f"--model={sec.model}", f"--out={out}"] + fake + sets
  if sec.kind == "script":
    return head
  raise ValueError(f"unknown section kind {sec.kind!r}")


def _read(path: str) -> List[Dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _is_jax(r: Dict[str, Any]) -> bool:
  return r.get("framework", "jax").startswith("jax")


def run_section(sec: Section, timeout: float, info: Dict[str, Any], *, work_dir: str,
                log_path: str, cache_dir: Optional[str], torch_threads: str,
                notes: List[str]) -> List[Dict[str, Any]]:
  """One section's records: a compare section one subprocess per JAX variant, others one."""
  deadline = time.perf_counter() + timeout
  jobs = list(sec.variants) if sec.kind == "compare" and sec.variants else [None]
  got: List[Dict[str, Any]] = []
  for j, variant in enumerate(jobs):
    left = deadline - time.perf_counter()
    peer = not any(not _is_jax(r) for r in got)   # the first process with a peer row has it
    base = variant and {"bench": "compare", "model": sec.model, "batch": sec.batches[0],
                        "dtype": sec.dtypes[0], "framework": "jax (jit)",
                        "jax_variant": variant[0], "overrides": variant[1]}
    slowest = max([r.get("compile_s") or 0.0 for r in got if _is_jax(r)], default=0.0)
    if j and left < 1.3 * slowest + 15.0:
      got.append({**base, "skipped": f"deadline: {max(0.0, left):.0f} s left, compiles took "
                                     f"up to {slowest:.0f} s"})
      continue
    part = os.path.join(work_dir, f"{sec.name}_{j}.jsonl")
    if os.path.exists(part):
      os.remove(part)
    dump = os.path.join(work_dir, f"xla_dump_{sec.name}_{j}")
    shutil.rmtree(dump, ignore_errors=True)
    flags = sec.xla_flags + (f" --xla_dump_to={dump} --xla_dump_hlo_as_text" if sec.xla_dump
                             else "")
    cmd = command(sec, part, left, torch_threads, info, variant, peer)
    print(f"[suite] {sec.name}: timeout {left:.0f} s: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    rc, last = run_logged(cmd, log_path, left, subprocess_env(
        cache_dir, sec.kind != "compare", flags.strip()), sec.name)
    recs = _read(part)
    if variant and not any(_is_jax(r) for r in recs):  # the variant's row, saying why
      recs.append({**base, "skipped": f"failed: exit {rc}: {last}"})
    elif rc:
      notes.append(f"{sec.name}: exit {rc} after {time.perf_counter() - t0:.0f} s "
                   f"({len(recs)} records): {last}")
    print(f"[suite] {sec.name}: exit {rc}, {time.perf_counter() - t0:.0f} s, {len(recs)} "
          "records", flush=True)
    got += recs
  peers = [r for r in got if not _is_jax(r) and "step_median_s" in r]
  best = max(peers, key=lambda r: r["examples_per_s"]) if peers else None
  for r in got:  # rows of further variants: against the best peer row of the first process
    if sec.kind == "compare" and _is_jax(r):
      r["framework"] = "jax (jit)" + (f" {r.get('jax_variant')}" if len(jobs) > 1 else "")
      if best and "step_median_s" in r and r.get("best_peer") is None:
        r.update(best_peer=best["framework"],
                 ratio_vs_best_peer=r["examples_per_s"] / best["examples_per_s"])
  if sec.xla_dump:
    from benchmarks import wgan_conv_census  # pylint: disable=import-outside-toplevel
    mods = []
    for j, variant in enumerate(jobs):
      dump = os.path.join(work_dir, f"xla_dump_{sec.name}_{j}")
      if os.path.isdir(dump):
        mods += [dict(m, module=f"{(variant or ['default'])[0]}/{m['module']}")
                 for m in wgan_conv_census.xla_dump_summary(dump)]
    got.append({"bench": "xla_conv_census", "model": sec.model, "modules": mods,
                "device_kind": info.get("device_kind"), "jax": info.get("jax")})
  return got


def enrich(rec: Dict[str, Any], section: Section, preset: str, info: Dict[str, Any]) -> Dict:
  """Stamps a record with what the suite knows: preset, section, commit, torch, impl."""
  out = dict(rec)
  out.update({k: rec.get(k) or v for k, v in (
      ("suite", "benchmarks.suite"), ("preset", preset), ("section", section.name),
      ("commit", info.get("commit")), ("torch", info.get("torch_version")))})
  if rec.get("bench") in ("compare", "train_step"):
    ov = rec.get("overrides") or {}
    conv = rec.get("conv_impl") or ov.get("model.conv_impl")
    out["impl"] = (rec.get("peer_impl") or rec.get("framework")) if not _is_jax(rec) else (
        f"rnn={rec.get('rnn_impl') or ov.get('model.rnn_impl') or 'auto'}"
        + (f",conv={conv}" if conv else "")
        + (",cmdbuf=" + section.xla_flags.rsplit(",", 1)[-1] if section.xla_flags else ""))
  if section.xla_flags:
    out["xla_flags"] = section.xla_flags
  if preset == "smoke":
    out.pop("step_times_s", None)
  return out


def select(sections: List[Section], only=(), models=(), batches=None) -> List[Section]:
  """``only``: section names or kinds; ``models``: sweep and compare sections of those models;
  ``batches``: the sweeps' batch sizes."""
  out = [s for s in sections if (not only or s.name in only or s.kind in only)
         and (not models or s.kind not in ("sweep", "compare") or s.model in models)]
  return [dataclasses.replace(s, batches=batches) if batches and s.kind == "sweep" else s
          for s in out]


def run_suite(preset: Optional[str], out_dir: Optional[str], *, budget_s=None, only=(),
              models=(), batches=None, cache_dir=None, torch_threads=None, work_dir=None,
              sections: Optional[List[Section]] = None, info=None):
  """Runs a preset (None: from the device) or the given ``sections``; returns (jsonl, records)."""
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  info = info or probe(subprocess_env(cache_dir, False))
  if "error" in info:
    raise RuntimeError(f"jax does not start: {info['error']}")
  preset = {"full": "gpu"}.get(preset, preset) or (
      "cpu" if info.get("backend") == "cpu" else "gpu")
  sections = select(sections or PRESETS[preset](), only, models, batches)
  if not sections:
    raise RuntimeError(f"no section of preset {preset!r} matches --only/--models")
  budget_s = budget_s or DEFAULT_BUDGET_S.get(preset) or sum(s.budget_s for s in sections)
  torch_threads = torch_threads or ("1" if info.get("backend") == "cpu" else "8")
  out_dir = out_dir or (tempfile.mkdtemp(prefix="d2m_suite_") if preset == "smoke" else
                        os.path.join(REPO, "benchmarks", "results"))
  work_dir = work_dir or tempfile.mkdtemp(prefix="d2m_suite_work_")
  for d in (out_dir, work_dir):
    os.makedirs(d, exist_ok=True)
  date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
  stem = os.path.join(out_dir, f"{preset}_{date}_{info['device_kind']}")
  print(f"[suite] {preset}: {len(sections)} sections, budget {budget_s:.0f} s; device "
        f"{info['device_name']} ({info['device_kind']}), jax {info['jax']}, torch "
        f"{info.get('torch_version')}, commit {info.get('commit')}; results -> {stem}.jsonl",
        flush=True)
  if not info.get("torch_importable"):
    print("[suite] WARNING: torch is not importable: compare sections time JAX only", flush=True)
  records: List[Dict[str, Any]] = []
  notes: List[str] = []
  for i, sec in enumerate(sections):
    timeout = budget_s - (time.perf_counter() - t0) - sum(s.budget_s for s in sections[i + 1:])
    if timeout < 10:
      notes.append(f"{sec.name}: not run: {timeout:.0f} s left of its budget")
      continue
    got = run_section(sec, timeout, info, work_dir=work_dir, log_path=stem + ".log",
                      cache_dir=cache_dir, torch_threads=torch_threads, notes=notes)
    records += [enrich(r, sec, preset, info) for r in got]
    files.write_text(stem + ".jsonl", "".join(json.dumps(r, default=str) + "\n" for r in records))
  write_report(stem, records, info, notes, preset, time.perf_counter() - t0)
  return stem + ".jsonl", records


# ----------------------------------------------------------------------------------------------
# Report

def report(records: List[Dict[str, Any]], info: Dict[str, Any], notes: List[str], preset: str,
           total_s: float) -> str:
  """Markdown: best JAX row vs the peer's best row, every compare row, the train-step sweeps, the
  scans, the parallel modes, XLA's convolutions, notes."""
  ms = lambda x: "-" if x is None else f"{x * 1e3:.2f}"  # noqa: E731
  by: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
  for r in records:
    by[r.get("bench", "?")].append(r)
  lines = [f"# Benchmark suite ({preset}): {info.get('device_name')} x{info.get('num_devices')} "
           f"({info.get('device_kind')}), jax {info.get('jax')}, torch "
           f"{info.get('torch_version', info.get('torch'))}, commit {info.get('commit')}, "
           f"{info.get('date_utc')} UTC, {total_s:.0f} s", ""]
  comp = [r for r in by["compare"] if "step_median_s" in r]
  if comp:
    from benchmarks import compare  # pylint: disable=import-outside-toplevel
    groups: Dict[Tuple, List[Dict[str, Any]]] = defaultdict(list)
    for r in comp:
      groups[(r["model"], r["batch"], r["dtype"])].append(r)
    lines += ["## JAX vs the PyTorch peer (median ms per training step, alternating in one "
              "process)", "", "| model, batch, dtype | JAX best (impl) | JAX ms | peer best (row) "
              "| peer ms | JAX/peer |", "|---|---|---|---|---|---|"]
    for (model, batch, dtype), rows in groups.items():
      best = [min(rs, key=lambda r: r["step_median_s"] / r["examples_per_step"]) if rs else None
              for rs in ([r for r in rows if _is_jax(r)], [r for r in rows if not _is_jax(r)])]
      bj, bp = best
      ratio = f"{bj['examples_per_s'] / bp['examples_per_s']:.2f}x" if bj and bp else "-"
      lines.append(f"| {model}, {batch}, {dtype} | {bj.get('impl') if bj else '-'} | "
                   f"{ms(bj and bj['step_median_s'])} | {bp['framework'] if bp else '-'} | "
                   f"{ms(bp and bp['step_median_s'])} | {ratio} |")
    lines += ["", "## Every compare row (`benchmarks/compare.py`)", "",
              compare.table(comp, [("impl", "impl"), ("compile_s", "compile s")]), ""]
  for bench, title in (("train_step", "Training step"), ("rnn", "GRU vs LSTM scans, one layer "
                        "fwd+bwd"), ("parallel", "Data parallelism")):
    if by[bench]:
      table = importlib.import_module(f"benchmarks.{bench}").table(by[bench])
      lines += [f"## {title} (`benchmarks/{bench}.py`)", "", table, ""]
  for r in by["xla_conv_census"]:
    lines += [f"## XLA's convolutions, {r['model']} section (optimised modules; "
              "`benchmarks/wgan_conv_census.py`)", ""]
    lines += [f"- {m['module']}: cuDNN {m['cudnn']}, of which with lhs dilation "
              f"{m['cudnn_lhs_dilated']}; plain convolution ops {m['plain_convolutions']}"
              for m in r["modules"]] or ["- no module with convolutions"]
    lines.append("")
  notes = notes + [f"{r['model']} {r['dtype']} {r['framework']}: {r['skipped']}"
                   for r in by["compare"] if "skipped" in r]
  if notes:
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
  return "\n".join(lines)


def write_report(stem: str, records, info, notes, preset: str, total_s: float) -> str:
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  md = report(records, info, notes, preset, total_s)
  files.write_text(stem + ".md", md)
  print(md, flush=True)
  try:
    plots(records, stem)
  except ImportError:  # matplotlib is not on the accelerator images
    print("[suite] matplotlib not importable: no plots", flush=True)
  return md


def plots(records, stem: str) -> List[str]:
  """``<stem>_throughput_<model>.png`` (examples/s vs batch per dtype x mode, the original
  modules' 1-thread CPU figures dashed) and ``<stem>_jax_vs_torch.png`` (bars per model, batch)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from benchmarks import train_step as ts  # pylint: disable=import-outside-toplevel
  written = []

  def save(fig, ax, name, title):
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}_{name}.png", dpi=100)
    plt.close(fig)
    written.append(f"{stem}_{name}.png")

  rows = [r for r in records if r.get("bench") == "train_step" and "examples_per_s" in r]
  for m in sorted({r["model"] for r in rows}):
    fig, ax = plt.subplots(figsize=(6, 4))
    series = defaultdict(list)
    for r in rows:
      if r["model"] == m:
        series[(r["dtype"], r["mode"])].append((r["batch"], r["examples_per_s"]))
    for (dtype, mode), pts in sorted(series.items()):
      ax.plot(*zip(*sorted(pts)), marker="o", label=f"{mode} {dtype}")
    orig = [(b, ts.original_cpu(m, b)["orig_torch_1t_examples_per_s"]) for b in (32, 128, 512)]
    if any(o for _, o in orig):
      ax.plot(*zip(*[o for o in orig if o[1]]), "k--", marker="x",
              label="original PyTorch, 1 thr (spec §5)")
    ax.set(yscale="log", xlabel="batch", ylabel="examples / s")
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    save(fig, ax, f"throughput_{m}", f"{m} on {rows[0].get('device_kind', '')}")
  comp = [r for r in records if r.get("bench") == "compare" and "examples_per_s" in r]
  if comp:
    keys = sorted({(r["model"], r["batch"]) for r in comp})
    fws = sorted({r["framework"] for r in comp}, key=lambda s: (not s.startswith("jax"), s))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 4))
    width = 0.8 / len(fws)
    for i, fw in enumerate(fws):
      vals = [([r["examples_per_s"] for r in comp if (r["model"], r["batch"]) == k
                and r["framework"] == fw] or [0])[-1] for k in keys]
      ax.bar([j + i * width for j in range(len(keys))], vals, width, label=fw)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{m}\nB={b}" for m, b in keys], fontsize=8)
    ax.set(yscale="log", ylabel="examples / s (training)")
    save(fig, ax, "jax_vs_torch", f"JAX vs PyTorch, same device ({comp[0].get('device_kind')})")
  return written


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default=None, choices=["gpu", "full", "cpu", "smoke"],
                 help="default: gpu on an accelerator, else cpu")
  p.add_argument("--smoke", action="store_true", help="same as --preset=smoke (tiny, CPU)")
  p.add_argument("--out_dir", default=None,
                 help="default: benchmarks/results (gpu, cpu), a temp folder (smoke)")
  p.add_argument("--budget_s", type=float, default=None,
                 help=f"whole-suite wall budget (default {DEFAULT_BUDGET_S}; cpu: the sum of "
                      "its sections')")
  p.add_argument("--only", default="", help="comma list of section names or kinds")
  p.add_argument("--models", default="", help="comma list: the sweeps and compares of these")
  p.add_argument("--batches", default="", help="comma list: the sweeps' batch sizes")
  p.add_argument("--compilation_cache_dir",
                 default=os.path.expanduser("~/.cache/d2m_jax/xla_cache_suite"),
                 help="XLA persistent compilation cache ('' to turn it off)")
  p.add_argument("--torch_threads", default=None,
                 help="default 1 on CPU (more threads than free cores make OpenMP spin), else 8")
  p.add_argument("--work_dir", default=None, help="per-run scratch (default: a temp dir)")
  p.add_argument("--report", default=None, metavar="JSONL",
                 help="only write the tables and plots of this suite output again")
  a = p.parse_args(argv)
  split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
  try:
    if a.report:
      recs = _read(a.report)
      if not recs:
        raise RuntimeError(f"{a.report}: no records")
      write_report(os.path.splitext(a.report)[0], recs, recs[0], [], recs[0].get("preset"), 0)
      return 0
    jsonl, recs = run_suite(
        "smoke" if a.smoke else a.preset, a.out_dir, budget_s=a.budget_s, only=split(a.only),
        models=split(a.models), batches=[int(b) for b in split(a.batches)] or None,
        cache_dir=a.compilation_cache_dir or None, torch_threads=a.torch_threads,
        work_dir=a.work_dir)
  except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
    print(f"suite: {e}", file=sys.stderr)
    return 2
  print(f"[suite] wrote {jsonl}")
  return 0 if any("step_median_s" in r for r in recs) else 1


if __name__ == "__main__":
  sys.exit(main())
