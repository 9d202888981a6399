"""Which batch keys a task reads: traced, so a data export can carry only those.

``read_batch_keys(task, batch, stats)`` runs ``init_state``, ``train_step`` and ``eval_step`` under
``jax.eval_shape`` (shapes only: nothing is computed or compiled) on a batch whose dict records
every key looked up (``batch[k]``, ``batch.get(k)``, ``k in batch``). Iterating over the batch
(``items()``, ``keys()``, ``for k in batch``) counts as reading every key, so the answer errs on
the side of more keys, never fewer. The recording dict is a registered pytree, so the lookups
are seen through ``jax.jit``/``vmap``/``scan`` inside the task too.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import jax
import numpy as np

from d2m_jax.train import state as state_lib


class _Record:
  """Shared set of read keys (identity-hashed, so it can sit in a pytree's static aux data)."""

  def __init__(self):
    self.keys: set = set()

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other


class RecordingDict(dict):
  """A dict that notes which keys are read into ``record.keys``."""

  def __init__(self, items, record: _Record):
    super().__init__(items)
    self.record = record

  def __getitem__(self, k):
    self.record.keys.add(k)
    return super().__getitem__(k)

  def get(self, k, default=None):
    self.record.keys.add(k)
    return super().get(k, default)

  def __contains__(self, k):
    self.record.keys.add(k)
    return super().__contains__(k)

  def _all(self):
    self.record.keys.update(dict.keys(self))

  def items(self):
    self._all()
    return super().items()

  def values(self):
    self._all()
    return super().values()

  def keys(self):
    self._all()
    return super().keys()

  def __iter__(self):
    self._all()
    return super().__iter__()

  def copy(self):
    self._all()
    return dict(dict.items(self))


def _flatten(d: RecordingDict):
  keys = tuple(sorted(dict.keys(d)))
  return tuple(dict.__getitem__(d, k) for k in keys), (keys, d.record)


def _unflatten(aux, children):
  keys, record = aux
  return RecordingDict(zip(keys, children), record)


jax.tree_util.register_pytree_node(RecordingDict, _flatten, _unflatten)


def read_batch_keys(task, batch: Dict[str, Any], stats: Optional[Dict[str, np.ndarray]] = None,
                    ) -> tuple[str, ...]:
  """The keys of ``batch`` that ``task`` reads in init_state, train_step and eval_step."""
  record = _Record()
  rec = RecordingDict(batch, record)
  rng = jax.random.PRNGKey(0)
  state = state_lib.abstract_state(task, rng, rec, stats)
  jax.eval_shape(task.train_step, state, rec)
  ev = RecordingDict(dict(batch, eval_mask=np.ones(len(next(iter(batch.values()))), np.float32)),
                     record)
  jax.eval_shape(task.eval_step, state, ev)
  return tuple(sorted(k for k in record.keys if k in batch))
