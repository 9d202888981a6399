"""The benchmark runner (``benchmarks/suite.py``) and the PyTorch peer's precision rows.

* isolation: a compare section runs one subprocess per JAX variant (here a stand-in for
  compare.py), so a variant that fails loses its row only, the peer rows come from the first
  process that ran, further variants run ``--no_peer`` and are divided by the best peer row; a
  timeout kills the whole process group;
* time: a section may use what earlier ones left, never what later ones need; the gpu preset fits
  in 8 minutes and covers the issue's table; the default preset follows the backend;
* report: best JAX row vs the peer's best row, every table, the plots, ``--report`` again;
* the peer: ``prepare`` flattens every RNN, AMP runs the Linear layers in bfloat16 with float32
  parameters, the cast row holds bfloat16 parameters (skipped without PyTorch on PYTHONPATH);
* end to end, in subprocesses with TensorFlow, tensorflow_datasets and librosa made unimportable
  (as on the GPU image): every smoke section's model builds (config -> task -> abstract state),
  and two sections (one compare, one sweep) run, producing records that carry device, versions,
  commit, dtype, batch and implementation.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from benchmarks import compare
from benchmarks import suite
from import_blocker import write_blocker

REPO = pathlib.Path(__file__).resolve().parents[1]
TORCH_SITE = REPO / ".torch_site"

# Makes the packages look absent (as on the GPU image): every import finder is wrapped to find
# nothing for them, so `import librosa` raises ModuleNotFoundError and importlib.util.find_spec
# returns None (torch probes for tensorflow with find_spec).


def test_gpu_preset_fits_eight_minutes_and_covers_the_issue_table():
  assert suite.DEFAULT_BUDGET_S["gpu"] <= 480
  assert sum(s.budget_s for s in suite.GPU) <= suite.DEFAULT_BUDGET_S["gpu"]
  got = {(s.model, s.dtypes[0], s.batches[0]) for s in suite.GPU if s.kind == "compare"}
  assert got == {("d2m_decomposition", "float32", 256), ("d2m_decomposition", "bfloat16", 256),
                 ("d2m_composition", "float32", 256), ("style_improved", "float32", 256),
                 ("wgan_audio", "float32", 64)}
  sweep = [s for s in suite.GPU if s.kind == "sweep"]
  assert sweep and list(sweep[0].batches) == [256, 1024, 4096]
  assert set(sweep[0].dtypes) == {"float32", "bfloat16"}
  wgan = next(s for s in suite.GPU if s.model == "wgan_audio")
  assert {ov["model.conv_impl"] for _, ov in wgan.variants} == {"xla", "im2col"}
  cmdbuf = [s for s in suite.GPU if "WHILE" in s.xla_flags]
  assert [(s.model, s.dtypes[0], [ov for _, ov in s.variants]) for s in cmdbuf] == [
      ("d2m_decomposition", "bfloat16", [{"model.rnn_impl": "scan"}])]
  assert suite.enrich({"bench": "compare", "framework": "jax (jit) scan",
                       "overrides": {"model.rnn_impl": "scan"}},
                      cmdbuf[0], "gpu", {})["impl"] == "rnn=scan,cmdbuf=WHILE"
  # the same models in the smoke preset, so the smoke run touches every import path
  assert {s.model for s in suite.SMOKE} == {s.model for s in suite.GPU}


INFO = {"backend": "cpu", "device_kind": "cpu-test", "device_name": "cpu", "num_devices": 1,
        "jax": "0", "commit": "abc1234", "torch_version": "2.x", "torch_importable": True,
        "date_utc": "2026-12-04 00:00"}

# Stands in for benchmarks/compare.py behind the runner's real command lines: logs its argv,
# fails like a Pallas variant that does not lower, else writes compare.py's records (its peer
# row only without --no_peer).
FAKE_COMPARE = r"""
import json, sys
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], True) for a in sys.argv[1:])
label, ov = json.loads(args["variants_json"])[0]
with open(args["out"] + ".argv", "w") as f:
  json.dump(sys.argv[1:], f)
