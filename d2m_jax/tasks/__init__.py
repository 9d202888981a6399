"""Registry of trainable model families.

``config.task = "style"`` imports ``d2m_jax.tasks.style`` and calls its ``make_task(config)``.
Adding a model means adding a module here; nothing else needs editing.
"""
from __future__ import annotations

import importlib
from typing import Optional

import ml_collections


def get_task(config: ml_collections.ConfigDict):
  """Returns the Task for ``config.task``, with a clear error for unknown names."""
  return _task_module(config.task).make_task(config)


def _task_module(name: str):
  try:
    return importlib.import_module(f"d2m_jax.tasks.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"d2m_jax.tasks.{name}":
      raise ValueError(f"config.task={name!r}: no module d2m_jax/tasks/{name}.py") from None
    raise


def restore_workdir(workdir: str, *, config: Optional[ml_collections.ConfigDict] = None,
                    step=None):
  """(state, config, task) of a training workdir: reads its ``config.json`` (unless ``config``
  is given), builds the Task and restores the latest (or ``step``: an int or ``"best"``,
  :func:`d2m_jax.train.checkpoint.resolve_step`) checkpoint onto the default device. The entry
  point for generation/evaluation code."""
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  step = checkpoint.resolve_step(workdir, step)
  if config is None:
    config = checkpoint.load_config(workdir)
  return checkpoint.restore_state(workdir, task_for_workdir(config, workdir, step=step), config,
                                  step=step)


def task_for_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                     step: Optional[int] = None):
  """The Task of a trained workdir. A task module may define ``make_task_for_restore(config,
  workdir, step)`` to build itself from the workdir alone (the composition stage takes its
  frozen networks from its own checkpoint instead of the stage-1/style workdirs)."""
  module = _task_module(config.task)
  if hasattr(module, "make_task_for_restore"):
    return module.make_task_for_restore(config, workdir, step)
  return module.make_task(config)


# Task kinds the read-only tools accept (checked on the workdir's config.json before any data
# is loaded): generators have a ``generate`` method; style models give music-style vectors.
GENERATOR_TASKS = ("d2m_composition", "kakashi", "l2d_classifier", "l2d_seq_gan", "wgan_audio")
STYLE_MODEL_TASKS = ("style", "music_style")
DANCE_CLASSIFIER_TASKS = ("dance_style",)
