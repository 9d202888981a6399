"""A training workdir is the user's data: the lock, the checks before anything is written, the
resume-config check, and the checks the read-only tools (evaluate, generate, export) run first.

* :class:`WorkdirLock`: ``fcntl.flock`` on ``WORKDIR/.lock`` (the holder's pid written in it),
  taken by training before it writes anything and removed at a normal end; the OS releases the
  lock when the process dies, so a ``kill -9`` leaves at most an unlocked file, never a stale
  lock. A second training gets :class:`WorkdirLockedError`
  naming the workdir and the holder's pid, with nothing changed.
* :func:`locked_training`: the decorator on ``loop.train_and_evaluate``; in order: config values
  (``data.batch_size >= 1``, ...), the workdir (not a file, creatable, writable), the lock, the
  resume-config check against ``WORKDIR/config.json`` (:func:`check_resume_config`) and an
  explicit ``config.restore_step`` (newer checkpoints moved aside, never deleted). All of it
  before the loop writes a byte; the loop writes ``config.json`` only after the restore worked.
* :func:`check_not_locked`: evaluation/generation read without the lock, but refuse to write a
  file inside a workdir whose lock is held.
* :func:`check_trained_workdir`: a workdir given to evaluate/generate holds a ``config.json``
  of the expected task kind and at least one checkpoint (checked before any data is loaded).
"""
from __future__ import annotations

import difflib
import errno
import fcntl
import functools
import json
import os
import shutil
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import ml_collections

from d2m_jax.train.errors import (ConfigError, ConfigMismatchError, WorkdirError,
                                  WorkdirLockedError)

LOCK_NAME = ".lock"
SUPERSEDED_DIR = "superseded_checkpoints"
# Fields that may differ between a workdir's config.json and the config of a resume without
# being named in ``config.allow_config_change``: how long, how often and where things are
# logged/evaluated/saved, and how the work is spread over devices and input workers. A field
# ``a.b`` here also allows everything under it.
ALWAYS_ALLOWED = (
    "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "async_checkpoints", "num_eval_batches", "eval_split",
    "final_eval_splits", "debug_nan_step", "restore_step", "allow_config_change",
    "parallel", "num_devices", "distributed", "evals", "target", "max_train_seconds",
    "profile_steps", "keep_best",
    "data.data_dir", "data.raw_dir", "data.loader", "data.host_prefetch", "data.num_workers",
)


# ------------------------------------------------------------------------------------ lock ----

def _open_lock_file(path: str) -> int:
  return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


class WorkdirLock:
  """Exclusive, non-blocking ``flock`` on ``WORKDIR/.lock``; :meth:`release` (or process death)
  frees it. Raises :class:`WorkdirLockedError` when another process (or another open of the same
  file in this process) holds it."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self._fd = None
    for _ in range(100):  # retried only when a releasing holder unlinked the file meanwhile
      try:
        fd = _open_lock_file(self.path)
      except OSError as e:
        raise WorkdirError(_unwritable(self.workdir, e)) from None
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          raise WorkdirLockedError(
              f"workdir {self.workdir} is in use by another training (pid "
              f"{holder_pid(self.path)} holds {self.path}); nothing was changed. Wait for it "
              "to end or use another --workdir") from None
        raise WorkdirError(_unwritable(self.workdir, e)) from None
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)  # we locked a file its holder had just removed: take the new one
    else:
      raise WorkdirError(f"workdir {self.workdir}: could not take {self.path}")
    self._fd = fd
    try:
      os.ftruncate(fd, 0)
      os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as e:
      self.release()
      raise WorkdirError(_unwritable(self.workdir, e)) from None

  def release(self):
    """Removes the lock file (a clean workdir after a normal end), then unlocks. A waiting
    process that opened the old file notices the unlink and takes a new one."""
    if self._fd is not None:
      try:
        os.unlink(self.path)
      except OSError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def holder_pid(lock_path: str) -> str:
  try:
    with open(lock_path) as f:
      return f.read().strip() or "unknown"
  except OSError:
    return "unknown"


def is_locked(workdir: str) -> bool:
  """Whether a training holds ``workdir``'s lock now (probes with a shared, non-blocking flock
  that is dropped at once)."""
  path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
  if not os.path.exists(path):
    return False
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
  except OSError:
    return True
  finally:
    os.close(fd)


def check_not_locked(out_path: str, what: str = "--out"):
  """Refuses to write ``out_path`` inside a workdir a training holds (any ancestor folder)."""
  folder = os.path.dirname(os.path.abspath(out_path))
  while True:
    if is_locked(folder):
      raise WorkdirLockedError(
          f"{what}={out_path}: inside workdir {folder}, which a training holds (pid "
          f"{holder_pid(os.path.join(folder, LOCK_NAME))}); write somewhere else")
    parent = os.path.dirname(folder)
    if parent == folder:
      return
    folder = parent


# ------------------------------------------------------------------- checks before writing ----

def _unwritable(workdir: str, e: OSError) -> str:
  if e.errno == errno.ENOSPC:
    return f"workdir {workdir}: no space left on the device holding it ({e.strerror})"
  return f"workdir {workdir} is not writable ({e.strerror or e}); pick a writable --workdir"


def check_config_values(config: ml_collections.ConfigDict):
  """Values that would otherwise fail deep inside jax (or look like a NaN)."""
  data = config.get("data") if hasattr(config, "get") else None
  if data is not None:
    for field in ("batch_size", "eval_batch_size"):
      if field in data and data[field] is not None and int(data[field]) < 1:
        raise ConfigError(f"config.data.{field}={data[field]}: must be >= 1")
  for field in ("num_train_steps",):
    if field in config and int(config[field]) < 0:
      raise ConfigError(f"config.{field}={config[field]}: must be >= 0")
  for field in ("log_every_steps", "keep_checkpoints"):
    if field in config and config[field] is not None and int(config[field]) < 1:
      raise ConfigError(f"config.{field}={config[field]}: must be >= 1")


def prepare_workdir(workdir: str) -> str:
  """Creates ``workdir`` (and parents); a file in the way or a folder that cannot be created is
  :class:`WorkdirError`. Returns the absolute path."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} is a file, not a folder; pick another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise WorkdirError(f"workdir {workdir}: a part of the path is a file; pick another "
                       "--workdir") from None
  except OSError as e:
    raise WorkdirError(_unwritable(workdir, e)) from None
  return workdir


