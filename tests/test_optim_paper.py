"""Every config's optimiser, built through d2m_jax/train/optim.py, gives the same updates as the
task-by-task optimisers before it (tests/data/optim_reference.npz, written from commit 2374f6d
by ``python tests/optim_reference.py --write``; see that module for the tree, gradients and
starting counts)."""
from __future__ import annotations

import importlib
import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import optim_reference as ref  # noqa: E402
from d2m_jax.train import optim  # noqa: E402

REFERENCE = np.load(ref.REFERENCE)


@pytest.mark.parametrize("name", ref.config_names())
def test_config_updates_unchanged(name):
  got = ref.config_updates(name)
  want = {k: REFERENCE[k] for k in REFERENCE.files if k.split("/")[0] == name}
  assert want and sorted(got) == sorted(want)
  start = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref.param_tree())])
  for k in want:
    assert np.abs(want[k] - start).max() > 1e-5, k  # the updates do move the parameters
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-8, err_msg=k)


LEGACY = json.loads((HERE / "data" / "legacy_optim_configs.json").read_text())


@pytest.mark.parametrize("name", ["wgan_seq", "d2m_decomposition", "d2m_composition",
                                  "music_style", "style_paper", "l2d_seq_gan", "kakashi"])
def test_old_workdir_configs_upgrade_to_the_same_updates(name):
  """A workdir's config.json written before the schema (its config.optim as at 2374f6d, in
  tests/data/legacy_optim_configs.json) is upgraded on load to the optimisers it trained with."""
  config = importlib.import_module(f"configs.{name}").get_config()
  config.optim = ml_collections.ConfigDict(LEGACY[name])
  got = ref.config_updates(name, optim.upgrade_legacy(config))
  for k, want in ((k, REFERENCE[k]) for k in REFERENCE.files if k.split("/")[0] == name):
    np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-8, err_msg=k)
  assert optim.upgrade_legacy(optim.upgrade_legacy(config)).to_dict() == \
      optim.upgrade_legacy(config).to_dict()   # idempotent
