"""GRU vs LSTM as ``lax.scan``: hoisted input projection or not, ``unroll`` 1/2/4/8, cuDNN LSTM.

    python -m benchmarks.rnn                          # CPU default: batch 64, fwd+bwd
    python -m benchmarks.rnn --batch=256 --sizes=d2m_stdp_dec,kakashi --unrolls=1,4

One recurrent layer at each of the sizes our models use (:data:`SIZES`), timed forward +
backward (``jax.grad`` of the summed outputs with respect to the weights and the input), with the
protocol of :mod:`benchmarks.common` (compile apart, warm-up, median/p90). Variants:

* ``hoisted``: ``d2m_jax.nn.rnn.recurrent_scan`` -- the input projection ``x @ W_ih`` for all
  time steps is ONE (B*T, D) x (D, G*H) matmul before the scan; the scan body does one
  (B, H) x (H, G*H) matmul;
* ``in-scan``: the naive cell, ``x_t @ W_ih + h @ W_hh`` inside the scan body (two matmuls per
  step, T small input matmuls instead of one big one);
* ``cudnn``: ``jax.experimental.rnn.lstm`` (cuDNN; LSTM only -- JAX has no cuDNN GRU,
  jax-ml/jax#18867). It exists only on NVIDIA GPUs: on CPU/TPU the row says so;
* ``scan`` | ``unrolled`` | ``pallas`` | ``auto``: the models' recurrence implementations
  (``d2m_jax.nn.rnn.resolve_impl``; ``--unrolls=0`` = each one's default unroll); the record's
  ``impl_resolved`` says what ran (``pallas`` falls back to ``unrolled`` for LSTMs and H > 64);
  ``pallas-forced`` runs the fused GRU kernel at any H (W_hh then no longer fits on chip)::

    python -m benchmarks.rnn --variants=scan,unrolled,pallas --unrolls=0 --kinds=gru

GRU (3 gates) does 3/4 of an LSTM's (4 gates) matmul work at the same H; WeiyuDu measured GRU
15-19 % faster in PyTorch (``jax_style_and_benchmarks.md`` §4.3). The table prints GRU/LSTM
ratios per variant so that can be checked here.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from d2m_jax.nn import rnn_pallas
from d2m_jax.nn.rnn import recurrent_scan, resolve_impl

# name: (input D, hidden H, steps T, what it is)
SIZES = {
    "d2m_movement_enc": (28, 1024, 32, "Dancing2Music movement encoder (one direction)"),
    "d2m_stdp_dec": (512, 1024, 32, "Dancing2Music unit decoder (constant input in the model)"),
    "style_improved": (28, 512, 59, "improved style extractor, layer 1"),
    "wgan_audio": (250, 240, 120, "phase-3 WGAN audio GRU, layer 1"),
    "kakashi": (20, 512, 120, "Kakashi seq2seq LSTM 2x512, layer 1"),
}


def _params(key, kind, D, H):
  G = 3 if kind == "gru" else 4
  k1, k2, k3, k4 = jax.random.split(key, 4)
  s = 1.0 / np.sqrt(H)
  u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, -s, s)  # noqa: E731
  return {"w_ih": u(k1, (D, G * H)), "w_hh": u(k2, (H, G * H)), "b_ih": u(k3, (G * H,)),
          "b_hh": u(k4, (G * H,))}


def _carry0(kind, B, H):
  h = jnp.zeros((B, H), jnp.float32)
  return h if kind == "gru" else (h, h)


def scan_hoisted(kind, p, x, unroll, dtype):
  """(B, T, D) -> (T, B, H) with the input projection hoisted out of the scan."""
  xp = jnp.einsum("btd,dg->tbg", x.astype(dtype), p["w_ih"].astype(dtype)).astype(jnp.float32)
  xp = xp + p["b_ih"]
  ys, _ = recurrent_scan(kind, xp, _carry0(kind, x.shape[0], p["w_hh"].shape[0]), p["w_hh"],
                         p["b_hh"], unroll=unroll, dtype=dtype)
  return ys


def scan_in_body(kind, p, x, unroll, dtype):
  """The naive cell: both projections inside the scan body."""
  H = p["w_hh"].shape[0]
  w_ih, w_hh = p["w_ih"].astype(dtype), p["w_hh"].astype(dtype)

  def body(carry, xt):
    gi = jnp.dot(xt.astype(dtype), w_ih).astype(jnp.float32) + p["b_ih"]
    h = carry if kind == "gru" else carry[0]
    gh = jnp.dot(h.astype(dtype), w_hh).astype(jnp.float32) + p["b_hh"]
    if kind == "gru":
      r = jax.nn.sigmoid(gi[:, :H] + gh[:, :H])
      z = jax.nn.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
      n = jnp.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
      h = (1 - z) * n + z * h
      return h, h
    g = gi + gh
    c = jax.nn.sigmoid(g[:, H:2 * H]) * carry[1] + jax.nn.sigmoid(g[:, :H]) * jnp.tanh(
        g[:, 2 * H:3 * H])
    h = jax.nn.sigmoid(g[:, 3 * H:]) * jnp.tanh(c)
    return (h, c), h

  _, ys = jax.lax.scan(body, _carry0(kind, x.shape[0], H), jnp.swapaxes(x, 0, 1), unroll=unroll)
  return ys


def scan_impl(kind, p, x, unroll, dtype, impl):
  """(B, T, D) -> (T, B, H) hoisted, through ``recurrent_scan(impl=...)`` (or, for
  ``pallas-forced``, the fused GRU kernel whatever H)."""
  xp = jnp.einsum("btd,dg->tbg", x.astype(dtype), p["w_ih"].astype(dtype)).astype(jnp.float32)
  xp = xp + p["b_ih"]
  carry0 = _carry0(kind, x.shape[0], p["w_hh"].shape[0])
  if impl == "pallas-forced" and kind == "gru":
    return rnn_pallas.gru_layer_pallas(xp, carry0, p["w_hh"], p["b_hh"], dtype=dtype)[0]
  impl = "pallas" if impl == "pallas-forced" else impl
  return recurrent_scan(kind, xp, carry0, p["w_hh"], p["b_hh"], unroll=unroll, dtype=dtype,
                        impl=impl)[0]


IMPL_VARIANTS = ("scan", "unrolled", "pallas", "pallas-forced", "auto")


def cudnn_available() -> bool:
  return any(d.platform == "gpu" for d in jax.local_devices()) and \
      "nvidia" in jax.local_devices()[0].device_kind.lower()


def cudnn_lstm_fn(D, H, B, T, dtype):
  """fwd+bwd of ``jax.experimental.rnn.lstm`` (one layer, unidirectional)."""
  from jax.experimental import rnn as jrnn
  weights = jrnn.init_lstm_weight(jax.random.PRNGKey(0), D, H, 1, False)
  seq_lengths = jnp.full((B,), T, jnp.int32)
  h0 = jnp.zeros((1, B, H), dtype)

  def loss(w, x):
    y, _, _ = jrnn.lstm(x, h0, h0, w, seq_lengths, input_size=D, hidden_size=H, num_layers=1,
                        dropout=0.0, bidirectional=False)
    return jnp.sum(y.astype(jnp.float32))
  return jax.grad(loss, argnums=(0, 1)), weights


def measure(size: str, kind: str, variant: str, unroll: int, batch: int, dtype_name: str,
            timing_kw) -> Dict[str, Any]:
  D, H, T, _ = SIZES[size]
  dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
  x = jax.random.normal(jax.random.PRNGKey(1), (batch, T, D), jnp.float32)
  if variant == "cudnn":
    if kind != "lstm":
      return {"skipped": "no cuDNN GRU in JAX (jax-ml/jax#18867)"}
    if not cudnn_available():
      return {"skipped": f"cuDNN LSTM needs an NVIDIA GPU; device is "
                         f"{jax.local_devices()[0].platform}"}
    grad_fn, p = cudnn_lstm_fn(D, H, batch, T, dtype)
    args = (p, x.astype(dtype))
  else:
    p = _params(jax.random.PRNGKey(0), kind, D, H)
    f = scan_hoisted if variant == "hoisted" else scan_in_body
    if variant in IMPL_VARIANTS:
      f = functools.partial(scan_impl, impl=variant)
    grad_fn = jax.grad(lambda p, x: jnp.sum(f(kind, p, x, unroll, dtype)), argnums=(0, 1))
    args = (p, x)
  flops = common.jaxpr_flops(grad_fn, *args)
  if variant in IMPL_VARIANTS:  # same maths; a pallas_call's jaxpr is one program, not the grid
    flops = common.jaxpr_flops(jax.grad(lambda p, x: jnp.sum(scan_impl(
        kind, p, x, 1, dtype, "scan")), argnums=(0, 1)), *args)
  compiled, compile_s = common.compile_aot(grad_fn, *args)
  times, _ = common.time_steps(lambda _: compiled(*args), None, **timing_kw)
  rec = common.summarise(common.Timing(compile_s, times), examples=batch, num_devices=1,
                         flops=flops, kind=common.device_kind(), dtype=dtype_name)
  rec["sequences_frames_per_s"] = batch * T / rec["step_median_s"]
  if variant in IMPL_VARIANTS:
    rec["impl_resolved"] = "pallas" if variant == "pallas-forced" and kind == "gru" else \
        resolve_impl(variant.replace("-forced", ""), kind, H)
  return rec


def run(sizes: List[str], kinds: List[str], variants: List[str], unrolls: List[int],
        batch: int, dtype: str, out=None, timing_kw=None) -> List[Dict[str, Any]]:
  env = common.environment()
  recs = []
  for size in sizes:
    for variant in variants:
      for unroll in (unrolls if variant != "cudnn" else [1]):
        for kind in kinds:
          D, H, T, what = SIZES[size]
          rec = {"bench": "rnn", "size": size, "D": D, "H": H, "T": T, "kind": kind,
                 "variant": variant, "unroll": unroll, "batch": batch, "dtype": dtype, **env}
          try:
            rec.update(measure(size, kind, variant, unroll, batch, dtype, timing_kw or {}))
          except Exception as e:  # noqa: BLE001
            if common.is_oom(e):
              rec["stopped"] = f"stopped at batch {batch}: out of memory"
            else:
              rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
          common.append_jsonl(out, rec)
          recs.append(rec)
          msg = rec.get("skipped") or rec.get("stopped") or rec.get("error") or (
              f"{rec['step_median_s'] * 1e3:.2f} ms, {common.fmt(rec['tflops_per_s'])} TFLOP/s")
          common.log(f"[rnn] {size} {kind} {variant} unroll={unroll}: {msg}")
  return recs


def table(recs) -> str:
  """One row per (size, variant, unroll): GRU and LSTM ms and the LSTM/GRU time ratio."""
  rows: Dict[tuple, Dict[str, Any]] = {}
  notes = []
  for r in recs:
    key = (r["size"], r["variant"], r["unroll"])
    row = rows.setdefault(key, {"size": r["size"], "variant": r["variant"], "unroll": r["unroll"],
                                "batch": r["batch"], "dtype": r["dtype"]})
    if "step_median_s" in r:
      row[f"{r['kind']}_ms"] = r["step_median_s"] * 1e3
      row[f"{r['kind']}_tflops"] = r["tflops_per_s"]
    else:
      notes.append(f"- {r['size']} {r['kind']} {r['variant']}: "
                   f"{r.get('skipped') or r.get('stopped') or r.get('error')}")
  for row in rows.values():
    if row.get("gru_ms") and row.get("lstm_ms"):
      row["lstm_over_gru"] = row["lstm_ms"] / row["gru_ms"]
  out = common.markdown_table(
      list(rows.values()),
      ["size", "variant", "unroll", "batch", "dtype", "gru_ms", "lstm_ms", "lstm_over_gru",
       "gru_tflops", "lstm_tflops"],
      ["layer", "variant", "unroll", "B", "dtype", "GRU ms", "LSTM ms", "LSTM/GRU time",
       "GRU TFLOP/s", "LSTM TFLOP/s"])
  if notes:
    out += "\n\n" + "\n".join(sorted(set(notes)))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default=",".join(SIZES))
  p.add_argument("--kinds", default="gru,lstm")
  p.add_argument("--variants", default="hoisted,in-scan,cudnn")
  p.add_argument("--unrolls", default="1,2,4,8")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--min_steps", type=int, default=3)
  p.add_argument("--min_time_s", type=float, default=1.0)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  recs = run(a.sizes.split(","), a.kinds.split(","), a.variants.split(","),
             [int(u) for u in a.unrolls.split(",")], a.batch, a.dtype, a.out,
             dict(min_steps=a.min_steps, min_time_s=a.min_time_s, max_steps=30))
  env = common.environment()
  print(f"\nDevice: {env['device_name']} ({env['device_kind']}), jax {env['jax']}, "
        f"{env['date_utc']} UTC; fwd+bwd of one layer\n")
  print(table(recs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
