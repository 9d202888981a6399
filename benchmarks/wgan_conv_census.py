"""Census of the convolutions in the phase-3 WGAN training step (issue 13 item 4).

    .venv/bin/python -m benchmarks.wgan_conv_census --batch=64 --conv_impl=xla [--checks]

Traces ``task.train_step`` of ``configs/wgan_audio.py`` at the GPU-shaped problem (64 windows =
8 critic updates of 8 + one generator update; nothing is compiled or run, so it works on a CPU)
and lists every ``conv_general_dilated`` XLA receives, times its trip count (the critic updates
are a ``lax.scan``): shapes, stride, lhs dilation (a transposed convolution: the input gradient
of a strided convolution), rhs dilation (the kernel gradient of a strided convolution),
feature/batch group counts, and its multiply-adds counted two ways: ``dense`` as XLA's cost
model and cuDNN see it (every tap of the dilated input, zeros included) and ``useful`` (the taps
that hit real input samples). Grouped by role: forward, input gradient, kernel gradient and the
second-order terms of the gradient penalty. With ``--checks`` it also looks for float64 values and
host callbacks and counts the convolutions that touch the raw clip.

What it establishes is what XLA is asked to do; how the GPU compiler maps each convolution to
cuDNN (forward / backward-data / backward-filter, or a padded forward with the zeros
materialised) needs the GPU (``XLA_FLAGS=--xla_dump_to=...`` there).
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys
from typing import Any, Dict, List

import jax
import jax.extend.core as jex_core
import numpy as np


def _walk(jaxpr, mult: int, out: List[Dict[str, Any]]):
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      out.append(_describe(eqn, mult))
    elif name == "scan":
      _walk(eqn.params["jaxpr"].jaxpr, mult * eqn.params["length"], out)
    else:
      for v in eqn.params.values():
        for j in (v if isinstance(v, (list, tuple)) else [v]):
          if isinstance(j, jex_core.ClosedJaxpr):
            _walk(j.jaxpr, mult, out)
          elif isinstance(j, jex_core.Jaxpr):
            _walk(j, mult, out)


def _describe(eqn, mult: int) -> Dict[str, Any]:
  p = eqn.params
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  out = eqn.outvars[0].aval
  dn = p["dimension_numbers"]
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  k_in = rhs.shape[rhs_spec[1]]
  k_sp = math.prod(rhs.shape[i] for i in rhs_spec[2:])
  dense = math.prod(out.shape) * k_in * k_sp
  lhs_dil = tuple(p["lhs_dilation"])
  useful = dense / math.prod(lhs_dil)  # only 1 in prod(lhs_dil) taps meets a real sample
  rhs_len = math.prod(rhs.shape[i] for i in rhs_spec[2:])
  out_len = math.prod(out.shape[i] for i in out_spec[2:])
  if p["batch_group_count"] > 1:
    role = "kernel grad (batch groups)"
  elif math.prod(lhs_dil) > 1 and rhs_len > out_len:
    # the "kernel" is an activation gradient longer than the result (a kernel-shaped result):
    # the kernel gradient *of* a transposed convolution, a second-order term of the penalty
    role = "2nd order: kernel grad of a transposed conv (lhs-dilated)"
  elif math.prod(lhs_dil) > 1:
    role = "input grad (transposed, lhs-dilated)"
  elif math.prod(p["rhs_dilation"]) > 1:
    role = "kernel grad (rhs-dilated)"
  else:
    role = "forward-shaped"
  return {"mult": mult, "lhs": tuple(lhs.shape), "rhs": tuple(rhs.shape), "out": tuple(out.shape),
          "lhs_spec": tuple(lhs_spec), "rhs_spec": tuple(rhs_spec), "out_spec": tuple(out_spec),
          "stride": tuple(p["window_strides"]), "padding": tuple(map(tuple, p["padding"])),
          "lhs_dilation": lhs_dil, "rhs_dilation": tuple(p["rhs_dilation"]),
          "fgc": p["feature_group_count"], "bgc": p["batch_group_count"],
          "dtype": str(lhs.dtype), "dense_macs": dense * mult, "useful_macs": useful * mult,
          "role": role}


def build(batch: int, conv_impl: str, dtype: str = "float32"):
  from benchmarks import train_step as ts
  bench = ts.Bench("wgan_audio", dtype, overrides={"model.conv_impl": conv_impl,
                                                  "model.rnn_impl": "scan"})
  task, state, jbatch, _ = bench.setup(batch)
  return task, state, jbatch


def trace(batch: int = 64, conv_impl: str = "xla"):
  """The closed jaxpr of one phase-3 WGAN train step (nothing compiled beyond the init)."""
  task, state, jbatch = build(batch, conv_impl)
  return jax.make_jaxpr(lambda s, b: task.train_step(s, b))(state, jbatch)


def census(closed) -> List[Dict[str, Any]]:
  """Every convolution of ``closed`` (from :func:`trace`), times its scan trip count."""
  out: List[Dict[str, Any]] = []
  _walk(closed.jaxpr, 1, out)
  return out


def jaxpr_checks(closed) -> Dict[str, Any]:
  """float64 values, host callbacks, and how often the critic's raw-audio branch meets the
  4.8 s clip (convolutions whose input or output is clip-long, per step)."""
  f64, callbacks = [0], collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      for v in list(eqn.outvars) + [v for v in eqn.invars if hasattr(v, "aval")]:
        if getattr(v.aval, "dtype", None) is not None and str(v.aval.dtype) == "float64":
          f64[0] += 1
      if "callback" in eqn.primitive.name:
        callbacks[eqn.primitive.name] += 1
      for v in eqn.params.values():
        for j in (v if isinstance(v, (list, tuple)) else [v]):
          if isinstance(j, jex_core.ClosedJaxpr):
            walk(j.jaxpr)
          elif isinstance(j, jex_core.Jaxpr):
            walk(j)

  walk(closed.jaxpr)
  rows: List[Dict[str, Any]] = []
  _walk(closed.jaxpr, 1, rows)
  clip = max(r["lhs"][1] for r in rows)  # the longest input: the raw clip
  on_clip = collections.Counter(r["role"] for r in rows if r["lhs"][1] == clip
                                or r["out"][1] == clip)
  return {"float64_values": f64[0], "host_callbacks": dict(callbacks),
          "clip_samples": clip, "convs_touching_the_clip_by_role": dict(on_clip)}


_CUDNN = re.compile(r'custom_call_target="(__cudnn\$conv[A-Za-z]*)"')
_WINDOW = re.compile(r"window=\{([^}]*)\}")


def xla_dump_summary(dump_dir: str) -> List[Dict[str, Any]]:
  """What XLA made of the convolutions, from an ``--xla_dump_to`` folder (``suite.py`` dumps
  the WGAN section on the GPU): per optimised module that has any, the cuDNN convolution kinds
  (``__cudnn$convForward`` / ``convBackwardInput`` / ``convBackwardFilter`` ...), how many of
  them still carry an lhs (base) dilation (zeros materialised: a dilation-4 input costs 4x), and
  plain ``convolution`` ops left to XLA's own emitter."""
  out = []
  for name in sorted(os.listdir(dump_dir)):
    if not name.endswith("after_optimizations.txt"):
      continue
    with open(os.path.join(dump_dir, name)) as f:
      text = f.read()
    kinds = collections.Counter()
    dilated = collections.Counter()
    plain = 0
    for line in text.splitlines():
      m = _CUDNN.search(line)
      if m:
        kinds[m.group(1)] += 1
        w = _WINDOW.search(line)
        if w and "lhs_dilate" in w.group(1):
          dilated[m.group(1)] += 1
      elif " convolution(" in line:
        plain += 1
    if kinds or plain:
      out.append({"module": name, "cudnn": dict(kinds), "cudnn_lhs_dilated": dict(dilated),
                  "plain_convolutions": plain})
  return out