def checkpoint_steps(workdir: str) -> List[int]:
  """The step folders under ``WORKDIR/checkpoints`` (complete or not), sorted."""
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder)
                if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


# ------------------------------------------------------------------------- resume config ----

def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      key = f"{prefix}{k}"
      if isinstance(v, dict) and v:
        out.update(_flatten(v, key + "."))
      else:
        out[key] = v
  return out


def config_as_json(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config as ``config.json`` holds it (the same serialisation the loop writes)."""
  if isinstance(config, dict):
    return json.loads(json.dumps(config, default=str))
  return json.loads(config.to_json_best_effort(indent=2, sort_keys=True))


def _allowed(key: str, allow: Sequence[str]) -> bool:
  return any(key == a or key.startswith(a + ".") for a in allow)


def allowed_changes(config) -> List[str]:
  raw = config.get("allow_config_change", "") if hasattr(config, "get") else ""
  if isinstance(raw, str):
    extra = [s.strip() for s in raw.split(",") if s.strip()]
  else:
    extra = [str(s) for s in (raw or ())]
  return list(ALWAYS_ALLOWED) + extra


def _schema_default(key: str, value) -> bool:
  """Whether ``key`` is a top-level ``optim.<schema key>`` at its default value."""
  from d2m_jax.train.defaults import OPTIM_DEFAULTS  # pylint: disable=import-outside-toplevel
  parts = key.split(".")
  if len(parts) != 2 or parts[0] != "optim" or parts[1] not in OPTIM_DEFAULTS:
    return False
  return json.loads(json.dumps(OPTIM_DEFAULTS[parts[1]])) == value


def check_resume_config(saved: Dict[str, Any], new: ml_collections.ConfigDict, *,
                        allow: Optional[Iterable[str]] = None, path: str = "config.json"):
  """Raises :class:`ConfigMismatchError` naming every field (outside ``allow``) whose value in
  ``new`` differs from the workdir's saved config (a field only one of them has counts too)."""
  allow = list(allowed_changes(new) if allow is None else allow)
  a, b = _flatten(saved), _flatten(config_as_json(new))
  diffs = []
  for key in sorted(set(a) | set(b)):
    if _allowed(key, allow):
      continue
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if va == "<absent>" and _schema_default(key, vb):
      continue      # written before config.optim listed the optimiser schema's defaults
    if va != vb:
      diffs.append(f"{key}: {va!r} -> {vb!r}")
  if diffs:
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    raise ConfigMismatchError(
        f"resume refused: the config differs from {path} (the checkpoints were trained with "
        f"it) in {shown}. Use the workdir's values, a new --workdir, or name the fields in "
        f"--config.allow_config_change=<field,...>")


# ----------------------------------------------------------------- explicit restore step ----

def supersede_newer_checkpoints(workdir: str, restore_step: int, log: Callable[[str], None]):
  """``config.restore_step``: checkpoints newer than it are moved (never deleted) to
  ``WORKDIR/superseded_checkpoints/<step>`` so the resume starts from ``restore_step``."""
  steps = checkpoint_steps(workdir)
  if restore_step not in steps:
    raise ConfigError(f"config.restore_step={restore_step}: no checkpoints/{restore_step} in "
                      f"{workdir} (there: {steps or 'none'})")
  ckdir = os.path.join(workdir, "checkpoints")
  for s in steps:
    if s > restore_step:
      dest_dir = os.path.join(workdir, SUPERSEDED_DIR)
      os.makedirs(dest_dir, exist_ok=True)
      dest = os.path.join(dest_dir, str(s))
      n = 1
      while os.path.exists(dest):
        dest = os.path.join(dest_dir, f"{s}.{n}")
        n += 1
      shutil.move(os.path.join(ckdir, str(s)), dest)
      log(f"config.restore_step={restore_step}: moved checkpoints/{s} to {dest}")


# ---------------------------------------------------------------- the training entry guard ----

def locked_training(fn):
  """Decorates ``train_and_evaluate(config, workdir, ...)``: runs the checks above, holds the
  lock for the whole call (process 0 only; other processes of a multi-host run share it).

  ``after=fn(state)`` (keyword, taken by this wrapper) runs once training returned, still under
  the lock: what a launcher writes into the workdir after training (the generator export) can
  then never race another run of the same workdir.
  """

  @functools.wraps(fn)
  def wrapper(config, workdir, *args, after=None, **kwargs):
    import jax  # pylint: disable=import-outside-toplevel
    check_config_values(config)
    if jax.process_index() != 0:  # same checks (read-only); process 0 locks and moves folders
      workdir = os.path.abspath(workdir)
      _check_before_resume(config, workdir, move=False)
      _sync_processes("workdir_checked")
      return _then(fn(config, workdir, *args, **kwargs), after)
    workdir = prepare_workdir(workdir)
    lock = WorkdirLock(workdir)
    try:
      _check_before_resume(config, workdir)
      _sync_processes("workdir_checked")
      return _then(fn(config, workdir, *args, **kwargs), after)
    finally:
      lock.release()

  return wrapper


def _then(state, after):
  if after is not None:
    after(state)
  return state


def _sync_processes(name: str):
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:
    from d2m_jax.train import distributed  # pylint: disable=import-outside-toplevel
    distributed.sync(name)


def _check_before_resume(config, workdir: str, move: bool = True):
  steps = checkpoint_steps(workdir)
  if not steps:
    return
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise WorkdirError(f"{path}: unreadable ({e}); the checkpoints there cannot be checked "
                         "against the config") from None
    check_resume_config(saved, config, path=path)
  restore_step = config.get("restore_step", None) if hasattr(config, "get") else None
  if restore_step is not None and int(restore_step) >= 0:
    if move:
      supersede_newer_checkpoints(workdir, int(restore_step), lambda m: print(m, flush=True))
  # the checkpoint the loop will resume from verifies (checksums) before the loop writes a file
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  checkpoint.verify_latest(workdir)


# ------------------------------------------------------- the read-only tools' workdir check ----

def check_trained_workdir(workdir: str, flag: str = "--checkpoint",
                          tasks: Optional[Sequence[str]] = None, *,
                          need_config: bool = True) -> Dict[str, Any]:
  """A workdir to read (evaluate/generate): a folder with a readable ``config.json`` whose task
  is one of ``tasks`` (when given) and at least one checkpoint. Returns the saved config
  (``{}`` with ``need_config=False``: the caller brings its own config)."""
  if not os.path.exists(workdir):
    raise WorkdirError(f"{flag}={workdir}: no such folder")
  if not os.path.isdir(workdir):
    raise WorkdirError(f"{flag}={workdir}: a file, not a training workdir")
  if not need_config:
    if not checkpoint_steps(workdir):
      raise WorkdirError(f"{flag}={workdir}: no checkpoint (checkpoints/ is empty or absent)")
    return {}
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{flag}={workdir}: not a training workdir (no config.json; train it "
                       "with launch/train.py --workdir=...)")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path}: unreadable config ({e})") from None
  task = saved.get("task")
  if tasks is not None and task not in tasks:
    raise WorkdirError(f"{flag}={workdir}: a {task!r} workdir; expected one of "
                       f"{', '.join(tasks)}")
  if not checkpoint_steps(workdir):
    raise WorkdirError(f"{flag}={workdir}: no checkpoint yet (checkpoints/ is empty or absent)")
  return saved


# ---------------------------------------------------------------------- config key errors ----

def unknown_key_message(root: Any, dotted: str, flag: str = "--config") -> Optional[str]:
  """For an override ``--config.a.b.c``: the first part of the path ``root`` lacks, with the
  nearest valid keys at that level (difflib); None when the whole path exists."""
  node = root
  parts = dotted.split(".")
  for i, part in enumerate(parts):
    keys = list(node.keys()) if hasattr(node, "keys") else []
    if not hasattr(node, "keys") or part not in keys:
      where = ".".join(["config"] + parts[:i])
      if not hasattr(node, "keys"):
        return (f"{flag}.{dotted}: config key {where} is a value, it has no field {part!r}")
      near = difflib.get_close_matches(part, [str(k) for k in keys], n=3, cutoff=0.5)
      hint = (f"did you mean {', '.join(f'{where}.{k}' for k in near)}?" if near else
              f"valid keys of {where}: {', '.join(sorted(map(str, keys)))}")
      return f"{flag}.{dotted}: unknown config key {where}.{part}; {hint}"
    node = node[part]
  return None
