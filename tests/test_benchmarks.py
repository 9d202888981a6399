"""Smoke tests of the benchmark machinery (no timing assertions: speed lives in the benchmarks).

* FLOPs: XLA's cost analysis and our jaxpr counter both give 2*M*N*K for a matmul; the jaxpr
  counter multiplies a scan body by its length (XLA's does not: documented in benchmarks.common)
  and counts a convolution's multiply-adds.
* MFU arithmetic against a hand-computed case; device-kind detection; OOM recognition.
* ``benchmarks.train_step`` end to end on a tiny task written here (a linear classifier that
  follows the Task contract), so the harness is checked without compiling a real model.
"""
import json
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import struct

from benchmarks import common
from benchmarks import train_step as ts
from d2m_jax.train.task import Task


def test_matmul_flops_xla_and_jaxpr():
  M, K, N = 64, 32, 16
  f = lambda a, b: a @ b  # noqa: E731
  a, b = jnp.ones((M, K)), jnp.ones((K, N))
  compiled, compile_s = common.compile_aot(f, a, b)
  assert compile_s >= 0
  assert common.xla_flops(compiled) == 2 * M * N * K
  assert common.jaxpr_flops(f, a, b) == 2 * M * N * K


def test_jaxpr_flops_scan_and_grad_and_conv():
  B, H, T = 4, 8, 10
  g = lambda x, w: jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, length=T)[0]  # noqa
  x, w = jnp.ones((B, H)), jnp.ones((H, H))
  assert common.jaxpr_flops(g, x, w) == T * 2 * B * H * H
  # backward of h @ w needs two matmuls of the same size: 3x the forward in total
  loss_grad = jax.grad(lambda w: jnp.sum(g(x, w)))
  assert common.jaxpr_flops(loss_grad, w) == 3 * T * 2 * B * H * H
  conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (2,), [(1, 1)], dimension_numbers=("NCH", "OIH", "NCH"))
  xs, ks = jnp.ones((3, 5, 20)), jnp.ones((7, 5, 4))
  out_len = (20 + 2 - 4) // 2 + 1  # 10
  assert common.jaxpr_flops(conv, xs, ks) == 2 * 3 * 7 * out_len * 5 * 4


def test_mfu_arithmetic_and_peaks():
  # 1e12 FLOPs in 0.5 s on 2 devices of peak 4 TFLOP/s: 1 TFLOP/s per device -> 25 %.
  assert common.mfu(1e12, 0.5, 2, 4.0) == pytest.approx(0.25)
  assert common.mfu(None, 0.5, 1, 4.0) is None
  assert common.mfu(1e12, 0.5, 1, None) is None
  assert common.peak_tflops("h100", "bfloat16") == pytest.approx(989.4)
  assert common.peak_tflops("cpu-2vcpu-epyc", "float32") == pytest.approx(0.355)
  assert common.device_kind() == "cpu-2vcpu-epyc"
  assert set(common.PEAK_TFLOPS) >= {"cpu-2vcpu-epyc", "h100", "h200", "tpu-v4", "tpu-v5e"}
  timing = common.Timing(1.0, [0.1, 0.2, 0.3, 0.4])
  s = common.summarise(timing, examples=10, num_devices=2, flops=1e9, kind="h100",
                       dtype="float32")
  assert s["step_median_s"] == pytest.approx(0.25)
  assert s["examples_per_s"] == pytest.approx(40.0)
  assert s["examples_per_s_per_device"] == pytest.approx(20.0)
  assert s["tflops_per_s"] == pytest.approx(1e9 / 0.25 / 1e12)
  assert s["mfu"] == pytest.approx(1e9 / 0.25 / 2 / 494.7e12)
  assert s["step_p90_s"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4], 90))


def test_oom_recognised():
  assert common.is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))
  assert common.is_oom(MemoryError())
  assert not common.is_oom(ValueError("shapes do not match"))


# ------------------------------------------------------------------------- tiny task, end to end

class _ToyState(struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  params: dict
  opt_state: optax.OptState


class _ToyTask(Task):
  """A linear 4-way classifier over 8 features: the smallest thing that follows the contract."""
  name = "bench_toy"
  tx = optax.adam(1e-2)

  def synthetic_batch(self, batch_size, rng):
    return {"x": rng.standard_normal((batch_size, 8)).astype(np.float32),
            "style": rng.integers(0, 4, (batch_size,)).astype(np.int32)}

  def init_state(self, rng, batch, stats=None):
    params = {"w": jnp.zeros((8, 4)), "b": jnp.zeros((4,))}
    return _ToyState(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
                     opt_state=self.tx.init(params))

  def _loss(self, params, batch):
    logits = batch["x"] @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["style"]).mean()

  def forward(self, state, batch):
    return self._loss(state.params, batch)

  def train_step(self, state, batch, axis_name=None):
    loss, grads = jax.value_and_grad(self._loss)(state.params, batch)
    updates, opt_state = self.tx.update(grads, state.opt_state)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}


