"""Evaluators: what a run measures, during training and after it, through one code path.

``config.evals`` maps a name to an evaluator spec (big_vision's ``config.evals``)::

    c.evals.val = dict(kind="task_eval", every_steps=500, split="validation", final=True)
    c.evals.motion = dict(kind="motion_ratio", every_steps=250, split="test", num_batches=4)

* ``kind``: a registered evaluator (:data:`REGISTRY`; :func:`register` adds one);
* ``every_steps``: the training loop's cadence (0: only at the end);
* ``final``: also run when training ends, whatever ended it (the last step, SIGTERM, the
  wall-clock budget or a met target);
* ``split``: the data split it reads; further keys are the kind's own options.

A config without ``evals`` gets the engine's historical pair, named after their splits:
``eval_split`` every ``eval_every_steps`` and each of ``final_eval_splits`` at the end, all of
kind ``task_eval``. Results are logged as ``eval_<name>/<metric>`` (so the historical names,
``eval_validation/accuracy``, stay), next to ``eval_<name>/seconds``, the evaluation's own cost.

The loop (``d2m_jax.train.actions.Evaluate``) and ``launch/evaluate.py --workdir_evals`` call
:func:`run`; evaluators never touch the train state or its rng (motion evaluators draw from
their own key), so evaluating does not change training and exact resume holds with evals on.

Kinds shipped here:

``task_eval``
  ``task.eval_step`` over every example of the split once (global batches of
  ``data.eval_batch_size``, the last padded and masked): scalars are example-weighted means,
  arrays (confusion counts) sums, then ``task.finalize_eval`` (accuracy per class, balanced
  accuracy). ``num_batches`` (default ``config.num_eval_batches``; 0 = all) bounds it.
``motion_ratio``
  For tasks with ``motion_rows(state, batch, rng) -> {row: (N, T, P) units}`` (the Dancing2Music
  stages: real units, the VAE's reconstruction, prior samples, the dance and music paths):
  mean frame-to-frame motion ``|x[t+1] - x[t]|`` of each row, its ratio to the ``real``
  row and ``|log ratio|`` (0 when the row moves exactly as much as the real units: the target
  to minimise for a generator, which can overshoot as well as damp), over ``num_batches``
  batches (default 4) of the split.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Iterable, Iterator

import jax
import ml_collections
import numpy as np

REGISTRY: Dict[str, Callable[..., Dict[str, Any]]] = {}
SPEC_KEYS = ("kind", "every_steps", "split", "final")


def register(kind: str):
  """Decorator: ``@register("my_kind") def fn(ctx, state, spec) -> {metric: value}``."""
  def deco(fn):
    REGISTRY[kind] = fn
    return fn
  return deco


@dataclasses.dataclass
class EvalContext:
  """What an evaluator may use: the config, the task, the parallel wrapper and the inputs.

  ``batches(split)`` yields the split's host batches (every example once, fixed order, padded
  last batch with ``eval_mask``); ``cache`` keeps compiled functions between calls.
  """
  config: ml_collections.ConfigDict
  task: Any
  dp: Any
  batches: Callable[[str], Iterable[Dict[str, np.ndarray]]]
  cache: Dict[str, Any] = dataclasses.field(default_factory=dict)


def specs(config: ml_collections.ConfigDict) -> Dict[str, ml_collections.ConfigDict]:
  """``config.evals`` with defaults filled in, or the historical pair (see the module doc)."""
  evals = config.get("evals")
  if evals is not None and len(evals.keys()):
    out = {}
    for name, spec in evals.items():
      spec = ml_collections.ConfigDict(dict(spec))
      if "kind" not in spec or spec.kind not in REGISTRY:
        raise ValueError(f"config.evals.{name}.kind={spec.get('kind')!r}: expected one of "
                         f"{sorted(REGISTRY)} (dance_metrics is registered by "
                         f"d2m_jax.metrics.evaluation, which launch/train.py imports)")
      spec.every_steps = int(spec.get("every_steps", 0) or 0)
      spec.split = str(spec.get("split", config.get("eval_split", "validation")))
      spec.final = bool(spec.get("final", True))
      out[name] = spec
    return out
  every = int(config.get("eval_every_steps", 0) or 0)
  periodic = str(config.get("eval_split", "validation"))
  finals = [str(s) for s in (config.get("final_eval_splits") or ())]
  out = {}
  for split in dict.fromkeys([periodic] + finals):
    out[split] = ml_collections.ConfigDict(dict(
        kind="task_eval", every_steps=every if split == periodic else 0, split=split,
        final=split in finals))
  return out


ADD_EVAL_FORMAT = "NAME,KIND,SPLIT,EVERY_STEPS"


def add_evals(config: ml_collections.ConfigDict, texts) -> list:
  """Adds the launchers' ``--add_eval=NAME,KIND,SPLIT,EVERY_STEPS`` specs to ``config.evals``
  (``final=True``; EVERY_STEPS 0: only at the end), in place, and returns their names. A config
  without ``evals`` first gets its historical pair written out (:func:`specs`), so adding an
  evaluator keeps the ones the config already runs. ValueError naming the flag on a malformed
  spec or an unknown kind."""
  texts = list(texts or ())
  if not texts:
    return []
  with config.unlocked():
    if config.get("evals") is None or not len(config.evals.keys()):
      config.evals = ml_collections.ConfigDict({n: s.to_dict() for n, s in specs(config).items()})
    names = []
    for text in texts:
      parts = str(text).split(",")
      try:
        name, kind, split, every = parts
        every = int(every)
      except ValueError:
        raise ValueError(f"--add_eval={text!r}: expected {ADD_EVAL_FORMAT}") from None
      if kind not in REGISTRY:
        raise ValueError(f"--add_eval={text!r}: kind {kind!r} is not one of {sorted(REGISTRY)}")
      config.evals[name] = dict(kind=kind, split=split, every_steps=every, final=True)
      names.append(name)
  return names


SET_GEN_FORMAT = "model.gen_KEY=VALUE"


def set_generation(config: ml_collections.ConfigDict, texts) -> Dict[str, Any]:
  """Applies the launchers' ``--set_gen=model.gen_KEY=VALUE`` to ``config`` in place and returns
  ``{key: value}``: a generation setting (static threshold, style mode, candidates, first frame)
  scored on a trained checkpoint without retraining. Only ``model.gen_*`` keys the config already
  has (the rest would not match the checkpoint); the value takes that field's type. ValueError
  naming the flag otherwise."""
  out = {}
  for text in list(texts or ()):
    key, sep, raw = str(text).partition("=")
    field = key[len("model."):]
    if not sep or not key.startswith("model.gen_") or field not in config.model:
      known = sorted(k for k in config.model.keys() if k.startswith("gen_"))
      raise ValueError(f"--set_gen={text!r}: expected {SET_GEN_FORMAT} with KEY one of {known}")
    old = config.model[field]
    try:
      if isinstance(old, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
          raise ValueError(raw)
        value = raw.lower() in ("true", "1")
      else:
        value = type(old)(raw) if old is not None else raw
    except ValueError:
      raise ValueError(f"--set_gen={text!r}: {raw!r} does not parse as {type(old).__name__} "
                       f"(model.{field} is {old!r})") from None
    with config.unlocked():
      config.model[field] = value
    out[key] = value
  return out


def applicable(task, spec) -> bool:
  """Whether ``task`` can run an evaluator of this spec (task_eval needs an eval_step)."""
  need = {"task_eval": "eval_step", "motion_ratio": "motion_rows",
          "dance_metrics": "generate"}.get(spec.kind)
  return need is None or task.supports(need)


def run(name: str, spec, ctx: EvalContext, state) -> Dict[str, Any]:
  """Runs one evaluator; returns its metrics plus ``seconds`` (its own wall time)."""
  t0 = time.perf_counter()
  metrics = REGISTRY[spec.kind](ctx, state, spec)
  metrics["seconds"] = time.perf_counter() - t0
  del name
  return metrics


def eval_batches(data_cfg, split: str) -> Iterator[Dict[str, np.ndarray]]:
  """Every example of ``split`` once, in a fixed order: global batches of
  ``data.eval_batch_size``, the last one padded (``eval_mask`` marks real rows), each process
  taking its rows of every global batch (so all processes run the same number of batches)."""
  from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  arrays = {k: v for k, v in pipeline.load_split(data_cfg, split).items()
            if not k.startswith("_")}
  n = len(next(iter(arrays.values())))
  gb = int(data_cfg.get("eval_batch_size", data_cfg.batch_size))
  n_proc, pid = jax.process_count(), jax.process_index()
  if gb % n_proc:
    raise ValueError(f"config.data.eval_batch_size={gb} not divisible by {n_proc} processes")
  local = gb // n_proc
  for start in range(0, n, gb):
    idx = np.arange(start, start + gb)
    mask = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)[pid * local:(pid + 1) * local]
    batch = {k: v[idx] for k, v in arrays.items()}
    batch["eval_mask"] = mask[pid * local:(pid + 1) * local]
    yield batch


def pad_batch(batch: Dict[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
  """Pads a short last batch to ``size`` rows (repeating its last row) and adds ``eval_mask``
  (1 for real rows) so tasks can count exactly; full batches get all ones."""
  n = len(next(iter(batch.values())))
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if n < size:
      v = np.concatenate([v, np.repeat(v[-1:], size - n, axis=0)], axis=0)
    out[k] = v
  mask = np.asarray(batch["eval_mask"], np.float32) if "eval_mask" in batch \
      else np.ones(n, np.float32)
  out["eval_mask"] = np.concatenate([mask, np.zeros(size - n, np.float32)]) if n < size else mask
  return out


@jax.jit
def _global_sum(x):
  return x.sum()


def _limit(spec, default: int) -> int:
  n = spec.get("num_batches")
  return int(default if n is None else n)


@register("task_eval")
def task_eval(ctx: EvalContext, state, spec) -> Dict[str, Any]:
  """``task.eval_step`` over the split (see the module docstring)."""
  size = int(ctx.config.data.eval_batch_size) // jax.process_count()
  limit = _limit(spec, int(ctx.config.get("num_eval_batches", 0) or 0))
  sums: Dict[str, Any] = {}
  weight, n_batches = 0.0, 0
  for i, batch in enumerate(ctx.batches(spec.split)):
    if 0 < limit <= i:
      break
    placed = ctx.dp.put_batch(pad_batch(batch, size))
    n_real = float(_global_sum(placed["eval_mask"]))  # over all processes' rows
    if "task_eval" not in ctx.cache:
      fn = ctx.dp.wrap(lambda s, b, axis_name=None: ctx.task.eval_step(s, b, axis_name=axis_name),
                       donate=False, out_state=False)
      ctx.cache["task_eval"], _ = ctx.dp.compile(fn, state, placed)
    for k, v in ctx.dp.metrics_to_host(ctx.cache["task_eval"](state, placed)).items():
      v = np.asarray(v, np.float64)
      sums[k] = sums.get(k, 0.0) + (v * n_real if v.ndim == 0 else v)
    weight += n_real
    n_batches += 1
  if not n_batches:
    return {}
  out = {k: (float(v / weight) if np.ndim(v) == 0 else v) for k, v in sums.items()}
  out["num_examples"] = int(weight)
  out.update(ctx.task.finalize_eval(out))
  return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}


def motion(units) -> float:
  """Mean frame-to-frame motion ``|x[t+1] - x[t]|`` of units (..., T, P), in float64."""
  u = np.asarray(units, np.float64)
  return float(np.abs(np.diff(u, axis=-2)).mean())


@register("motion_ratio")
def motion_ratio(ctx: EvalContext, state, spec) -> Dict[str, Any]:
  """Motion of each of ``task.motion_rows``' rows and its ratio to the real units'."""
  limit = _limit(spec, 4)
  rng = jax.random.PRNGKey(int(spec.get("seed", 0)))
  if "motion_rows" not in ctx.cache:
    ctx.cache["motion_rows"] = jax.jit(ctx.task.motion_rows)
  sums: Dict[str, float] = {}
  n_batches = 0
  for i, batch in enumerate(ctx.batches(spec.split)):
    if 0 < limit <= i:
      break
    batch = {k: v for k, v in batch.items() if k != "eval_mask"}
    rows = jax.device_get(ctx.cache["motion_rows"](state, batch, jax.random.fold_in(rng, i)))
    for row, units in rows.items():
      sums[row] = sums.get(row, 0.0) + motion(units)
    n_batches += 1
  if not n_batches:
    return {}
  out = {f"{row}_motion": v / n_batches for row, v in sums.items()}
  real = out.get("real_motion")
  if real:
    for row in sums:
      if row != "real":
        ratio = out[f"{row}_motion"] / real
        out[f"{row}_ratio"] = ratio
        out[f"{row}_log_ratio"] = abs(float(np.log(ratio))) if ratio > 0 else float("inf")
  out["num_batches"] = n_batches
  return out


def scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
  """The scalar entries of an evaluator's metrics (what goes to the metrics stream)."""
  return {k: float(v) for k, v in metrics.items()
          if np.ndim(v) == 0 and isinstance(v, (int, float, np.number, np.ndarray))}


