"""Collectives that work the same whether or not a data-parallel axis is bound.

A per-device step body takes ``axis_name``: ``None`` when it runs under plain ``jax.jit`` on the
global batch (XLA inserts any all-reduce itself, so these are the identity), or the mesh axis
name (``"data"``) under ``shard_map``/``pmap``, where they reduce over devices. They live in
``nn`` (below ``models``) so models such as the mini-batch k-means can use them without
reaching into the engine; ``d2m_jax.train.parallel_utils`` re-exports them.
"""
from __future__ import annotations

from typing import Optional

import jax


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