def summary(rows: List[Dict[str, Any]]) -> str:
  by = collections.defaultdict(lambda: [0, 0.0, 0.0])
  for r in rows:
    b = by[r["role"]]
    b[0] += r["mult"]
    b[1] += r["dense_macs"]
    b[2] += r["useful_macs"]
  tot_d = sum(v[1] for v in by.values())
  lines = ["| role | convs per step | dense GMAC | useful GMAC | share of dense |",
           "|---|---|---|---|---|"]
  for role, (n, d, u) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    lines.append(f"| {role} | {n} | {d / 1e9:.2f} | {u / 1e9:.2f} | {d / tot_d:.0%} |")
  lines.append(f"| total | {sum(v[0] for v in by.values())} | {tot_d / 1e9:.2f} | "
               f"{sum(v[2] for v in by.values()) / 1e9:.2f} | |")
  return "\n".join(lines)


def detail(rows: List[Dict[str, Any]], top: int = 15) -> str:
  lines = ["| x | lhs | rhs | out | stride | lhs dil | rhs dil | fgc/bgc | dense GMAC | role |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: -r["dense_macs"])[:top]:
    lines.append(f"| {r['mult']} | {r['lhs']} | {r['rhs']} | {r['out']} | {r['stride']} | "
                 f"{r['lhs_dilation']} | {r['rhs_dilation']} | {r['fgc']}/{r['bgc']} | "
                 f"{r['dense_macs'] / 1e9:.2f} | {r['role']} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--conv_impl", default="xla", choices=("xla", "im2col"))
  p.add_argument("--top", type=int, default=15)
  p.add_argument("--xla_dump", default=None,
                 help="only summarise an --xla_dump_to folder (e.g. from the GPU suite)")
  p.add_argument("--checks", action="store_true",
                 help="also: float64 values, host callbacks, convolutions touching the clip")
  a = p.parse_args(argv)
  if a.xla_dump:
    for m in xla_dump_summary(a.xla_dump):
      print(m)
    return 0
  closed = trace(a.batch, a.conv_impl)
  rows = census(closed)
  print(f"phase-3 WGAN train step, batch {a.batch}, conv_impl={a.conv_impl}: "
        f"{len(rows)} convolutions in the jaxpr\n")
  print(summary(rows))
  print("\nLargest:\n")
  print(detail(rows, a.top))
  if a.checks:
    print("\n", jaxpr_checks(closed))
  return 0


if __name__ == "__main__":
  sys.exit(main())
