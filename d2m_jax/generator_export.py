"""Generator exports: the few arrays generation reads, saved next to a workdir's checkpoints.

A training checkpoint holds the whole train state (optimiser moments, discriminators, frozen
encoders generation never calls), and restoring it means building the task's abstract state
(tracing its ``init_state``), restoring the other workdirs it was trained from, and orbax
reading every leaf: ~2.5 s on 2 cores for a quick-start Dancing2Music composition (376 leaves,
50.7 MB), where generation reads 109 leaves. A task that declares ``generation_state(state)``
(a nested dict of what its ``generate`` reads) gets an export:

* ``WORKDIR/generator/step_<N>.npz``: one array per leaf (``"params/dance_dec/..."``), plus a
  JSON ``__meta__`` entry: format version, step, the leaf dtypes, and the identity of the
  checkpoint it was cut from (a hash of ``checkpoints/<N>/_CHECKPOINT_METADATA``, which orbax
  rewrites for every new save), so an export is never used for another checkpoint of that step;
* written atomically by :func:`write` at the end of training (``launch/train.py``) and, for
  workdirs trained before this existed, by the first generation that restores the checkpoint;
* read by :func:`restore_for_generation`: the task is built from the config (composition tasks
  restore their stage-1/style workdirs only when ``init_state`` runs, which generation never
  calls) and the state is a :class:`GenerationState` of device arrays: no orbax import, no trace.

Tasks without ``generation_state`` (or whose state is not made of dicts) use the full restore.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Dict, Optional

import numpy as np

EXPORT_DIR = "generator"
FORMAT_VERSION = 1
META_KEY = "__meta__"
CHECKPOINTS = "checkpoints"
CKPT_METADATA = "_CHECKPOINT_METADATA"


class GenerationState:
  """Attribute access over the exported top-level fields (``state.params``, ``state.stats``)."""

  def __init__(self, fields: Dict[str, Any], step: int):
    self.__dict__.update(fields)
    self.step = step

  def __repr__(self):
    return f"GenerationState(step={self.step}, fields={sorted(self.__dict__)})"


def export_path(workdir: str, step: int) -> str:
  return os.path.join(os.path.abspath(workdir), EXPORT_DIR, f"step_{int(step)}.npz")


def latest_step(workdir: str) -> Optional[int]:
  """The newest committed checkpoint step (a ``checkpoints/<N>`` folder orbax finished)."""
  folder = os.path.join(workdir, CHECKPOINTS)
  try:
    names = os.listdir(folder)
  except OSError:
    return None
  steps = [int(n) for n in names
           if n.isdigit() and os.path.exists(os.path.join(folder, n, CKPT_METADATA))]
  return max(steps) if steps else None


def checkpoint_identity(workdir: str, step: int) -> Optional[str]:
  """A hash of the step's orbax metadata file (its save timestamps), or None if absent."""
  try:
    with open(os.path.join(workdir, CHECKPOINTS, str(int(step)), CKPT_METADATA), "rb") as f:
      return hashlib.sha1(f.read()).hexdigest()
  except OSError:
    return None


def _flatten(tree, prefix=""):
  """{"a/b/c": leaf} of a tree of dicts; None when it holds anything else (lists, objects)."""
  out = {}
  if isinstance(tree, dict) or (hasattr(tree, "keys") and hasattr(tree, "items")):
    for k, v in tree.items():
      if not isinstance(k, str) or "/" in k or not k:
        return None
      sub = _flatten(v, f"{prefix}{k}/")
      if sub is None:
        return None
      out.update(sub)
    return out
  if tree is None:
    return out
  if hasattr(tree, "shape") and hasattr(tree, "dtype"):
    return {prefix[:-1]: tree}
  return None


def _unflatten(flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
  out: Dict[str, Any] = {}
  for key, v in flat.items():
    node = out
    *parents, last = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = v
  return out


def write(workdir: str, task, state, step: int, *, log=None) -> Optional[str]:
  """Saves ``task.generation_state(state)`` for checkpoint ``step``; returns the path, or None
  when the task has no export or the folder cannot be written (logged, not raised)."""
  gen = getattr(task, "generation_state", None)
  ident = checkpoint_identity(workdir, step)
  if gen is None or ident is None:
    return None
  import jax  # pylint: disable=import-outside-toplevel
  flat = _flatten(gen(state))
  if not flat:
    return None
  arrays, dtypes = {}, {}
  for k, v in flat.items():
    a = np.asarray(jax.device_get(v))
    dtypes[k] = str(a.dtype)
    if a.dtype.kind not in "biufc":          # bfloat16 & co: stored as raw bits
      a = a.view(f"u{a.dtype.itemsize}")
    arrays[k] = a
  meta = dict(version=FORMAT_VERSION, step=int(step), checkpoint=ident, dtypes=dtypes,
              task=str(getattr(task, "name", "")))
  arrays[META_KEY] = np.array(json.dumps(meta))
  path = export_path(workdir, step)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except OSError as e:
    (log or (lambda s: print(s, file=sys.stderr)))(
        f"note: could not write the generator export {path}: {e}")
    return None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def load(workdir: str, step: int) -> Optional[GenerationState]:
  """The export of checkpoint ``step`` as device arrays, or None (absent, stale, unreadable)."""
  path = export_path(workdir, step)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(str(z[META_KEY]))
      if (meta.get("version") != FORMAT_VERSION or meta.get("step") != int(step)
          or meta.get("checkpoint") != checkpoint_identity(workdir, step)):
        return None
      flat = {k: z[k] for k in z.files if k != META_KEY}
  except Exception:  # pylint: disable=broad-except  (truncated/foreign file: restore instead)
    return None
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  out = {}
  for k, a in flat.items():
    dt = jnp.dtype(meta["dtypes"][k])
    out[k] = jax.device_put(a.view(dt) if a.dtype != dt else a, device)
  return GenerationState(_unflatten(out), int(step))


def restore_for_generation(workdir: str, *, config=None, step=None, log=None):
  """(state, config, task, source) for generating from a training workdir; ``step``: None (the
  latest), an int or ``"best"`` (:func:`d2m_jax.train.checkpoint.resolve_step`).

  ``source`` is ``"export"`` when the generator export of the checkpoint was used, else
  ``"checkpoint"`` (the full orbax restore; the export is then written for the next call).
  """
  from d2m_jax.tasks import get_task, restore_workdir  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  step = checkpoint.resolve_step(workdir, step)
  if config is None:
    config = checkpoint.load_config(workdir)
  want = latest_step(workdir) if step is None else int(step)
  if want is not None:
    state = load(workdir, want)
    if state is not None:
      task = get_task(config)
      if getattr(task, "generation_state", None) is not None:
        return state, config, task, "export"
  state, config, task = restore_workdir(workdir, config=config, step=step)
  got = int(np.asarray(state.step)) if step is None else int(step)
  if want is not None and got == want:
    write(workdir, task, state, got, log=log)
  return state, config, task, "checkpoint"
