"""A training workdir is the user's data (issue 26): the lock, verified checkpoints (checksums,
finite state, pruning only after verification), config.json only after a working restore, the
resume-config check, a full disk, a read-only workdir, and the read-only tools' checks.

Checkpoint damage is tested on a small pytree through :class:`Checkpointer` (no compile); the
loop-level cases use the tiny style classifier of tests/test_engine_loop.py (in-process).
Launcher exit codes and one-line stderr are in tests/test_workdir_launchers.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil

import jax
import numpy as np
import pytest

from d2m_jax.train import checkpoint as ckpt_lib
from d2m_jax.train import workdir as workdir_lib
from d2m_jax.train.errors import (CheckpointError, ConfigMismatchError, DiskFullError,
                                  WorkdirError, WorkdirLockedError)
from test_engine_loop import data_from, leaves, tiny_config, train  # noqa: E402


# ------------------------------------------------------------------- Checkpointer, no model ---

def _state(v):
  return {"w": np.full((64, 32), v, np.float32), "b": np.arange(32, dtype=np.float32) + v,
          "step": np.int32(v)}


def _abstract():
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                     sharding=dev), _state(0))


def _saved(workdir, steps=(2, 4), keep=5, async_save=True):
  ck = ckpt_lib.Checkpointer(workdir, keep=keep, async_save=async_save)
  for s in steps:
    ck.save(s, _state(s), {"step": s, "data_step": s})
  ck.close()
  return ckpt_lib.checkpoint_dir(workdir)


def _largest(folder):
  """The largest array data file (orbax/tensorstore chunk files live in ``d/`` folders)."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(folder) for n in ns
           if os.path.basename(r) == "d"]
  return max(files, key=os.path.getsize)


