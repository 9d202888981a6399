"""Generator exports (d2m_jax.generator_export): round trip, staleness, and the lean restore."""
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from d2m_jax import generator_export as gx


class _State:
  def __init__(self, step, params, stats):
    self.step, self.params, self.stats = step, params, stats


class _Task:
  name = "fake"

  def generation_state(self, state):
    return {"params": {"dec": state.params["dec"]}, "stats": state.stats}


def _workdir(tmp_path, step=7, stamp=1):
  ck = tmp_path / "checkpoints" / str(step)
  ck.mkdir(parents=True, exist_ok=True)
  (ck / gx.CKPT_METADATA).write_text(json.dumps({"commit_timestamp_nsecs": stamp}))
  return str(tmp_path)


def _state(step=7):
  rng = np.random.default_rng(0)
  params = {"dec": {"w": rng.normal(size=(3, 4)).astype(np.float32),
                    "b16": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16)},
            "dis": {"w": np.ones((2, 2), np.float32)}}
  return _State(step, params, {"mean": np.arange(3, dtype=np.int32)})


def test_round_trip_keeps_only_the_generation_leaves(tmp_path):
  wd = _workdir(tmp_path)
  st = _state()
  path = gx.write(wd, _Task(), st, 7)
  assert path == gx.export_path(wd, 7) and os.path.exists(path)
  got = gx.load(wd, 7)
  assert got.step == 7 and sorted(vars(got)) == ["params", "stats", "step"]
  assert sorted(got.params) == ["dec"]                      # the discriminator is left out
  np.testing.assert_array_equal(np.asarray(got.params["dec"]["w"]), st.params["dec"]["w"])
  assert got.params["dec"]["b16"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got.params["dec"]["b16"], np.float32),
                                np.asarray(st.params["dec"]["b16"], np.float32))
  assert got.stats["mean"].dtype == jnp.int32
  assert [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f] == []


def test_export_of_another_checkpoint_is_never_used(tmp_path):
  wd = _workdir(tmp_path)
  gx.write(wd, _Task(), _state(), 7)
  assert gx.load(wd, 8) is None                              # other step
  _workdir(tmp_path, stamp=2)                                # step 7 saved again
  assert gx.load(wd, 7) is None


def test_no_export_without_generation_state_or_for_non_dict_trees(tmp_path):
  wd = _workdir(tmp_path)
  assert gx.write(wd, object(), _state(), 7) is None

  class ListTask:
    def generation_state(self, state):
      return {"layers": [state.params["dec"]["w"]]}
  assert gx.write(wd, ListTask(), _state(), 7) is None
  assert gx.write(str(tmp_path / "no_such"), _Task(), _state(), 7) is None   # no checkpoint
  assert gx.latest_step(wd) == 7 and gx.latest_step(str(tmp_path / "no_such")) is None


def test_restore_for_generation_restores_the_checkpoint_once(tmp_path, monkeypatch):
  import d2m_jax.tasks as tasks  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  wd = _workdir(tmp_path)
  cfg = ml_collections.ConfigDict({"task": "fake"})
  full = []

  def restore_workdir(workdir, config=None, step=None):
    full.append(workdir)
    return _state(), config, _Task()
  monkeypatch.setattr(tasks, "restore_workdir", restore_workdir)
  monkeypatch.setattr(tasks, "get_task", lambda config: _Task())
  monkeypatch.setattr(checkpoint, "load_config", lambda workdir: cfg)
  st1, _, _, src1 = gx.restore_for_generation(wd)
  st2, _, _, src2 = gx.restore_for_generation(wd)
  assert (src1, src2) == ("checkpoint", "export") and full == [wd]
  np.testing.assert_array_equal(np.asarray(st2.params["dec"]["w"]), st1.params["dec"]["w"])


@pytest.mark.parametrize("bad", [b"", b"not a zip file"])
def test_unreadable_export_falls_back(tmp_path, bad):
  wd = _workdir(tmp_path)
  path = gx.export_path(wd, 7)
  os.makedirs(os.path.dirname(path))
  with open(path, "wb") as f:
    f.write(bad)
  assert gx.load(wd, 7) is None
