"""The GPU suite (``benchmarks/gpu_suite.py``) and the PyTorch peer's precision rows.

* planning: variants whose config field is missing are dropped (``rnn_impl=scan`` runs without
  the override), the full preset fits in 8 minutes, the report picks the best JAX row and the
  peer's best row and divides them;
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

import pytest

from benchmarks import compare
from benchmarks import gpu_suite
from import_blocker import write_blocker

REPO = pathlib.Path(__file__).resolve().parents[1]
TORCH_SITE = REPO / ".torch_site"

# Makes the packages look absent (as on the GPU image): every import finder is wrapped to find
# nothing for them, so `import librosa` raises ModuleNotFoundError and importlib.util.find_spec
# returns None (torch probes for tensorflow with find_spec).


def test_plan_variants_without_and_with_the_field():
  sec = gpu_suite.Section("s", "compare", "m", ["float32"], [8], 10,
                          gpu_suite._rnn("unrolled", "scan", "pallas"))
  keep, notes = gpu_suite.plan_variants(sec, [])
  assert keep == [("scan", {})]  # today's behaviour, no override
  assert len(notes) == 2 and all("no model.rnn_impl" in n for n in notes)
  keep, notes = gpu_suite.plan_variants(sec, ["rnn_impl"])
  assert [k for k, _ in keep] == ["unrolled", "scan", "pallas"] and not notes
  assert keep[1] == ("scan", {"model.rnn_impl": "scan"})
  wg = gpu_suite.Section("w", "compare", "m", ["float32"], [8], 10,
                         gpu_suite._rnn("scan", conv_impl="xla")
                         + gpu_suite._rnn("scan", conv_impl="im2col"))
  keep, _ = gpu_suite.plan_variants(wg, ["conv_impl"])
  assert keep == [("rnn=scan,conv_impl=xla", {"model.conv_impl": "xla"}),
                  ("rnn=scan,conv_impl=im2col", {"model.conv_impl": "im2col"})]


def test_full_preset_fits_eight_minutes_and_covers_the_issue_table():
  assert gpu_suite.DEFAULT_BUDGET_S["full"] <= 480
  assert sum(s.budget_s for s in gpu_suite.FULL) <= gpu_suite.DEFAULT_BUDGET_S["full"]
  got = {(s.model, s.dtypes[0], s.batches[0]) for s in gpu_suite.FULL if s.kind == "compare"}
  assert got == {("d2m_decomposition", "float32", 256), ("d2m_decomposition", "bfloat16", 256),
                 ("d2m_composition", "float32", 256), ("style_improved", "float32", 256),
                 ("wgan_audio", "float32", 64)}
  sweep = [s for s in gpu_suite.FULL if s.kind == "sweep"]
  assert sweep and list(sweep[0].batches) == [256, 1024, 4096]
  assert set(sweep[0].dtypes) == {"float32", "bfloat16"}
  wgan = next(s for s in gpu_suite.FULL if s.model == "wgan_audio")
  assert {ov["model.conv_impl"] for _, ov in wgan.variants} == {"xla", "im2col"}
  cmdbuf = [s for s in gpu_suite.FULL if "WHILE" in s.xla_flags]
  assert [(s.model, s.dtypes[0], [ov for _, ov in s.variants]) for s in cmdbuf] == [
      ("d2m_decomposition", "bfloat16", [{"model.rnn_impl": "scan"}])]
  assert gpu_suite.enrich({"framework": "jax (jit) scan", "overrides": {"model.rnn_impl": "scan"}},
                          cmdbuf[0], "full", {})["impl"] == "rnn=scan,cmdbuf=WHILE"
  # the same models in the smoke preset, so the smoke run touches every import path
  assert {s.model for s in gpu_suite.SMOKE} == {s.model for s in gpu_suite.FULL}


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
  md = gpu_suite.report(recs, info, [], "full", 1.0)
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
  # of CPU on 2 cores, which `python -m benchmarks.gpu_suite --smoke` runs by hand.
  build = ("import sys, jax, numpy as np; from benchmarks import gpu_suite, train_step as ts\n"
           "for s in gpu_suite.SMOKE:\n"
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
  assert b.stdout.count("built ") == len(gpu_suite.SMOKE), b.stdout
  smoke = [s for s in gpu_suite.SMOKE if s.name in ("style_gru512x2_f32", "sweep_decomposition")]
  out = tmp_path / "out"
  p = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--smoke",
                      "--only=" + ",".join(s.name for s in smoke),
                      f"--out_dir={out}", "--compilation_cache_dir=", "--torch_threads=1",
                      f"--work_dir={tmp_path / 'work'}"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=1500)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  jsonl = list(out.glob("gpu_*_cpu-2vcpu-epyc_smoke.jsonl")) or list(out.glob("gpu_*.jsonl"))
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
  md = next(out.glob("gpu_*.md")).read_text()
  assert "## JAX vs the PyTorch peer" in md and "## Batch sweep" in md
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
