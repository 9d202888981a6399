"""One per-device step body, run three ways (``config.parallel``).

Every task writes ``train_step(state, batch, axis_name)`` once (see ``d2m_jax.train.task``).
:class:`DataParallel` wraps it for data parallelism over a 1-D mesh axis ``"data"``:

* ``jit`` (default): ``jax.jit`` with the state replicated (``NamedSharding(mesh, P())``) and the
  batch split on its leading axis (``P("data")``); the body sees the global batch and
  ``axis_name=None``, XLA inserts the gradient all-reduce.
* ``shard_map``: ``jax.jit(jax.shard_map(body))``; the body sees the per-device slice and
  ``axis_name="data"`` so ``parallel_utils.pmean`` averages gradients, metrics and batch stats.
  ``check_vma=False``: recurrent carries created inside the body (zeros, learned h0) are
  device-invariant while the data is not, which the varying-axes checker rejects in ``lax.scan``;
  the replicated outputs are guaranteed by the task's ``pmean`` instead.
* ``pmap``: ``jax.pmap(body, axis_name="data")`` over the local devices; the state is replicated
  by stacking one copy per device (``device_put_replicated`` was removed from jax) and the batch
  is reshaped to (devices, per-device batch, ...).

The state is donated in all three modes. All modes give the same parameters as a single-device
run with the same global batch (tests/test_engine_parallel.py).

Multi-host: ``jit`` and ``shard_map`` build global batches from each process's slice with
``d2m_jax.data.pipeline.to_global`` (``jax.make_array_from_process_local_data``); ``pmap`` runs
over this process's local devices on its local slice.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from d2m_jax.train.parallel_utils import DATA_AXIS

MODES = ("jit", "shard_map", "pmap")


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (0: all of them)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"config.num_devices={num_devices} but only {len(devices)} devices exist")
    devices = devices[:num_devices]
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def _to_global(batch, mesh):
  """Process-local numpy batch -> global arrays sharded ``P("data")`` on the batch axis."""
  try:  # the data pipeline's version (it may add prefetching/validation); same semantics
    from d2m_jax.data.pipeline import to_global  # pylint: disable=import-outside-toplevel
  except ImportError:
    to_global = None
  if to_global is not None:
    return to_global(batch, mesh)
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


class DataParallel:
  """Places state and batches and runs a task's step in one of the three parallel modes."""

  def __init__(self, mode: str, mesh: jax.sharding.Mesh):
    if mode not in MODES:
      raise ValueError(f"config.parallel={mode!r}: expected one of {MODES}")
    if mode == "pmap" and jax.process_count() > 1:
      raise ValueError("config.parallel='pmap' runs over this process's devices only; with "
                       f"{jax.process_count()} processes use 'jit' or 'shard_map'")
    self.mode = mode
    self.mesh = mesh
    self.num_devices = mesh.devices.size
    self.replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    self._local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]

  # -- placement ---------------------------------------------------------------------------------
  def check_batch_size(self, global_batch: int, what: str = "config.data.batch_size"):
    if global_batch % self.num_devices:
      raise ValueError(f"{what}={global_batch} is not divisible by the {self.num_devices} devices "
                       f"of the data mesh (parallel={self.mode})")

  def put_state(self, state):
    """Host/single-device state -> replicated over the mesh (stacked per device for pmap)."""
    if self.mode == "pmap":
      n = len(self._local_devices)
      stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), jax.device_get(state))
      return _pmap_put(stacked, self._local_devices)
    return jax.device_put(state, self.replicated)

  def get_state(self, state):
    """The inverse of :meth:`put_state`: one (replicated, global) copy for checkpoints."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], state)
    return state

  def state_sharding(self):
    """Where a freshly built (or restored) checkpointed-form state lives: replicated over the
    mesh, or for pmap on the first local device (``put_state`` then stacks it per device)."""
    if self.mode == "pmap":
      return jax.sharding.SingleDeviceSharding(self._local_devices[0])
    return self.replicated

  def abstract_state(self, state):
    """``ShapeDtypeStruct`` tree (with shardings) of the checkpointed form of ``state``."""
    if self.mode == "pmap":
      return jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(
              self._local_devices[0])), jax.device_get(state))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated),
                        state)

  def put_batch(self, batch: Dict[str, np.ndarray]):
    """This process's numpy batch -> device arrays in the layout the compiled step expects."""
    if self.mode == "pmap":
      n = len(self._local_devices)

      def split(x):
        x = np.asarray(x)
        if x.shape[0] % n:
          raise ValueError(f"per-process batch {x.shape[0]} not divisible by {n} local devices")
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])
      return _pmap_put(jax.tree.map(split, batch), self._local_devices)
    return _to_global(batch, self.mesh)

  def metrics_to_host(self, metrics) -> Dict[str, np.ndarray]:
    """Replicated device metrics -> host numpy (first device's copy for pmap)."""
    metrics = jax.device_get(metrics)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return metrics

  # -- compiled functions ------------------------------------------------------------------------
  def wrap(self, body: Callable, *, donate: bool = True, out_state: bool = True) -> Callable:
    """Wraps ``body(state, batch, axis_name=...) -> (state, metrics)`` (or ``-> metrics`` when
    ``out_state=False``, e.g. eval) for this mode. Returns an un-compiled jitted/pmapped fn."""
    donate_argnums = (0,) if donate else ()
    if self.mode == "jit":
      fn = functools.partial(body, axis_name=None)
      out = (self.replicated, self.replicated) if out_state else self.replicated
      return jax.jit(fn, in_shardings=(self.replicated, self.batch_sharding), out_shardings=out,
                     donate_argnums=donate_argnums)
    if self.mode == "shard_map":
      fn = functools.partial(body, axis_name=DATA_AXIS)
      out_specs = (P(), P()) if out_state else P()
      sm = jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=out_specs,
                         check_vma=False)
      out = (self.replicated, self.replicated) if out_state else self.replicated
      return jax.jit(sm, in_shardings=(self.replicated, self.batch_sharding), out_shardings=out,
                     donate_argnums=donate_argnums)
    fn = functools.partial(body, axis_name=DATA_AXIS)
    return jax.pmap(fn, axis_name=DATA_AXIS, devices=self._local_devices,
                    donate_argnums=donate_argnums)

  def compile(self, fn: Callable, state, batch) -> Tuple[Callable, float]:
    """Ahead-of-time lower + compile for these (placed) arguments; returns (compiled, seconds)."""
    t0 = time.perf_counter()
    compiled = fn.lower(state, batch).compile()
    return compiled, time.perf_counter() - t0


def _pmap_put(stacked, devices):
  """Puts a tree of (n, ...) host arrays on ``devices`` with the leading axis split: the layout
  ``jax.pmap`` takes and returns (since jax 0.8 pmap is jit + shard_map, so this is a
  ``NamedSharding`` over a mesh of the local devices, ``P("data")`` on the stacked axis)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), stacked)


def all_finite(tree) -> bool:
  """True when every floating leaf of ``tree`` is finite (reduced on device, one bool back)."""
  leaves = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
  if not leaves:
    return True
  return bool(_all_finite_jit(leaves))


@jax.jit
def _all_finite_jit(leaves):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