if label == "bad":
  raise RuntimeError("Mosaic failed to lower the bad variant")
B, ms = int(args["batch"]), {"scan": 20.0, "unrolled": 10.0}[label]
base = {"bench": "compare", "model": args["model"], "batch": B, "dtype": args["dtype"],
        "examples_per_step": B, "device_kind": "cpu-test", "jax": "0"}
recs = [dict(base, framework="jax (jit)", jax_variant=label, rnn_impl=ov["model.rnn_impl"],
             overrides=ov, compile_s={"scan": 20.0}.get(label, 1.0), step_median_s=ms / 1e3,
             examples_per_s=B / ms * 1e3)]
if "no_peer" not in args:
  recs.append(dict(base, framework="torch eager float32, 1 thr", peer_impl="torch eager float32",
                   step_median_s=0.040, examples_per_s=B / 0.040))
  recs[0].update(best_peer=recs[1]["framework"],
                 ratio_vs_best_peer=recs[0]["examples_per_s"] / recs[1]["examples_per_s"])
with open(args["out"], "a") as f:
  f.writelines(json.dumps(r) + "\n" for r in recs)
"""


def test_a_failing_variant_loses_its_row_only(tmp_path, monkeypatch):
  fake = tmp_path / "fake_compare.py"
  fake.write_text(FAKE_COMPARE)
  real = suite.command
  monkeypatch.setattr(suite, "command", lambda *a, **k: [sys.executable, str(fake)]
                      + real(*a, **k)[3:])
  sec = suite.Section("decomp", "compare", "d2m_decomposition", ["float32"], [8], 60,
                      [("bad", {"model.rnn_impl": "pallas"})] + suite._rnn("scan", "unrolled"))
  jsonl, recs = suite.run_suite("cpu", str(tmp_path / "out"), sections=[sec], info=INFO,
                                work_dir=str(tmp_path / "work"))
  argv = [json.loads((tmp_path / "work" / f"decomp_{j}.jsonl.argv").read_text())
          for j in range(3)]
  # the bad variant was meant to time the peer; it failed, so the next process did
  assert ["--no_peer" in a for a in argv] == [False, False, True]
  assert ["--torch_compile" in a for a in argv] == [True, True, False]
  by = {r["framework"]: r for r in recs}
  assert set(by) == {"jax (jit) bad", "jax (jit) scan", "jax (jit) unrolled",
                     "torch eager float32, 1 thr"}
  assert by["jax (jit) bad"]["skipped"] == (
      "failed: exit 1: RuntimeError: Mosaic failed to lower the bad variant")
  assert by["jax (jit) bad"]["impl"] == "rnn=pallas"
  # further variants are divided by the first process's best peer row: 40 ms / 10 ms
  assert by["jax (jit) unrolled"]["ratio_vs_best_peer"] == pytest.approx(4.0)
  assert by["jax (jit) scan"]["ratio_vs_best_peer"] == pytest.approx(2.0)
  assert all(r["section"] == "decomp" and r["commit"] == "abc1234" for r in recs)
  assert [json.loads(line) for line in pathlib.Path(jsonl).read_text().splitlines()] == recs
  md = pathlib.Path(jsonl).with_suffix(".md").read_text()
  assert ("| d2m_decomposition, 8, float32 | rnn=unrolled | 10.00 | torch eager float32, 1 thr "
          "| 40.00 | 4.00x |") in md
  assert ("- d2m_decomposition float32 jax (jit) bad: failed: exit 1: RuntimeError: Mosaic "
          "failed") in md
  # 30 s left cannot hold 1.3x the 20 s compile of the first variant + 15 s: no process
  sec = suite.Section("short", "compare", "d2m_decomposition", ["float32"], [8], 30,
                      suite._rnn("scan", "unrolled"))
  _, recs = suite.run_suite("cpu", str(tmp_path / "out"), sections=[sec], info=INFO,
                            work_dir=str(tmp_path / "work"))
  assert not (tmp_path / "work" / "short_1.jsonl.argv").exists()
  assert next(r for r in recs if r.get("jax_variant") == "unrolled")["skipped"].startswith(
      "deadline: ")


def _gone(pid: int) -> bool:
  for _ in range(50):  # gone, or a zombie waiting for init
    stat = pathlib.Path(f"/proc/{pid}/stat")
    if not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z":
      return True
    time.sleep(0.1)
  return False


def test_timeout_and_exit_kill_the_process_group(tmp_path):
  log = tmp_path / "log"
  spawn = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
           "print(p.pid, flush=True); ")
  t0 = time.perf_counter()
  rc, last = suite.run_logged([sys.executable, "-c", spawn + "time.sleep(60)"], str(log), 1.0,
                              dict(os.environ), "hang")
  assert rc == 124 and time.perf_counter() - t0 < 20
  assert "TIMEOUT after 1 s" in log.read_text() and last == "TIMEOUT after 1 s"
  assert _gone(int(log.read_text().splitlines()[2]))
  # a process that exits leaving a worker behind (torch.compile's pool): the worker goes too
  rc, last = suite.run_logged([sys.executable, "-c", spawn + "sys.exit(3)"], str(log), 30.0,
                              dict(os.environ), "leaves")
  assert rc == 3
  assert _gone(int(last))


def test_budgets_later_sections_keep_theirs_and_the_preset_follows_the_backend(
    tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(suite, "run_section", lambda sec, timeout, *a, **k: seen.append(
      (sec.name, timeout)) or [])
  secs = [suite.Section(n, "rnn", budget_s=b) for n, b in (("a", 100), ("b", 50), ("c", 30))]
  suite.run_suite("cpu", str(tmp_path), sections=secs, info=INFO, budget_s=200)
  assert [n for n, _ in seen] == ["a", "b", "c"]
  # a: 200 - 80 for the later ones; b: what a left unused too; c: everything left
  for (_, got), want in zip(seen, (120, 170, 200)):
    assert want - 2 < got <= want
  seen.clear()
  _, recs = suite.run_suite("cpu", str(tmp_path), sections=secs, info=INFO, budget_s=85)
  assert [n for n, _ in seen] == ["b", "c"]      # a would eat what b and c need
  assert "- a: not run: 5 s left of its budget" in (tmp_path / next(
      p for p in os.listdir(tmp_path) if p.endswith(".md"))).read_text()
  seen.clear()
  suite.run_suite(None, str(tmp_path), info=dict(INFO, backend="gpu"), only=["compare"],
                  models=["wgan_audio"])
  assert [n for n, _ in seen] == ["wgan_audio_f32"]
  seen.clear()
  suite.run_suite(None, str(tmp_path), info=INFO, only=["sweep", "rnn"],
                  models=["style_paper"], batches=[8])
  assert [n for n, _ in seen] == ["sweep_style_paper", "rnn"]


def test_every_section_runs_a_benchmark_that_exists():
  for sec in suite.GPU + suite.SMOKE + suite.cpu_sections():
    cmd = suite.command(sec, "out.jsonl", 100.0, "1", INFO)
    assert cmd[1] == "-m" and (REPO / (cmd[2].replace(".", "/") + ".py")).exists(), cmd
    assert sec.kind == "script" or "--out=out.jsonl" in cmd, cmd


def test_report_tables_plots_and_report_again(tmp_path):
  env = {"device_kind": "cpu-2vcpu-epyc", "device_name": "cpu", "num_devices": 1,
         "date_utc": "2026-01-01 00:00", "jax": "0", "preset": "cpu"}
  recs = [{"bench": "train_step", "model": "style_paper", "dtype": "float32", "mode": "train",
           "batch": b, "examples_per_s": eps, "step_median_s": b / eps, **env}
          for b, eps in ((32, 1000.0), (64, 1500.0))]
  recs += [{"bench": "compare", "model": "style_paper", "batch": 32, "dtype": "float32",
            "framework": fw, "impl": impl, "examples_per_s": eps, "step_median_s": 32 / eps,
            "examples_per_step": 32, "ratio": 1000.0 / eps, **env}
           for fw, impl, eps in (("jax (jit)", "rnn=scan", 1000.0),
                                 ("torch eager, 1 thr", "torch eager", 250.0))]
  path = tmp_path / "cpu_2026-01-01_cpu-2vcpu-epyc.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in recs))
  assert suite.main([f"--report={path}"]) == 0
  text = path.with_suffix(".md").read_text()
  assert ("| style_paper | 32 | float32 | torch eager, 1 thr | torch eager | - | 0.128 | 250 | "
          "4 | - | - | - | - | - |") in text
  assert "| style_paper, 32, float32 | rnn=scan | 32.00 | torch eager, 1 thr | 128.00 | 4.00x |" \
      in text
  assert "| style_paper | float32 | train | 64 |" in text
  for png in ("throughput_style_paper", "jax_vs_torch"):
    assert (tmp_path / f"{path.stem}_{png}.png").read_bytes()[:4] == b"\x89PNG"
  assert suite.main([f"--report={tmp_path / 'none.jsonl'}"]) == 2


def test_peer_rows_per_dtype():
  f32 = compare._peer_rows("float32", [1, 2], torch_compile=True)
  assert [n for n, _, _ in f32] == ["torch eager float32, 1 thr", "torch eager float32, 2 thr",
                                    "torch.compile float32, 1 thr"]
  assert all(not s["amp"] and s["cast"] == "float32" for _, _, s in f32)
  bf = compare._peer_rows("bfloat16", [1], torch_compile=True)
  assert [(s["cast"], s["amp"], s["compile"]) for _, _, s in bf] == [
      ("bfloat16", False, False), ("float32", True, False), ("float32", True, True)]


def test_xla_dump_summary_counts_cudnn_kinds_and_dilations(tmp_path):
  from benchmarks import wgan_conv_census
  lines = [
      '%a = (f32[8,32,19200]{2,1,0}, u8[0]{0}) custom-call(f32[8,1,76800]{2,1,0} %p, '
      'f32[32,1,25]{2,1,0} %w), window={size=25 stride=4 pad=11_11}, '
      'custom_call_target="__cudnn$convForward"',
      '%b = (f32[8,1,76800]{2,1,0}, u8[0]{0}) custom-call(%x, %y), window={size=25 pad=13_14 '
      'lhs_dilate=4}, custom_call_target="__cudnn$convBackwardInput"',
      '%c = (f32[32,1,25]{2,1,0}, u8[0]{0}) custom-call(%x, %y), window={size=25 pad=11_11 '
      'rhs_dilate=4}, custom_call_target="__cudnn$convBackwardFilter"',
      '%d = (f32[32,1,25]{2,1,0}, u8[0]{0}) custom-call(%x, %y), window={size=19200 pad=0_0 '
      'lhs_dilate=4}, custom_call_target="__cudnn$convForward"',
      '%e = f32[8,4,5]{2,1,0} convolution(f32[8,4,9]{2,1,0} %q, f32[4,4,5]{2,1,0} %r), '
      'window={size=5}, dim_labels=bf0_oi0->bf0']
  (tmp_path / "module_0001.jit__lambda.gpu_after_optimizations.txt").write_text("\n".join(lines))
  (tmp_path / "module_0001.jit__lambda.before_optimizations.txt").write_text("\n".join(lines))
  (tmp_path / "module_0002.jit_init.gpu_after_optimizations.txt").write_text("%z = f32[] add()")
  got = wgan_conv_census.xla_dump_summary(str(tmp_path))
  assert got == [{"module": "module_0001.jit__lambda.gpu_after_optimizations.txt",
                  "cudnn": {"__cudnn$convForward": 2, "__cudnn$convBackwardInput": 1,
                            "__cudnn$convBackwardFilter": 1},
                  "cudnn_lhs_dilated": {"__cudnn$convBackwardInput": 1,
                                        "__cudnn$convForward": 1},
                  "plain_convolutions": 1}]


def test_report_best_rows_and_ratio():
  info = {"device_name": "H200", "device_kind": "h200", "jax": "0", "torch_version": "0"}
  base = {"bench": "compare", "model": "d2m_decomposition", "batch": 256, "dtype": "bfloat16",
          "examples_per_step": 256}
  recs = [dict(base, framework="jax (jit) scan", impl="rnn=scan", step_median_s=0.015),
          dict(base, framework="jax (jit) unrolled", impl="rnn=unrolled", step_median_s=0.010),
          dict(base, framework="torch eager bfloat16, 8 thr", step_median_s=0.020),
          dict(base, framework="torch AMP bf16, 8 thr", step_median_s=0.016)]
  for r in recs:
    r["examples_per_s"] = 256 / r["step_median_s"]
  md = suite.report(recs, info, [], "gpu", 1.0)
  assert ("| d2m_decomposition, 256, bfloat16 | rnn=unrolled | 10.00 | torch AMP bf16, 8 thr | "
          "16.00 | 1.60x |") in md


def _torch():
  if str(TORCH_SITE) not in sys.path and TORCH_SITE.exists():
    sys.path.append(str(TORCH_SITE))
  return pytest.importorskip("torch")


def test_peer_flattens_rnns_and_amp_runs_bf16_matmuls(monkeypatch):
  torch = _torch()
  from benchmarks import torch_reference
  calls = []
  cudnn_dtypes = torch.backends.cudnn.CUDNN_TENSOR_DTYPES
  monkeypatch.setattr(torch.nn.GRU, "flatten_parameters", lambda self: calls.append(
      (self, next(self.parameters()).dtype, torch.bfloat16 in cudnn_dtypes)))
  peer = torch_reference.build("style_improved", 4, dtype=torch.bfloat16)
  # the last flatten is ours, after the cast, with bfloat16 admitted by cudnn.is_acceptable
  # (torch's flatten_parameters skips bfloat16 otherwise) and withdrawn afterwards
  assert calls[-1] == (peer.modules.gru, torch.bfloat16, True)
  assert torch.bfloat16 not in cudnn_dtypes
  assert all(p.dtype == torch.bfloat16 for p in peer.modules.parameters())
  calls.clear()
  torch_reference.prepare(torch.nn.GRU(4, 8))
  assert calls[-1][1:] == (torch.float32, False)
  seen = []
  amp = torch_reference.build("style_paper", 4, amp=True)
  amp.modules.head[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
  amp.step()
  assert seen == [torch.bfloat16]
  assert all(p.dtype == torch.float32 for p in amp.modules.parameters())
  seen.clear()
  f32 = torch_reference.build("style_paper", 4)
  f32.modules.head[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
  f32.step()
  assert seen == [torch.float32]


def test_smoke_preset_without_tensorflow_or_librosa(tmp_path):
  block = write_blocker(tmp_path / "block", ("tensorflow", "tensorflow_datasets", "librosa"))
  path = [str(block)] + ([str(TORCH_SITE)] if TORCH_SITE.exists() else [])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0")
  check = subprocess.run(
      [sys.executable, "-c", "import importlib.util as u; "
       "assert all(u.find_spec(m) is None for m in ('tensorflow', 'tensorflow_datasets', "
       "'librosa')); import librosa"], env=env, capture_output=True, text=True)
  assert check.returncode != 0 and "No module named 'librosa'" in check.stderr, check.stderr
  # Every smoke section's model builds (config -> task -> params) with the three blocked; timing
  # two sections end to end (one of each kind) keeps the suite short: all five take ~4.5 min
  # of CPU on 2 cores, which `python -m benchmarks.suite --preset=smoke` runs by hand.
  build = ("import sys, jax, numpy as np; from benchmarks import suite, train_step as ts\n"
           "for s in suite.SMOKE:\n"
           "  b = ts.Bench(s.model, 'float32', overrides=dict(s.overrides or {}))\n"
           "  b.config.data.batch_size = 4\n"
           "  task = b.get_task(b.config)\n"
           "  batch = task.synthetic_batch(4, np.random.default_rng(0))\n"
           "  st = jax.eval_shape(lambda k: task.init_state(k, batch, ts.synthetic_stats(batch)),\n"
           "                      jax.random.PRNGKey(0))\n"
           "  print('built', s.model, len(jax.tree_util.tree_leaves(st)))\n"
           "assert not any(m in sys.modules for m in ('tensorflow', 'librosa'))")
  b = subprocess.run([sys.executable, "-c", build], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=600)
  assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
  assert b.stdout.count("built ") == len(suite.SMOKE), b.stdout
  smoke = [s for s in suite.SMOKE if s.name in ("style_gru512x2_f32", "sweep_decomposition")]
  out = tmp_path / "out"
  p = subprocess.run([sys.executable, "-m", "benchmarks.suite", "--preset=smoke",
                      "--only=" + ",".join(s.name for s in smoke),
                      f"--out_dir={out}", "--compilation_cache_dir=", "--torch_threads=1",
                      f"--work_dir={tmp_path / 'work'}"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=1500)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  jsonl = list(out.glob("smoke_*.jsonl"))
  recs = [json.loads(line) for line in jsonl[0].read_text().splitlines()]
  failed = [r for r in recs if "skipped" in r]
  assert not failed, failed
  timed = [r for r in recs if "step_median_s" in r]
  assert {r["section"] for r in timed} == {s.name for s in smoke}
  for r in timed:
    for key in ("device_kind", "jax", "commit", "dtype", "batch", "impl"):
      assert r.get(key) is not None, (key, r)
    assert r["step_median_s"] > 0
  jax_rows = [r for r in timed if r["bench"] == "compare" and r["framework"].startswith("jax")]
  assert {r["impl"] for r in jax_rows if r["model"] == "style_improved"} == {"rnn=scan"}
  assert [r["batch"] for r in timed if r["bench"] == "train_step"] == [4, 8]
  md = next(out.glob("smoke_*.md")).read_text()
  assert "## JAX vs the PyTorch peer" in md and "## Training step" in md
  assert md.strip() in p.stdout
  if TORCH_SITE.exists():
    assert any(r["framework"].startswith("torch") for r in timed)


def test_conv_census_roles_of_a_gradient_penalty():
  """A stride-4 conv, its input gradient and the penalty's double backward: the census sees
  the forward, the transposed (lhs-dilated) input gradient and the second-order kernel gradient
  of that transposed conv, with MACs counted by hand."""
  import jax
  import jax.numpy as jnp
  from benchmarks import wgan_conv_census
  dn = ("NWC", "WIO", "NWC")

  def critic(w, x):
    return jnp.sum(jax.lax.conv_general_dilated(x, w, (4,), [(1, 1)], dimension_numbers=dn))

  def penalty(w, x):
    g = jax.grad(critic, argnums=1)(w, x)
    return jnp.sum(g ** 2)

  w, x = jnp.ones((6, 2, 3)), jnp.ones((1, 26, 2))  # k6, 2 -> 3 channels, out length 6
  rows = []
  wgan_conv_census._walk(jax.make_jaxpr(jax.grad(penalty))(w, x).jaxpr, 1, rows)
  roles = sorted(r["role"] for r in rows)
  assert "input grad (transposed, lhs-dilated)" in roles
  assert "2nd order: kernel grad of a transposed conv (lhs-dilated)" in roles
  fwd = [r for r in rows if r["lhs"] == (1, 26, 2) and r["out"] == (1, 6, 3)]
  assert fwd == [] or fwd[0]["dense_macs"] == 6 * 3 * 2 * 6  # out elems x C_in x k
  for r in rows:
    if r["lhs_dilation"] == (4,):
      assert r["useful_macs"] == pytest.approx(r["dense_macs"] / 4)
