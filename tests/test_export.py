"""Accelerator readiness without an accelerator: every step exported for GPU and TPU.

``jax.export`` lowers a jitted function for ``platforms=("cuda",)`` / ``("tpu",)`` on this
CPU-only jaxlib from abstract shapes (nothing runs, nothing compiles). Inside
``d2m_jax.target.targeting(...)`` the model traces exactly what a GPU/TPU run would trace
(``dtype='auto'`` -> bfloat16, ``rnn_impl='auto'`` -> unrolled on GPU / scan on TPU, the Triton GRU
kernel instead of Pallas interpret mode, XLA convolutions instead of im2col).

Checked for every config in ``configs/`` (and its named variants):

* the engine's train step (``DataParallel.wrap``: jit, state replicated, batch sharded over a
  4-device data mesh) in the default accelerator dtype (bfloat16) and in float32;
* the eval step where the task has one; the jitted generation cores where the task generates;
* each ``rnn_impl`` on the platforms that claim it, and the shard_map form of the step.

What must not be in an accelerator step: host callbacks (any ``*callback*`` custom call or
effect), float64, and state buffers that are not donated (every kept state argument of the
train step aliases an output or is a buffer donor).

Which Pallas paths lower where (jax 0.10, CPU-only jaxlib): the fused GRU kernel lowers for
``cuda`` through Triton (custom call ``__gpu$xla.gpu.triton``; not on jax.export's list of stable
custom calls, so the export disables that one check: fine for a readiness check, not for a
serialised artifact). ``resolve_impl`` never gives ``pallas`` on TPU (it falls back to
``unrolled``), and ``auto`` never gives ``pallas`` anywhere.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import pathlib
import re
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from d2m_jax import target
from d2m_jax.nn import rnn as rnn_lib
from d2m_jax.tasks import get_task
from d2m_jax.train import parallel
from d2m_jax.train import state as train_state
from d2m_jax.train.task import Task

REPO = pathlib.Path(__file__).resolve().parents[1]
PLATFORMS = ("cuda", "tpu")
TRITON = "__gpu$xla.gpu.triton"
DEVICES = 4
NOT_TRAINABLE = {"l2d_kmeans"}             # a k-means script, not a Task (asserted below)
VARIANTS = {"d2m_decomposition": ("openpose",), "d2m_composition": ("openpose",)}
# Cost (the file runs on every commit; tracing is the cost, ~0.2-4 s of CPU per export): every
# config's train step in bfloat16 (what 'auto' runs on accelerators), its eval step in float32,
# and the train step in float32 for the models of the GPU suite. The WGAN-audio ablations differ
# from wgan_audio only in losses/activations/encoder and the named variants only in sizes: their
# bfloat16 train step is exported, not their eval step.
F32_TRAIN = ("style_paper", "d2m_decomposition", "d2m_composition", "wgan_audio", "wgan_seq",
             "kakashi")
VARIANT_ROW = ("wgan_audio_",)
# Tiny structure where tracing cost follows depth (sizes do not matter: shapes are abstract).
TINY = {"wgan_audio": {"model.n_cells": 1, "model.nblocks_gen": 1, "model.nblocks_critic": 1,
                       "model.audio_layers": 2}}


def _config_names() -> List[str]:
  return sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")


def _rows() -> List[str]:
  rows = []
  for name in _config_names():
    if name in NOT_TRAINABLE:
      continue
    rows.append(name)
    rows += [f"{name}:{v}" for v in VARIANTS.get(name, ())]
  return rows


def load_config(row: str, **overrides):
  """``configs/<name>.py:get_config([variant])`` for ``row`` = name[:variant], made :data:`TINY`,
  with dotted ``overrides``."""
  name, _, variant = row.partition(":")
  spec = importlib.util.spec_from_file_location(f"_export_config_{name}",
                                                REPO / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config(variant) if variant else mod.get_config()
  tiny = {k: v for prefix, kv in TINY.items() if name.startswith(prefix) for k, v in kv.items()}
  for key, value in dict(tiny, **overrides).items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def _batch_size(cfg) -> int:
  m = cfg.model
  n = int(m.get("n_critic", 1)) if m.get("slice_batch", True) else 1
  return DEVICES * n // math.gcd(DEVICES, n) if n > 1 else 2 * DEVICES


def _stats(batch) -> Dict[str, np.ndarray]:
  from benchmarks.train_step import synthetic_stats  # pylint: disable=import-outside-toplevel
  return synthetic_stats(batch)


def build(row: str, platform: str, **overrides):
  """(task, abstract state, host batch) of ``row`` traced for ``platform`` (cached)."""
  return _build(row, platform, tuple(sorted(overrides.items())))


@functools.lru_cache(maxsize=None)
def _build(row: str, platform: str, overrides):
  cfg = load_config(row, **dict(overrides))
  cfg.data.batch_size = _batch_size(cfg)
  task = get_task(cfg)
  batch = task.synthetic_batch(cfg.data.batch_size, np.random.default_rng(0))
  stats = _stats(batch)
  task.prepare_host(batch, stats)
  with target.targeting(platform):
    state = train_state.abstract_state(task, jax.random.PRNGKey(0), batch, stats)
  return task, state, batch


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def export_for(fn, args, platforms: Tuple[str, ...], trace_as: str):
  """``jax.export`` of jitted ``fn`` at abstract ``args``; traced as for ``trace_as``."""
  with target.targeting(trace_as):
    return export.export(fn, platforms=platforms,
                         disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)])(*args)


# ----------------------------------------------------------------------------- module checks

_CALLBACK = re.compile(r"callback", re.IGNORECASE)
_F64 = re.compile(r"(?<![A-Za-z0-9_])f64(?![0-9])|xf64|complex<f64>")


def custom_call_targets(text: str) -> set:
  return set(re.findall(r"custom_call @([\w$.]+)", text))


def main_arg_attrs(text: str) -> List[str]:
  """The attribute dict text of each argument of ``@main`` (in order)."""
  start = text.index("@main(") + len("@main(")
  attrs, depth, i, cur, in_str = [], 0, start, None, False
  while i < len(text):
    c = text[i]
    if in_str:
      in_str = c != '"' or text[i - 1] == "\\"
    elif c == '"':
      in_str = True
    elif c in "({[<":
      if c == "{" and depth == 0:
        cur = i
      depth += 1
    elif c in ")}]>":
      if c == ")" and depth == 0:
        break
      if text[i - 1] != "-":   # "->" is not a bracket
        depth -= 1
      if c == "}" and depth == 0 and cur is not None:
        attrs.append(text[cur:i + 1])
        cur = None
    i += 1
  n_args = len(re.findall(r"%arg\d+:", text[start:i]))
  assert len(attrs) == n_args, f"parsed {len(attrs)} attribute dicts for {n_args} arguments"
  return attrs


def check_accelerator_module(exp, platforms, *, n_donated: int = 0, allow_triton=False):
  """Asserts the exported module is fit for an accelerator; returns its text."""
  assert tuple(exp.platforms) == tuple(platforms)
  text = exp.mlir_module()   # (printing a big module costs ~0.3 s: done once per export)
  assert not exp.ordered_effects and not exp.unordered_effects, "effects in an accelerator step"
  targets = custom_call_targets(text)
  bad = {t for t in targets if _CALLBACK.search(t)}
  assert not bad, f"host callbacks in the step: {sorted(bad)}"
  if not allow_triton:
    assert TRITON not in targets
  m = _F64.search(text)
  assert m is None, f"float64 in the step: ...{text[max(0, m.start() - 120):m.end() + 40]}..."
  for aval in list(exp.in_avals) + list(exp.out_avals):
    assert aval.dtype != jnp.float64, aval
  if n_donated:
    attrs = main_arg_attrs(text)
    if len(platforms) > 1:
      attrs = attrs[1:]                       # the platform index argument
    kept = exp.module_kept_var_idx
    assert len(attrs) == len(kept)
    for flat_idx, a in zip(kept, attrs):
      donated = "tf.aliasing_output" in a or "jax.buffer_donor" in a
      if flat_idx < n_donated:
        assert donated, f"state input {flat_idx} is not donated: {a}"
      else:
        assert not donated, f"batch input {flat_idx} is donated: {a}"
    kept_state = sum(1 for k in kept if k < n_donated)
    assert kept_state >= 0.5 * n_donated, f"only {kept_state}/{n_donated} state leaves in the step"
  return text


def _train_export(row, dtype, platforms, trace_as, mode="jit", **overrides):
  task, state, batch = build(row, trace_as, dtype=dtype, **overrides)
  mesh = parallel.make_mesh(DEVICES)
  dp = parallel.DataParallel(mode, mesh)
  fn = dp.wrap(task.train_step)
  args = (_abstract(state, dp.replicated), _abstract(batch, dp.batch_sharding))
  exp = export_for(fn, args, platforms, trace_as)
  assert exp.nr_devices == DEVICES
  return task, state, exp


# ----------------------------------------------------------------------------- tests

def test_every_config_is_covered():
  names = _config_names()
  assert len(names) >= 20 and "d2m_decomposition" in names
  for name in NOT_TRAINABLE:   # not a Task: get_task refuses it with a clear line
    with pytest.raises(ValueError, match="not a training task"):
      get_task(load_config(name))


TRAIN_ROWS = [(r, "bfloat16") for r in _rows()] + [(r, "float32") for r in F32_TRAIN]


@pytest.mark.parametrize("row,dtype", TRAIN_ROWS)
def test_train_step_exports_for_gpu_and_tpu(row, dtype):
  # Traced as for TPU (rnn_impl auto -> scan), lowered for cuda and tpu in one module: the
  # traced program does not depend on the platform then (the GPU-only paths: test_rnn_impls).
  task, state, exp = _train_export(row, dtype, PLATFORMS, "tpu", **_scan_overrides(row))
  text = check_accelerator_module(exp, PLATFORMS, n_donated=len(jax.tree.leaves(state)))
  assert "dot_general" in text or "convolution" in text
  assert ("bf16" in text) == (dtype == "bfloat16"), "compute dtype not what the config asks"


EVAL_ROWS = [r for r in _rows() if not (r.startswith(VARIANT_ROW) or ":" in r)]


def _scan_overrides(row, **kw):
  if "rnn_impl" in load_config(row).model:
    kw["model.rnn_impl"] = "scan"
  return kw


@pytest.mark.parametrize("row", EVAL_ROWS)
def test_eval_step_exports(row):
  task, state, batch = build(row, "tpu", **_scan_overrides(row, dtype="float32"))
  if type(task).eval_step is Task.eval_step:
    pytest.skip(f"{row}: the task has no eval step")
  dp = parallel.DataParallel("jit", parallel.make_mesh(DEVICES))
  fn = dp.wrap(lambda s, b, axis_name=None: task.eval_step(s, b, axis_name=axis_name),
               donate=False, out_state=False)
  exp = export_for(fn, (_abstract(state, dp.replicated), _abstract(batch, dp.batch_sharding)),
                   PLATFORMS, "tpu")
  text = check_accelerator_module(exp, PLATFORMS)
  assert "tf.aliasing_output" not in text and "jax.buffer_donor" not in text
  assert "bf16" not in text


# (config, platform, rnn_impl, Triton kernel expected in the module)
RNN_ROWS = [
    ("style_paper", "cuda", "unrolled", False),      # GRU-30: what auto picks on GPU
    ("style_paper", "cuda", "pallas", True),         # the fused Triton GRU kernel
    ("style_paper", "tpu", "unrolled", False),
    ("style_paper", "tpu", "pallas", False),         # falls back to unrolled on TPU
    ("wgan_seq", "cuda", "pallas", True),            # GRU-50 generator and critic
    ("d2m_decomposition", "cuda", "unrolled", False),  # GRU-1024: auto on GPU
    ("d2m_decomposition", "cuda", "pallas", False),    # H > 64: falls back to unrolled
    ("kakashi", "cuda", "pallas", False),              # LSTM: no Pallas kernel
]


@pytest.mark.parametrize("row,platform,impl,triton", RNN_ROWS)
def test_rnn_impls(row, platform, impl, triton):
  overrides = {"model.rnn_impl": impl, "model.unit_length": 8} if row.startswith("d2m") else {
      "model.rnn_impl": impl}
  task, state, exp = _train_export(row, "bfloat16", (platform,), platform, **overrides)
  text = check_accelerator_module(exp, (platform,), n_donated=len(jax.tree.leaves(state)),
                                  allow_triton=triton)
  assert (TRITON in custom_call_targets(text)) == triton
  assert "tpu_custom_call" not in text     # no Mosaic kernel is ever claimed for TPU


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
@pytest.mark.parametrize("kind,hidden", [("gru", 30), ("gru", 1024), ("lstm", 64)])
def test_auto_never_picks_pallas(platform, kind, hidden):
  chosen = rnn_lib.resolve_impl("auto", kind, hidden, backend=platform)
  assert chosen == ("unrolled" if platform == "gpu" else "scan")
  with target.targeting(platform):   # the traced choice follows the export target
    assert rnn_lib.resolve_impl("auto", kind, hidden) == chosen
    assert rnn_lib.resolve_impl("pallas", kind, hidden) == (
        "pallas" if (kind, hidden, platform) in {("gru", 30, "gpu"), ("gru", 30, "cpu")}
        else "unrolled")


@pytest.mark.parametrize("row", ["style_paper", "dance_style"])
def test_shard_map_step_exports(row):
  overrides = {"model.rnn_impl": "scan"}
  task, state, exp = _train_export(row, "bfloat16", PLATFORMS, "tpu", mode="shard_map",
                                   **overrides)
  text = check_accelerator_module(exp, PLATFORMS, n_donated=len(jax.tree.leaves(state)))
  assert "all_reduce" in text      # the gradient pmean over the data axis


# ----------------------------------------------------------------------------- generation

def _gen_d2m(task, state):
  from d2m_jax.models import d2m_inference  # pylint: disable=import-outside-toplevel
  m = task.m
  song = d2m_inference._song_fn(task, max(1, int(m.gen_max_tries)),  # pylint: disable=protected-access
                                int(m.get("gen_tries_per_call", 0)))
  f32 = jnp.float32
  args = (state.params, state.frozen, jax.ShapeDtypeStruct((8, m.style_dim), f32),
          jax.ShapeDtypeStruct((2, m.pose_size), f32), jax.eval_shape(lambda: jax.random.key(0)),
          jax.ShapeDtypeStruct((), f32), jax.ShapeDtypeStruct((), jnp.int32))
  style = d2m_inference._style_fn(task)  # pylint: disable=protected-access
  windows = jax.ShapeDtypeStruct((d2m_inference.STYLE_CHUNK, task.style.input_frames, 28), f32)
  return [(song, args), (style, (state.frozen["style"], windows))]


def _gen_wgan_audio(task, state):
  from d2m_jax.tasks import wgan_audio  # pylint: disable=import-outside-toplevel
  m = task.config.model
  g_vars = {"params": task.sampling_params(state), "batch_stats": state.g_batch_stats}
  f32 = jnp.float32
  T = wgan_audio.WINDOW_FRAMES
  wave = jax.ShapeDtypeStruct((1, T * wgan_audio.HOP + 2 * wgan_audio.CLIP_PAD), f32)
  noise = jax.ShapeDtypeStruct((2, T, m.noise), f32)
  h = (jax.ShapeDtypeStruct((m.n_cells, 2, m.latent - m.noise), f32),
       jax.ShapeDtypeStruct((1, 2, m.noise), f32))
  fn = jax.jit(lambda g, w, n, h: task._generate_chunk(g, w, n, h))  # pylint: disable=protected-access
  return [(fn, (g_vars, wave, noise, h))]


def _gen_kakashi(task, state):
  f32 = jnp.float32
  fn = jax.jit(lambda p, mfcc, seed: task._decode(p, mfcc, 16, seed))  # pylint: disable=protected-access
  return [(fn, (state.params, jax.ShapeDtypeStruct((1, 16, 20), f32),
                jax.ShapeDtypeStruct((1, task.P), f32)))]


def _gen_l2d_classifier(task, state):
  from d2m_jax.tasks import l2d_classifier  # pylint: disable=import-outside-toplevel
  fn = jax.jit(lambda p, f, k: task._sample(p, f, k, 2, 4))  # pylint: disable=protected-access
  feats = jax.ShapeDtypeStruct((1, 4 * l2d_classifier.CLIP_FRAMES, state.feat_mean.shape[-1]),
                               jnp.float32)
  return [(fn, (state.params, feats, jax.eval_shape(lambda: jax.random.key(0))))]


def _gen_l2d_seq_gan(task, state):
  from d2m_jax.tasks import l2d_seq_gan  # pylint: disable=import-outside-toplevel
  f32 = jnp.float32
  return [(jax.jit(task._window), (state, jax.ShapeDtypeStruct((2, l2d_seq_gan.SEQ_Z), f32),  # pylint: disable=protected-access
                                   jax.ShapeDtypeStruct((2, l2d_seq_gan.POSE_Z), f32)))]


GENERATORS = {"d2m_composition": _gen_d2m, "wgan_audio": _gen_wgan_audio,
              "kakashi": _gen_kakashi, "l2d_classifier": _gen_l2d_classifier,
              "l2d_seq_gan": _gen_l2d_seq_gan}


@pytest.mark.parametrize("row,dtype", [(r, "bfloat16") for r in sorted(GENERATORS)]
                         + [("d2m_composition", "float32")])
def test_generation_exports(row, dtype):
  task, state, _ = build(row, "tpu", **_scan_overrides(row, dtype=dtype))
  assert type(task).generate is not Task.generate
  with target.targeting("tpu"):
    fns = GENERATORS[row](task, state)
  for fn, args in fns:
    exp = export_for(fn, args, PLATFORMS, "tpu")
    check_accelerator_module(exp, PLATFORMS)


def test_every_generating_task_is_exported():
  generating = set()
  for name in _config_names():
    if name in NOT_TRAINABLE:
      continue
    task = get_task(load_config(name))
    if type(task).generate is not Task.generate:     # the base class's raises
      generating.add(task.name)
  covered = {get_task(load_config(n)).name for n in GENERATORS}
  assert generating <= covered, f"generation not exported for {sorted(generating - covered)}"
