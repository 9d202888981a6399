"""Collectives that work the same whether or not a data-parallel axis is bound.

Every task writes ONE per-device step body ``train_step(state, batch, axis_name)``. The engine
runs it three ways (``config.parallel``):

* ``jit``: ``jax.jit`` with the batch under ``NamedSharding(mesh, P("data"))`` and the state
  replicated; the body sees the *global* batch and ``axis_name=None`` (XLA inserts the
  all-reduce itself), so :func:`pmean` is the identity;
* ``shard_map`` and ``pmap``: the body sees the per-device slice and ``axis_name="data"``, so
  :func:`pmean` averages gradients, metrics and batch statistics over devices.

With equal per-device batches the mean of per-device means equals the global mean, so the three
modes give the same parameters. The collectives themselves live in :mod:`d2m_jax.nn.collectives`
(a layer below models, so models can use them too); this module re-exports them with the
engine's axis name.
"""
from __future__ import annotations

from d2m_jax.nn.collectives import pmean, psum

DATA_AXIS = "data"

__all__ = ["DATA_AXIS", "pmean", "psum"]