def _garbage(d):
  path = _largest(os.path.join(d, "state"))
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 3)
    f.write(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()[
        :os.path.getsize(path) // 3])


def _flip_bits(d):
  path = _largest(os.path.join(d, "state"))
  data = bytearray(open(path, "rb").read())
  for pos in (len(data) // 2, len(data) // 2 + 7, len(data) - 9):
    data[pos] ^= 0x10
  open(path, "wb").write(bytes(data))


def _zero(d):
  path = _largest(os.path.join(d, "state"))
  size = os.path.getsize(path)
  open(path, "wb").write(bytes(size))


def _truncate(d):
  path = os.path.join(d, "meta", "metadata")
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])


DAMAGE = {
    "garbage_bytes": (_garbage, "fails its sha256"),
    "flipped_bits": (_flip_bits, "fails its sha256"),
    "zeroed_file": (_zero, "fails its sha256"),
    "deleted_file": (lambda d: os.remove(_largest(os.path.join(d, "state"))), "is missing"),
    "deleted_metadata": (lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
                         "file state/_METADATA is missing"),
    "truncated_meta": (_truncate, "file meta/metadata has"),
    "emptied_folder": (lambda d: [shutil.rmtree(os.path.join(d, n)) if os.path.isdir(
        os.path.join(d, n)) else os.remove(os.path.join(d, n)) for n in os.listdir(d)],
                       "checksums.json and _CHECKPOINT_METADATA are gone (0 files left)"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_one_line_naming_the_step(tmp_path, damage):
  """Every kind of damage to checkpoints/4 is detected before anything is restored; the line
  names the folder, what is wrong and the remedy (the intact step 2)."""
  ckdir = _saved(str(tmp_path))
  fn, what = DAMAGE[damage]
  fn(os.path.join(ckdir, "4"))
  ck = ckpt_lib.Checkpointer(str(tmp_path), read_only=True, async_save=False)
  with pytest.raises(CheckpointError) as e:
    ck.restore_meta(4)
    ck.restore(_abstract(), step=4)
  msg = str(e.value)
  assert "\n" not in msg and f"{ckdir}/4 is damaged" in msg and what in msg, msg
  assert "--config.restore_step=2" in msg and f"remove {ckdir}/4" in msg, msg
  state, meta = ck.restore(_abstract(), step=2)   # the older one is intact and verifies
  np.testing.assert_array_equal(np.asarray(state["w"]), _state(2)["w"])
  assert meta["data_step"] == 2
  ck.close()


def test_checkpoint_without_checksums_restores_with_a_warning(tmp_path, capfd):
  ckdir = _saved(str(tmp_path))
  os.remove(os.path.join(ckdir, "4", ckpt_lib.CHECKSUMS))
  ck = ckpt_lib.Checkpointer(str(tmp_path), read_only=True, async_save=False)
  state, _ = ck.restore(_abstract(), step=4)
  assert int(state["step"]) == 4
  assert f"{ckdir}/4 has no checksums.json" in capfd.readouterr().err


def test_non_finite_checkpoint_is_refused(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(2, _state(2), {"step": 2})
  bad = _state(4)
  bad["w"][3, 5] = np.nan
  ck.save(4, bad, {"step": 4})
  with pytest.raises(CheckpointError, match=r"4 is damaged: it holds NaN/inf values \(in \['w'\]"):
    ck.restore(_abstract(), step=4)
  ck.close()


def test_keep_deletes_old_checkpoints_only_after_the_newer_ones_verify(tmp_path):
  """keep=2: saving 6 prunes 2 (4 and 6 verify); with 6 damaged, saving 8 keeps 4 (the newest
  two that verify are 8 and 4) instead of deleting it."""
  workdir = str(tmp_path)
  ck = ckpt_lib.Checkpointer(workdir, keep=2, async_save=True)
  for s in (2, 4, 6):
    ck.save(s, _state(s), {"step": s})
  ck.wait()
  assert sorted(ck.manager.all_steps()) == [4, 6]
  for s in (4, 6):
    assert os.path.exists(os.path.join(ck.step_dir(s), ckpt_lib.CHECKSUMS))
  _flip_bits(ck.step_dir(6))
  ck._verified.discard(6)  # pylint: disable=protected-access  (a new process would not know)
  ck.save(8, _state(8), {"step": 8})
  ck.close()
  assert workdir_lib.checkpoint_steps(workdir) == [4, 6, 8]
  assert ckpt_lib.checksum_problem(os.path.join(ckpt_lib.checkpoint_dir(workdir), "4")) is None


@pytest.mark.parametrize("where", ["save", "background_write"])
def test_full_disk_at_save_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch,
                                                                           where):
  """ENOSPC while orbax writes step 4 (simulated: its temporary folder exists, then the error,
  raised by ``save`` or by the background write met in ``wait``): one DiskFullError line naming
  the disk, the space needed and free; the partial folder is removed; step 2 still verifies."""
  workdir = str(tmp_path / "w")
  ck = ckpt_lib.Checkpointer(workdir, keep=5, async_save=True)
  ck.save(2, _state(2), {"step": 2})
  ck.wait()
  tmp = os.path.join(ck.directory, "4.orbax-checkpoint-tmp-1234", "state")

  def fail(*args, **kwargs):
    del args, kwargs
    os.makedirs(tmp, exist_ok=True)
    raise OSError(errno.ENOSPC, "No space left on device")

  if where == "save":
    monkeypatch.setattr(ck, "_orbax_save", fail)
    with pytest.raises(DiskFullError) as e:
      ck.save(4, _state(4), {"step": 4})
  else:
    ck.save(4, _state(4), {"step": 4})
    ck.manager.wait_until_finished()
    shutil.rmtree(ck.step_dir(4))          # as if the write never completed
    monkeypatch.setattr(ck.manager, "wait_until_finished", fail)
    with pytest.raises(DiskFullError) as e:
      ck.wait()
  msg = str(e.value)
  assert "\n" not in msg and f"no space left on the disk holding {ck.directory}" in msg, msg
  assert "checkpoint 4 needs about" in msg and "MB are free" in msg, msg
  assert "The last good checkpoint (step 2) is intact" in msg, msg
  assert sorted(os.listdir(ck.directory)) == ["2"]
  assert ckpt_lib.checksum_problem(ck.step_dir(2)) is None


# ------------------------------------------------------------------------- the loop itself ---

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny style workdir with checkpoints 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("trained") / "w")
  train(tiny_config(4), workdir, train_iter=data_from)
  return workdir


def _copy(trained, tmp_path):
  dst = str(tmp_path / "w")
  shutil.copytree(trained, dst)
  return dst


def _snapshot(folder):
  return {os.path.relpath(os.path.join(r, n), folder): open(os.path.join(r, n), "rb").read()
          for r, _, ns in os.walk(folder) for n in ns}


def test_locked_workdir_refuses_a_second_training_and_changes_nothing(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  with workdir_lib.WorkdirLock(workdir):
    with pytest.raises(WorkdirLockedError) as e:
      train(tiny_config(6), workdir, train_iter=data_from)
    assert workdir_lib.is_locked(workdir)
    with pytest.raises(WorkdirLockedError, match="inside workdir"):
      workdir_lib.check_not_locked(os.path.join(workdir, "gen", "out.npz"))
  msg = str(e.value)
  assert f"workdir {workdir} is in use by another training (pid {os.getpid()}" in msg
  after = _snapshot(workdir)
  after.pop(".lock", None)
  before.pop(".lock", None)
  assert after == before
  workdir_lib.check_not_locked(os.path.join(workdir, "gen", "out.npz"))  # free again
  assert not os.path.exists(os.path.join(workdir, ".lock"))             # and removed


def test_resume_with_other_model_fields_is_refused_and_config_json_kept(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  c = tiny_config(6)
  c.model.hidden = 16
  c.optim.lr = 0.5
  with pytest.raises(ConfigMismatchError) as e:
    train(c, workdir, train_iter=data_from)
  msg = str(e.value)
  assert "model.hidden: 8 -> 16" in msg and "optim.lr: 0.01 -> 0.5" in msg, msg
  assert "num_train_steps" not in msg                      # a cadence field may change
  assert _snapshot(workdir) == before
  # allowed explicitly, the restore itself fails (the shapes differ): config.json still intact
  c.allow_config_change = "model.hidden,optim.lr"
  with pytest.raises(CheckpointError, match="does not fit the train state"):
    train(c, workdir, train_iter=data_from)
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["hidden"] == 8
  # only an allowed field differs: resumes, and config.json then records the new value
  c2 = tiny_config(6, allow_config_change="optim.lr")
  c2.optim.lr = 0.02
  train(c2, workdir, train_iter=data_from)
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["optim"]["lr"] == 0.02 and saved["num_train_steps"] == 6
  assert workdir_lib.checkpoint_steps(workdir)[-1] == 6


def test_damaged_checkpoint_stops_the_resume_then_restore_step_recovers(trained, tmp_path):
  """The loop refuses checkpoints/4 (garbage bytes) with one line and writes nothing; with
  --config.restore_step=2 it moves 4 aside and resumes bit-exactly from 2."""
  workdir = _copy(trained, tmp_path)
  ckdir = ckpt_lib.checkpoint_dir(workdir)
  _garbage(os.path.join(ckdir, "4"))
  before = _snapshot(workdir)
  with pytest.raises(CheckpointError) as e:
    train(tiny_config(6), workdir, train_iter=data_from)
  assert f"{ckdir}/4 is damaged" in str(e.value) and "restore_step=2" in str(e.value)
  after = _snapshot(workdir)
  after.pop(".lock", None)
  before.pop(".lock", None)
  assert after == before                       # refused before the loop wrote anything
  resumed = train(tiny_config(4, restore_step=2), workdir, train_iter=data_from)
  assert os.path.isdir(os.path.join(workdir, workdir_lib.SUPERSEDED_DIR, "4"))
  ref = train(tiny_config(4), str(tmp_path / "ref"), train_iter=data_from)
  for a, b in zip(leaves(resumed), leaves(ref)):
    np.testing.assert_array_equal(a, b)


def test_read_only_workdir_is_one_line_and_nothing_written(tmp_path, monkeypatch):
  def read_only(path):
    raise OSError(errno.EROFS, "Read-only file system", path)
  monkeypatch.setattr(workdir_lib, "_open_lock_file", read_only)
  workdir = tmp_path / "ro"
  workdir.mkdir()
  with pytest.raises(WorkdirError, match=r"is not writable \(Read-only file system\)"):
    train(tiny_config(2), str(workdir), train_iter=data_from)
  assert os.listdir(workdir) == []


def test_resume_config_check_names_fields_and_honours_allow():
  from configs import style_paper  # pylint: disable=import-outside-toplevel
  saved = workdir_lib.config_as_json(style_paper.get_config())
  new = style_paper.get_config()
  new.num_train_steps = 99               # always allowed
  workdir_lib.check_resume_config(saved, new)
  new.data.batch_size = 7
  new.model.num_classes = 3
  with pytest.raises(ConfigMismatchError, match=r"data.batch_size: 64 -> 7; model.num_classes"):
    workdir_lib.check_resume_config(saved, new)
  new.allow_config_change = "data.batch_size,model"
  workdir_lib.check_resume_config(saved, new)


def test_unknown_key_message_names_path_and_nearest_keys():
  from configs import style_paper  # pylint: disable=import-outside-toplevel
  c = style_paper.get_config()
  msg = workdir_lib.unknown_key_message(c, "optim.lrr")
  assert msg == ("--config.optim.lrr: unknown config key config.optim.lrr; "
                 "did you mean config.optim.lr?")
  msg = workdir_lib.unknown_key_message(c, "modle.hidden")
  assert "unknown config key config.modle; did you mean config.model?" in msg
  assert workdir_lib.unknown_key_message(c, "model.hidden") is None


def test_after_hook_runs_while_the_workdir_is_still_locked(tmp_path):
  """What a launcher writes after training (the generator export) is written under the lock."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  seen = []

  @workdir_lib.locked_training
  def fake_training(config, workdir):
    del config
    return os.path.basename(workdir)

  def after(state):
    with pytest.raises(workdir_lib.WorkdirLockedError):   # still held by the training
      workdir_lib.WorkdirLock(str(tmp_path / "w"))
    seen.append(state)

  cfg = ml_collections.ConfigDict(dict(num_train_steps=1))
  assert fake_training(cfg, str(tmp_path / "w"), after=after) == "w"
  assert seen == ["w"]
  workdir_lib.WorkdirLock(str(tmp_path / "w")).release()   # and free once the call returned


def test_optimiser_schema_keys_are_overridable_and_old_config_json_resumes():
  """Every config.optim lists the schema's keys (so --config.optim.accumulate_steps etc. are
  known); a config.json written before that (the keys absent) resumes while they are at their
  defaults, and not once one differs."""
  from configs import style_paper  # pylint: disable=import-outside-toplevel
  new = style_paper.get_config()
  for key in ("accumulate_steps", "lr_scaling", "reference_batch", "warmup_steps", "schedule",
              "noise_scale", "name"):
    assert workdir_lib.unknown_key_message(new, f"optim.{key}") is None, key
  saved = workdir_lib.config_as_json(new)
  saved["optim"] = {"lr": saved["optim"]["lr"]}          # written before the schema's keys
  workdir_lib.check_resume_config(saved, new)
  new.optim.accumulate_steps = 2
  with pytest.raises(ConfigMismatchError, match=r"optim.accumulate_steps: '<absent>' -> 2"):
    workdir_lib.check_resume_config(saved, new)
