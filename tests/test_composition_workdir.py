"""A composition workdir is self-contained (issue 26 item 5): trained from one directory with a
RELATIVE ``decomp_workdir``, copied elsewhere, the stage-1 workdir deleted, it still restores
and generates from another working directory (its frozen networks come from its own checkpoint).
Tiny networks; both workdirs are written directly (config.json + one checkpoint), no training
step is compiled."""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

from configs.d2m_composition import get_config as comp_config
from configs.d2m_decomposition import get_config as decomp_config
from d2m_jax.tasks import get_task, restore_workdir
from d2m_jax.train import checkpoint as ckpt_lib
from d2m_jax.train import logs
from d2m_jax.train import workdir as workdir_lib


def _tiny(config):
  m = config.model
  m.hidden, m.z_mov, m.init_hidden, m.z_init = 16, 8, 8, 4
  if "z_dance" in m:
    m.z_dance, m.dance_hidden, m.style_input_frames = 8, 16, 20
  config.data.batch_size = 4
  config.data.eval_batch_size = 4
  config.num_train_steps = 1
  config.checkpoint_every_steps = 1
  config.parallel = "jit"
  config.num_devices = 1
  return config


def _stage1_workdir(path):
  """A decomposition workdir as the engine leaves it: config.json and a checkpoint."""
  cfg = _tiny(decomp_config())
  task = get_task(cfg)
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  state = jax.jit(task.init_state)(jax.random.PRNGKey(1), batch, None)
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(workdir_lib.config_as_json(cfg), f)
  ck = ckpt_lib.Checkpointer(path, async_save=False)
  ck.save(5, jax.device_get(state), {"step": 5, "data_step": 5})
  ck.close()
  return jax.device_get(state)


def test_composition_workdir_generates_after_copy_from_another_directory(tmp_path,
                                                                         monkeypatch):
  train_dir = tmp_path / "project"
  train_dir.mkdir()
  monkeypatch.chdir(train_dir)
  stage1 = _stage1_workdir("stage1")                   # relative, as a user types it
  cfg = _tiny(comp_config())
  cfg.model.decomp_workdir = "stage1"
  task = get_task(cfg)
  assert cfg.model.decomp_workdir == str(train_dir / "stage1")   # recorded absolute
  # the workdir as the engine writes it (config.json with the same serialisation, a verified
  # checkpoint); training steps would only cost compile time here
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  trained = jax.device_get(jax.jit(task.init_state)(jax.random.PRNGKey(2), batch, None))
  os.makedirs("comp")
  logs.atomic_write_json(os.path.join("comp", "config.json"), workdir_lib.config_as_json(cfg))
  ck = ckpt_lib.Checkpointer("comp", async_save=False)
  ck.save(3, trained, {"step": 3, "data_step": 3})
  ck.close()
  saved = json.load(open(train_dir / "comp" / "config.json"))
  assert saved["model"]["decomp_workdir"] == str(train_dir / "stage1")

  # copy the workdir elsewhere, remove the stage-1 workdir, run from a third directory
  copy = tmp_path / "moved" / "comp_copy"
  shutil.copytree(train_dir / "comp", copy)
  shutil.rmtree(train_dir)
  other = tmp_path / "elsewhere"
  other.mkdir()
  monkeypatch.chdir(other)
  state, _, task2 = restore_workdir(str(copy))
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(trained))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the frozen stage-1 encoders are the stage-1 checkpoint's
  for name in ("initp_enc", "movement_enc"):
    for a, b in zip(jax.tree.leaves(state.frozen[name]), jax.tree.leaves(stage1.params[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  n = 60
  feats = {"d2m28": np.random.default_rng(0).normal(size=(n, 28)).astype(np.float32)}
  out = task2.generate(state, feats, np.arange(5, n, 12), n, jax.random.PRNGKey(0), 1)
  assert out.shape == (1, n, 23, 3) and np.isfinite(out).all()
  assert os.listdir(other) == []                      # nothing written where it ran


def test_composition_builds_the_stage1_decoder_with_its_beat_phase_input(tmp_path):
  """``model.beat_phase_input`` is a stage-1 architecture field: the composition copies it
  from the decomposition workdir's config.json (no restore is needed to build the task)."""
  path = str(tmp_path / "dec")
  os.makedirs(path)
  cfg = _tiny(decomp_config())
  cfg.model.beat_phase_input = True
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(workdir_lib.config_as_json(cfg), f)
  comp = _tiny(comp_config())
  comp.model.decomp_workdir = path
  task = get_task(comp)
  assert task.m.beat_phase_input is True
  assert task.nets["stdp_dec"].beat_phase is True
  assert task.stage1["stdp_dec"].beat_phase is True
