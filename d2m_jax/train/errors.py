"""The user-facing error types of the engine: each one carries a one-line message that names the
file, folder or config field and says what to do. Launchers catch them by type and print
``error: <message>`` (exit 1 for training, 2 for the read-only tools) instead of a traceback.

* :class:`ConfigError`: a config key that does not exist, a config file that cannot be loaded,
  a value out of range (``data.batch_size < 1``);
* :class:`WorkdirError`: the workdir is a file, cannot be created, is read-only, is not a
  training workdir (no ``config.json`` / no checkpoint) or is of the wrong kind;
* :class:`WorkdirLockedError`: another process holds ``WORKDIR/.lock``;
* :class:`ConfigMismatchError`: a resume whose config differs from the workdir's
  ``config.json`` in fields that must not change;
* :class:`CheckpointError`: a checkpoint that fails its checksums, cannot be read or holds
  NaN/inf values;
* :class:`DiskFullError`: no space left while writing a checkpoint;
* :class:`ResourceError`: a request that cannot fit (e.g. a generation batch larger than the
  memory), refused before any work.
"""
from __future__ import annotations


class UserError(Exception):
  """Base: an ordinary failure the user can fix; ``str(e)`` is the one line to print."""


class ConfigError(UserError, ValueError):
  pass


class WorkdirError(UserError, ValueError):
  pass


class WorkdirLockedError(WorkdirError):
  pass


class ConfigMismatchError(UserError, ValueError):
  pass


class CheckpointError(UserError, RuntimeError):
  pass


class DiskFullError(UserError, OSError):
  pass


class ResourceError(UserError, ValueError):
  pass
