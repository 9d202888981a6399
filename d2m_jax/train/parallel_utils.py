"""Collectives that work the same whether or not a data-parallel axis is bound.

Every task writes ONE per-device step body ``train_step(state, batch, axis_name)``. The engine
runs it three ways (``config.parallel``):

* ``jit``: ``jax.jit`` with the batch under ``NamedSharding(mesh, P("data"))`` and the state
  replicated; the body sees the *global* batch and ``axis_name=None`` (XLA inserts the
  all-reduce itself), so :func:`pmean` is the identity;
* ``shard_map`` and ``pmap``: the body sees the per-device slice and ``axis_name="data"``, so
  :func:`pmean` averages gradients, metrics and batch statistics over devices.

With equal per-device batches the mean of per-device means equals the global mean, so the three
modes give the same parameters.
"""
from __future__ import annotations

from typing import Optional

import jax

DATA_AXIS = "data"


def pmean(tree, axis_name: Optional[str]):
  """``lax.pmean`` over ``axis_name``; identity when no axis is bound (jit mode)."""
  if axis_name is None:
    return tree
  return jax.lax.pmean(tree, axis_name)


def psum(tree, axis_name: Optional[str]):
  """``lax.psum`` over ``axis_name``; identity when no axis is bound (jit mode)."""
  if axis_name is None:
    return tree
  return jax.lax.psum(tree, axis_name)
