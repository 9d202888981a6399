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
  name = config.task
  try:
    module = importlib.import_module(f"d2m_jax.tasks.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"d2m_jax.tasks.{name}":
      raise ValueError(f"config.task={name!r}: no module d2m_jax/tasks/{name}.py") from None
    raise
  return module.make_task(config)


def restore_workdir(workdir: str, *, config: Optional[ml_collections.ConfigDict] = None,
                    step: Optional[int] = None):
  """(state, config, task) of a training workdir: reads its ``config.json`` (unless ``config``
  is given), builds the Task and restores the latest (or ``step``) checkpoint onto the default
  device. The entry point for generation/evaluation code."""
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  if config is None:
    config = checkpoint.load_config(workdir)
  return checkpoint.restore_state(workdir, get_task(config), config, step=step)