def describe(metrics: Dict[str, Any]) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(scalars(metrics).items()))


def default_batches(config) -> Callable[[str], Iterable[Dict[str, np.ndarray]]]:
  """``split -> batches`` from the processed dataset of ``config.data``."""
  return lambda split: eval_batches(config.data, split)



def evaluate_state(config, task, state, names=None) -> Dict[str, Dict[str, Any]]:
  """Runs ``config``'s evaluators (all, or ``names``) on a restored state outside training, on
  one device: what ``launch/evaluate.py --evals_of=WORKDIR`` prints. The same functions as the
  loop's, so a figure logged during training is reproduced from its checkpoint."""
  from d2m_jax.train import parallel  # pylint: disable=import-outside-toplevel
  all_specs = specs(config)
  names = list(all_specs) if not names else list(names)
  unknown = [n for n in names if n not in all_specs]
  if unknown:
    raise ValueError(f"evaluators {unknown} not in the workdir's config (it has "
                     f"{sorted(all_specs)})")
  dp = parallel.DataParallel("jit", parallel.make_mesh(1))
  ctx = EvalContext(config, task, dp, default_batches(config))
  state = dp.put_state(state)
  return {n: run(n, all_specs[n], ctx, state) for n in names
          if applicable(task, all_specs[n])}