def test_train_step_bench_on_tiny_task(monkeypatch, tmp_path):
  mod = types.ModuleType("d2m_jax.tasks.bench_toy")
  mod.make_task = _ToyTask
  monkeypatch.setitem(sys.modules, "d2m_jax.tasks.bench_toy", mod)
  config = ml_collections.ConfigDict({"task": "bench_toy", "dtype": "float32",
                                      "data": {"batch_size": 8}})
  bench = ts.Bench("bench_toy", "float32", config=config)
  B = 4 * jax.local_device_count()
  kw = dict(warmup=2, min_steps=2, max_steps=2, min_time_s=0.0)
  train = bench.measure(B, "train", **kw)
  fwd = bench.measure(B, "fwd", **kw)
  for rec in (train, fwd):
    assert rec["examples_per_step"] == B
    assert rec["steps_timed"] == 2
    assert rec["step_median_s"] > 0 and rec["compile_s"] > 0
    assert rec["examples_per_s"] == pytest.approx(B / rec["step_median_s"])
  # forward: one (B,8)x(8,4) matmul; train: forward + the weight-gradient matmul (the input
  # gradient is not needed: x is data)
  assert fwd["flops_per_step"] == 2 * B * 8 * 4
  assert train["flops_per_step"] == 2 * (2 * B * 8 * 4)
  assert fwd["via"] == "forward" and train["via"] == "train_step"
  # the record is JSON-serialisable and the table renders it
  path = tmp_path / "r.jsonl"
  common.append_jsonl(str(path), {"model": "bench_toy", "dtype": "float32", "mode": "train",
                                  "batch": B, **train})
  rows = common.read_jsonl(str(path))
  assert rows[0]["batch"] == B
  assert "| bench_toy | float32 | train |" in ts.table(rows)


def test_missing_model_is_skipped_with_a_message(tmp_path):
  out = tmp_path / "r.jsonl"
  recs = ts.sweep("no_such_model", batches=[8], dtypes=["float32"], modes=["train"],
                  budget_s=1, out=str(out), timing_kw={})
  assert "configs/no_such_model.py does not exist" in recs[0]["skipped"]
  assert json.loads(out.read_text().splitlines()[0])["skipped"] == recs[0]["skipped"]


def test_sweep_attaches_the_original_figures_to_train_records(monkeypatch, tmp_path):
  """A sweep's train records carry the original PyTorch figure of that model and batch (and
  the table shows it); forward records and batches without a published figure carry none."""
  def fake_measure(self, batch_size, mode, **kw):
    del self, kw
    return {"step_median_s": 0.5, "step_p90_s": 0.5, "examples_per_s": 2.0 * batch_size,
            "compile_s": 1.0, "tflops_per_s": None, "mfu": None, "via": mode}
  monkeypatch.setattr(ts.Bench, "measure", fake_measure)
  out = tmp_path / "r.jsonl"
  recs = ts.sweep("style_paper", batches=[32, 64], dtypes=["float32"], modes=["train", "fwd"],
                  budget_s=1e9, out=str(out), timing_kw={})
  by = {(r["mode"], r["batch"]): r for r in recs}
  assert by[("train", 32)]["orig_torch_1t_examples_per_s"] == pytest.approx(232 * 32)
  assert by[("train", 32)]["orig_torch_2t_examples_per_s"] == pytest.approx(70.6 * 32)
  assert by[("train", 64)]["orig_torch_1t_examples_per_s"] is None      # not published
  assert "orig_torch_1t_examples_per_s" not in by[("fwd", 32)]
  assert common.read_jsonl(str(out))[0]["orig_torch_1t_examples_per_s"] == pytest.approx(7424)
  assert ts.table([by[("train", 32)]]).rstrip().endswith("| 7,424 | 2,259 |")


def test_dtype_curves_figures_and_plot(tmp_path):
  from benchmarks import dtype_curves
  rows = [{"step": 0, "perf/compile_seconds": 1.0}]
  rows += [{"step": 10 * i, "train/loss": float(v)} for i, v in enumerate([4, 3, 2, 1], 1)]
  rows.append({"step": 40, "eval_test/accuracy": 0.5})
  figs = dtype_curves.final_figures(rows, tail=4)
  assert figs["train_loss_tail_mean"] == pytest.approx(2.5)
  assert figs["train_loss_tail_halves_diff"] == pytest.approx(2.0)  # |mean(4,3) - mean(2,1)|
  assert figs["steps"] == 40 and figs["eval_test/accuracy"] == 0.5
  for dt in ("f32", "bf16"):
    (tmp_path / dt).mkdir()
    (tmp_path / dt / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  out = tmp_path / "c.png"
  assert dtype_curves.main([f"--run=m:{tmp_path / 'f32'},{tmp_path / 'bf16'}",
                            f"--out={out}"]) == 0
  assert out.read_bytes()[:4] == b"\x89PNG"
  assert dtype_curves.main([f"--run=m:{tmp_path / 'f32'},{tmp_path / 'nope'}",
                            f"--out={out}"]) == 2
