"""Checkpoints: an orbax ``CheckpointManager`` under ``WORKDIR/checkpoints``.

* periodic (``config.checkpoint_every_steps``), keeps the last ``config.keep_checkpoints``,
  asynchronous when ``config.async_checkpoints`` (orbax copies the arrays to host inside
  ``save`` and writes them in a background thread, so the donated state can move on);
* each checkpoint holds the whole train state (params, optimiser states, rng, step and the
  normalisation stats the task put in it) plus a small JSON ``meta`` item: the step, the input
  pipeline position (``data_step``: batches consumed, so ``make_iterator(start_step=...)``
  resumes the exact batch order) and the config;
* every process calls save/restore (orbax coordinates multi-host writes); only the state's
  checkpointed form is saved (one copy, not the pmap-stacked one).

:func:`restore_state` restores the latest state of a workdir on the default device for the Task
it is handed; generation/evaluation code calls ``d2m_jax.tasks.restore_workdir``, which builds
that Task from the config saved in the workdir first (the engine never looks tasks up).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` with the engine's state + meta layout."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, enable_async_checkpointing=async_save,
        read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, meta: Dict[str, Any], *, force: bool = True) -> bool:
    """Saves ``state`` (checkpointed form: one replicated copy) at ``step``."""
    return self.manager.save(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, abstract_state, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """Restores (state, meta); ``abstract_state`` is a ``ShapeDtypeStruct`` tree with shardings."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def restore_meta(self, step: Optional[int] = None) -> Dict[str, Any]:
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The ``config.json`` the engine dumped into ``workdir``."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json (is {workdir!r} a training workdir?)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_state(workdir: str, task, config: Optional[ml_collections.ConfigDict] = None,
                  *, step: Optional[int] = None):
  """Latest (or ``step``) train state of a workdir, on the default device, for generation code.

  Args:
    workdir: a training workdir (holds ``checkpoints/`` and ``config.json``).
    task: the Task the state belongs to, built by the caller from the workdir's config
      (``d2m_jax.tasks.restore_workdir`` does config -> task -> state in one call).
    config: the training config (read from ``workdir/config.json`` when None).
    step: which checkpoint (None: the latest).
  Returns:
    (state, config, task).
  """
  if config is None:
    config = load_config(workdir)
  ckpt = Checkpointer(workdir, read_only=True, async_save=False)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to restore")
  # Shapes come from a state built on a synthetic batch (no data needed); the stats the task
  # stored in the state are overwritten by the checkpoint's.
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  batch = task.synthetic_batch(max(1, int(config.data.batch_size)), np.random.default_rng(0))
  abstract = state_lib.abstract_state(
      task, jax.random.PRNGKey(int(config.seed)), batch, _dummy_stats(task, config),
      sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  state, _ = ckpt.restore(abstract, step=step)
  ckpt.close()
  return state, config, task


def _dummy_stats(task, config) -> Optional[Dict[str, np.ndarray]]:
  """Stats with the right shapes for building the restore target (their values come from the
  checkpoint): the processed dataset's ``stats.npz`` when it is on this machine (never builds
  anything), else None (tasks then use placeholder shapes)."""
  del task
  try:
    from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    path = os.path.join(pipeline.processed_dir(config.data), "stats.npz")
    if not os.path.exists(path):
      return None
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  except Exception:  # pylint: disable=broad-except  (no data package / odd config: no stats)
    return None
