"""Checkpoints: an orbax ``CheckpointManager`` under ``WORKDIR/checkpoints``, verified.

* periodic (``config.checkpoint_every_steps``), asynchronous when ``config.async_checkpoints``
  (orbax copies the arrays to host inside ``save`` and writes them in a background thread, so the
  donated state can move on);
* each checkpoint holds the whole train state (params, optimiser states, rng, step and the
  normalisation stats the task put in it) plus a small JSON ``meta`` item: the step, the input
  pipeline position (``data_step``: batches consumed, so ``make_iterator(start_step=...)``
  resumes the exact batch order) and the config;
* **checksums**: once orbax has finished writing step N (at the next save, ``wait`` or
  ``close``), the sha256 and size of every file under ``checkpoints/N`` go to
  ``checkpoints/N/checksums.json`` (atomic). :meth:`Checkpointer.restore` verifies them before
  orbax reads anything, turns every orbax failure into one line, and checks the restored state
  is finite: a damaged checkpoint is a :class:`~d2m_jax.train.errors.CheckpointError` naming
  ``checkpoints/N``, the file, and the remedy (the newest older checkpoint that verifies, to be
  used with ``--config.restore_step``, or removing the folder). There is **no automatic
  fallback**: a damaged checkpoint means a disk, copy or hand-editing problem the user must
  know about, and resuming silently from an older step would re-train (and, with ``keep``,
  delete) work without a word. A checkpoint without ``checksums.json`` (older engine, or a
  kill in the instant between orbax finishing and the manifest write) is restored with a
  warning line and checked finite;
* **keep**: orbax deletes nothing (``max_to_keep=None``); after step N's checksums are written
  (hashed from the files orbax finished writing), checkpoints older than the newest ``keep``
  that verify (each older one re-hashed once per process) are deleted. An unverified or
  damaged newer checkpoint never causes an older one to go; a step :meth:`Checkpointer.protect`
  names (the best one so far, ``config.keep_best``: ``d2m_jax/train/best.py``) is never pruned;
* a full disk while saving is a :class:`~d2m_jax.train.errors.DiskFullError` naming the disk,
  the space needed and free; orbax's partial temporary folder is removed and the last good
  checkpoint stays intact;
* every process calls save/restore (orbax coordinates multi-host writes); only the state's
  checkpointed form is saved (one copy, not the pmap-stacked one); checksums are written and
  pruning done by process 0.

:func:`restore_state` restores the latest state of a workdir on the default device for the Task
it is handed; generation/evaluation code calls ``d2m_jax.tasks.restore_workdir``, which builds
that Task from the config saved in the workdir first (the engine never looks tasks up).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, Tuple

import jax
import ml_collections
import numpy as np

from d2m_jax.train.errors import CheckpointError, DiskFullError

CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.json"   # the best checkpoint by config.keep_best (d2m_jax/train/best.py)


def _ocp():
  """orbax.checkpoint, imported on first use (~1 s): reading a config or a generator export
  (``d2m_jax.generator_export``) does not need it."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp
CHECKSUMS = "checksums.json"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def resolve_step(workdir: str, step) -> Optional[int]:
  """A checkpoint step as the read-only tools take it: None (the latest), an int, its digits,
  or ``"best"``: the step ``WORKDIR/best.json`` names (written by ``config.keep_best``).
  ValueError naming the workdir and the problem otherwise."""
  if step is None or isinstance(step, (int, np.integer)):
    return None if step is None else int(step)
  text = str(step).strip()
  if text.isdigit():
    return int(text)
  if text != "best":
    raise ValueError(f"step {step!r}: expected a checkpoint step (an integer) or 'best'")
  path = os.path.join(os.path.abspath(workdir), BEST_FILE)
  try:
    with open(path) as f:
      best = int(json.load(f)["step"])
  except FileNotFoundError:
    raise ValueError(f"{path}: no such file: step 'best' needs a run trained with "
                     "config.keep_best.metric set") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
  if not os.path.isdir(os.path.join(checkpoint_dir(workdir), str(best))):
    raise ValueError(f"{path} names step {best}, but {checkpoint_dir(workdir)}/{best} is gone")
  return best


# ------------------------------------------------------------------------------ checksums ----

