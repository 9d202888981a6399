"""The one place a train state is made: :func:`build_state` and its shape-only twin
:func:`abstract_state`.

The engine, checkpoint restore, export, the benchmarks and the tests all make states through
these two functions, so a state is always built the same way:

1. ``task.prepare_host(batch, stats)`` runs on the host first (outside any trace). Work that needs
   concrete data, such as fitting k-means centroids for the learn2dance classifier, happens
   there and nowhere else;
2. ``task.init_state(rng, batch, stats)`` runs under ``jax.jit`` (an eager flax init of the
   scans is many times slower; the batch is a traced argument, never a baked-in constant, the
   small stats stay concrete), with the mesh's replicated out-sharding when one is given, so the state is born
   where the train step wants it;
3. :func:`abstract_state` is the same call under ``jax.eval_shape``: the ``ShapeDtypeStruct``
   tree (with shardings) that orbax restores into, that ``jax.export`` lowers against and that
   the benchmarks size their programs with. Nothing is computed, so a restore never builds a
   state it then throws away.

There is no eager fallback: an ``init_state`` that cannot be traced is a bug in its task, and
:class:`StateBuildError` says which task and why.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import jax
import numpy as np

_TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                 jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


class StateBuildError(RuntimeError):
  """A task's ``init_state`` could not be traced (it must be jittable; see
  ``Task.prepare_host``)."""


def _init_fn(task, stats):
  """``(rng, batch) -> state``: the batch is traced (never a baked-in constant); the dataset
  stats (small: means, stds, class counts) stay concrete host arrays, so tasks may derive
  constants from them with numpy (class weights, 2-D projections)."""
  return lambda rng, batch: task.init_state(rng, batch, stats)


def _traced(what, task, fn):
  try:
    return fn()
  except _TRACE_ERRORS as e:
    raise StateBuildError(
        f"{type(task).__name__}.init_state is not traceable ({type(e).__name__}); host-side "
        f"work that needs concrete data belongs in {type(task).__name__}.prepare_host ({what})"
    ) from e


def build_state(task, rng, batch: Dict[str, Any], stats: Optional[Dict[str, np.ndarray]] = None,
                *, sharding=None):
  """``task``'s initial train state, made under ``jax.jit``.

  Args:
    task: a :class:`d2m_jax.train.task.Task`.
    rng: a PRNG key (``jax.random.PRNGKey(config.seed)`` in training).
    batch: one host batch with the keys and shapes the input pipeline yields.
    stats: the dataset statistics (or None: tasks use placeholder shapes).
    sharding: where every leaf goes (e.g. ``NamedSharding(mesh, P())``, replicated); None
      leaves placement to jit (the default device).
  """
  task.prepare_host(batch, stats)
  fn = jax.jit(_init_fn(task, stats), out_shardings=sharding)
  return _traced("build_state", task, lambda: fn(rng, batch))


def abstract_state(task, rng, batch: Dict[str, Any],
                   stats: Optional[Dict[str, np.ndarray]] = None, *, sharding=None):
  """The ``ShapeDtypeStruct`` tree of :func:`build_state`'s result, without computing it;
  with ``sharding`` every leaf carries it (orbax restores into that placement)."""
  shapes = _traced("abstract_state", task,
                   lambda: jax.eval_shape(_init_fn(task, stats), rng, batch))
  if sharding is None:
    return shapes
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def count_params(state) -> int:
  """Number of values in the state's floating-point arrays (parameters, moments, stats)."""
  return int(sum(np.size(x) for x in jax.tree.leaves(state)
                 if hasattr(x, "dtype") and np.issubdtype(x.dtype, np.floating)))