def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _files_under(folder: str) -> List[str]:
  out = []
  for root, _, names in os.walk(folder):
    for n in names:
      rel = os.path.relpath(os.path.join(root, n), folder)
      if rel != CHECKSUMS:
        out.append(rel)
  return sorted(out)


def write_checksums(step_dir: str, step: int) -> Dict[str, Any]:
  """Hashes every file of a finished checkpoint into ``step_dir/checksums.json`` (atomic)."""
  files = {rel: {"size": os.path.getsize(os.path.join(step_dir, rel)),
                 "sha256": _sha256(os.path.join(step_dir, rel))}
           for rel in _files_under(step_dir)}
  manifest = {"version": 1, "step": int(step), "files": files}
  tmp = os.path.join(step_dir, f".{CHECKSUMS}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, CHECKSUMS))
  return manifest


def checksum_problem(step_dir: str) -> Optional[str]:
  """What is wrong with a checkpoint folder according to its checksums (None: it verifies).
  Raises FileNotFoundError when it has no ``checksums.json``."""
  if not os.path.isdir(step_dir):
    return "the folder is gone"
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  try:
    with open(path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"{CHECKSUMS} is unreadable ({type(e).__name__})"
  for rel, want in sorted(files.items()):
    full = os.path.join(step_dir, rel)
    if not os.path.exists(full):
      return f"file {rel} is missing"
    size = os.path.getsize(full)
    if size != want["size"]:
      return f"file {rel} has {size} bytes, {want['size']} were written"
    if _sha256(full) != want["sha256"]:
      return f"file {rel} fails its sha256 checksum (its bytes changed since it was written)"
  return None


def _step_folders(directory: str) -> List[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def damaged_error(directory: str, step: int, problem: str, verified=()) -> CheckpointError:
  """The one line for a damaged ``directory/step``: what is wrong and the remedy (the newest
  older checkpoint that verifies, or removing the folder)."""
  prev = None
  for s in reversed(_step_folders(directory)):
    if s >= step:
      continue
    try:
      if s in verified or checksum_problem(os.path.join(directory, str(s))) is None:
        prev = s
        break
    except FileNotFoundError:
      continue
  where = os.path.join(directory, str(step))
  if prev is not None:
    remedy = (f"the newest intact one is step {prev}: resume with --config.restore_step="
              f"{prev} (moves checkpoints/{step} aside; --step={prev} for generate), or "
              f"remove {where}")
  else:
    remedy = f"no older checkpoint verifies; remove {where} to start again"
  return CheckpointError(f"checkpoint {where} is damaged: {problem}; {remedy}")


def verify_step(directory: str, step: int, verified=None) -> bool:
  """``directory/step`` against its checksums: True verified (added to ``verified``), False
  when it has none (but looks complete); :class:`CheckpointError` when damaged."""
  step_dir = os.path.join(directory, str(step))
  try:
    problem = checksum_problem(step_dir)
  except FileNotFoundError:
    if not os.path.exists(os.path.join(step_dir, "_CHECKPOINT_METADATA")):
      raise damaged_error(directory, step, f"{CHECKSUMS} and _CHECKPOINT_METADATA are gone "
                          f"({len(_files_under(step_dir))} files left)",
                          verified or ()) from None
    return False
  if problem is not None:
    raise damaged_error(directory, step, problem, verified or ())
  if verified is not None:
    verified.add(step)
  return True


def verify_latest(workdir: str) -> Optional[int]:
  """Verifies the newest step folder of a workdir (the one a resume starts from); returns its
  step (None: no checkpoint). No orbax manager is built (nothing is printed)."""
  steps = _step_folders(checkpoint_dir(workdir))
  if not steps:
    return None
  verify_step(checkpoint_dir(workdir), steps[-1])
  return steps[-1]


# ------------------------------------------------------------------------------ disk full ----

def _is_disk_full(e: BaseException) -> bool:
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e) or "ENOSPC" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def mount_point(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  while not os.path.ismount(path):
    path = os.path.dirname(path)
  return path


def _folder_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(folder, r)) for r in _files_under(folder)) if (
      os.path.isdir(folder)) else 0


class Checkpointer:
  """``ocp.CheckpointManager`` with the engine's state + meta layout, checksums and pruning."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    self.keep = max(1, int(keep)) if keep else None
    self.read_only = read_only
    self._is_main = jax.process_index() == 0
    self._pending: Optional[int] = None    # saved, checksums not written yet
    self._verified = set()                 # steps verified against their checksums here
    self.protected = set()                 # steps never pruned (config.keep_best's best)
    self._last_state_bytes = 0
    self._async = bool(async_save)
    options = _ocp().CheckpointManagerOptions(
        max_to_keep=None, create=not read_only, enable_async_checkpointing=async_save,
        read_only=read_only, save_interval_steps=0 if read_only else 1)
    self.manager = _ocp().CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(int(step)))

  # ---- save -------------------------------------------------------------------------------
  def _orbax_save(self, step: int, state, meta: Dict[str, Any], force: bool) -> bool:
    return self.manager.save(
        int(step), args=_ocp().args.Composite(state=_ocp().args.StandardSave(state),
                                           meta=_ocp().args.JsonSave(meta)), force=force)

  def save(self, step: int, state, meta: Dict[str, Any], *, force: bool = True) -> bool:
    """Saves ``state`` (checkpointed form: one replicated copy) at ``step``; the previous
    save's checksums are written (and old checkpoints pruned) first."""
    self.wait()
    self._last_state_bytes = int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)))
    try:
      saved = self._orbax_save(step, state, meta, force)
    except Exception as e:  # pylint: disable=broad-except
      self._raise_if_disk_full(e, step)
      raise
    if saved:
      self._pending = int(step)
      if not self._async:
        self.wait()
    return saved

  def wait(self):
    """Waits for an asynchronous save, then writes its checksums and prunes old checkpoints."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._raise_if_disk_full(e, self._pending)
      raise
    step, self._pending = self._pending, None
    if step is None:
      return
    if self._is_main:
      try:
        write_checksums(self.step_dir(step), step)  # hashed from the files on disk
      except OSError as e:
        self._raise_if_disk_full(e, step)
        raise
      self._verified.add(step)
    if jax.process_count() > 1:  # every process prunes alike (orbax's delete is collective)
      from d2m_jax.train import distributed  # pylint: disable=import-outside-toplevel
      distributed.sync(f"checksums_{step}")
      self._verify(step)
    if step in self._verified:
      self._prune()

  def protect(self, step: int, previous: Optional[int] = None):
    """Keeps checkpoint ``step`` whatever ``keep`` says (``previous``, the step protected
    before it, goes back to the usual pruning)."""
    if previous is not None:
      self.protected.discard(int(previous))
    self.protected.add(int(step))

  def _verify(self, step: int) -> bool:
    """Whether checkpoint ``step`` verifies against its checksums (remembered once it does)."""
    if step not in self._verified:
      try:
        if checksum_problem(self.step_dir(step)) is None:
          self._verified.add(step)
      except FileNotFoundError:
        pass
    return step in self._verified

  def _prune(self):
    """Deletes checkpoints older than the newest ``keep`` that verify (never an older one
    because of an unverified or damaged newer one)."""
    if self.keep is None:
      return
    steps = sorted(self.manager.all_steps(), reverse=True)
    good = []
    for s in steps:
      if len(good) >= self.keep:
        break
      if self._verify(s):
        good.append(s)
    if len(good) < self.keep:
      return
    for s in steps:
      if s < good[-1] and s not in self.protected:
        self.manager.delete(s)
        self._verified.discard(s)

  def _raise_if_disk_full(self, e: BaseException, step: Optional[int]):
    if not _is_disk_full(e):
      return
    for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
      if "orbax-checkpoint-tmp" in name or (step is not None and name == str(step) and not
                                            os.path.exists(os.path.join(self.directory, name,
                                                                        "commit_success.txt"))):
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    self._pending = None
    good = [s for s in self.manager.all_steps(read=True) if s != step] if step is not None \
        else self.manager.all_steps(read=True)
    last = max(good) if good else None
    need = max(self._last_state_bytes, _folder_bytes(self.step_dir(last)) if last else 0)
    free = shutil.disk_usage(mount_point(self.directory)).free
    raise DiskFullError(
        errno.ENOSPC,
        f"no space left on the disk holding {self.directory} (mounted at "
        f"{mount_point(self.directory)}): checkpoint {step} needs about {need / 1e6:.1f} MB, "
        f"{free / 1e6:.1f} MB are free. The last good checkpoint "
        f"({'step ' + str(last) if last is not None else 'none'}) is intact; free some space "
        "and launch again to resume") from None

  # ---- restore ----------------------------------------------------------------------------
  def _damaged(self, step: int, problem: str) -> CheckpointError:
    return damaged_error(self.directory, step, problem, self._verified)

  def verify(self, step: int, *, warn: bool = True) -> bool:
    """Checks step's files against its checksums: True verified, False no checksums (a
    warning line is printed), :class:`CheckpointError` when damaged."""
    if step in self._verified:
      return True
    if not verify_step(self.directory, step, self._verified):
      if self._is_main and warn:
        print(f"warning: checkpoint {self.step_dir(step)} has no {CHECKSUMS} (written by an "
              "older version, or the run stopped right after saving it): restored without "
              "checksum verification, checked finite", file=sys.stderr, flush=True)
      return False
    return True

  def _resolve(self, step: Optional[int]) -> int:
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    if not os.path.isdir(self.step_dir(step)):
      raise CheckpointError(f"no checkpoint {self.step_dir(step)} (there: "
                            f"{list(self.manager.all_steps()) or 'none'})")
    return step

  def restore(self, abstract_state, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """Restores (state, meta); ``abstract_state`` is a ``ShapeDtypeStruct`` tree with shardings.
    Verified first, checked finite after; any failure is one :class:`CheckpointError` line."""
    step = self._resolve(step)
    verified = self.verify(step)
    try:
      restored = self.manager.restore(
          step, args=_ocp().args.Composite(state=_ocp().args.StandardRestore(abstract_state),
                                        meta=_ocp().args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      if verified:  # intact files: the state this config builds is not the one saved
        raise CheckpointError(
            f"checkpoint {self.step_dir(step)} is intact (checksums verified) but does not fit "
            f"the train state this config builds ({_first_line(e)}): the model config differs "
            "from the one it was trained with") from None
      raise self._damaged(step, f"orbax cannot read it ({_first_line(e)})") from None
    state = restored["state"]
    bad = _non_finite_leaf(state)
    if bad is not None:
      raise self._damaged(step, f"it holds NaN/inf values (in {bad})")
    return state, dict(restored["meta"])

  def restore_meta(self, step: Optional[int] = None) -> Dict[str, Any]:
    step = self._resolve(step)
    self.verify(step)
    try:
      restored = self.manager.restore(step,
                                      args=_ocp().args.Composite(meta=_ocp().args.JsonRestore()))
      return dict(restored["meta"])
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its meta item cannot be read ({_first_line(e)})") from None

  def close(self):
    try:
      self.wait()
    finally:
      self.manager.close()


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _non_finite_leaf(tree) -> Optional[str]:
  """The path of the first float leaf with a NaN/inf (None: all finite)."""
  from d2m_jax.train import parallel  # pylint: disable=import-outside-toplevel
  if parallel.all_finite(tree):
    return None
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(x, "dtype") and np.issubdtype(x.dtype, np.floating):
      if not np.all(np.isfinite(np.asarray(jax.device_get(x)))):
        return jax.tree_util.keystr(path)
  return "a float array"


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The ``config.json`` the engine dumped into ``workdir``."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json (is {workdir!r} a training workdir?)")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if "optim" in config:   # workdirs written before the one optimiser schema
    from d2m_jax.train import optim  # pylint: disable=import-outside-toplevel
    config = optim.upgrade_legacy(config)
  return config


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


def restore_tree(workdir: str, step: Optional[int] = None) -> Dict[str, Any]:
  """The saved train state of a workdir as nested dicts of numpy arrays, verified like
  :meth:`Checkpointer.restore`, with no Task needed (shapes from the checkpoint's own metadata).
  Composition workdirs take their frozen stage-1/style weights from here."""
  ckpt = Checkpointer(workdir, read_only=True, async_save=False)
  try:
    step = ckpt._resolve(step)  # pylint: disable=protected-access
    ckpt.verify(step)
    try:
      md = _ocp().StandardCheckpointer().metadata(os.path.join(ckpt.step_dir(step), "state"))
      tree = getattr(md, "item_metadata", md)
      tree = getattr(tree, "tree", tree)
    except Exception as e:  # pylint: disable=broad-except
      raise ckpt._damaged(step, f"its metadata cannot be read ({_first_line(e)})") from None  # pylint: disable=protected-access
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            tree)
    state, _ = ckpt.restore(abstract, step=step)
  finally:
    ckpt.close()
  return jax.device_get(state)


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
