"""The three parallel modes (jit + NamedSharding, shard_map, pmap) on 4 fake CPU devices give the
same parameters after several steps as a single-device run with the same global batches."""
from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import style_paper  # noqa: E402
from d2m_jax.tasks import get_task  # noqa: E402
from d2m_jax.train import parallel  # noqa: E402

STEPS = 4
BATCH = 8


def _config():
  c = style_paper.get_config()
  c.model.hidden = 8
  c.model.num_frames = 10
  c.optim.lr = 1e-3  # Adam steps ~lr: float32 reduction-order noise stays ~1e-7
  return c


def _batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    style = rng.integers(0, 4, (BATCH,)).astype(np.int32)
    d2m28 = (rng.standard_normal((BATCH, 120, 28)) + style[:, None, None]).astype(np.float32)
    out.append({"d2m28": d2m28, "style": style})
  return out


def _train(mode, num_devices):
  task = get_task(_config())
  batches = _batches()
  dp = parallel.DataParallel(mode, parallel.make_mesh(num_devices))
  state = dp.put_state(task.init_state(jax.random.PRNGKey(0), batches[0], None))
  step = dp.wrap(task.train_step)
  losses = []
  for b in batches:
    state, m = step(state, dp.put_batch(b))
    losses.append(float(dp.metrics_to_host(m)["loss"]))
  state = jax.device_get(dp.get_state(state))
  return state, losses


@pytest.fixture(scope="module")
def reference():
  assert jax.device_count() >= 4, "tests/conftest.py should give 4 CPU devices"
  return _train("jit", 1)


@pytest.mark.parametrize("mode", ["jit", "shard_map", "pmap"])
def test_mode_matches_single_device(mode, reference):
  ref_state, ref_losses = reference
  state, losses = _train(mode, 4)
  assert int(state.step) == STEPS
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=5e-6)
  ref_leaves = jax.tree.leaves(ref_state.params)
  leaves = jax.tree.leaves(state.params)
  moved = [np.abs(a - b).max() for a, b in zip(ref_leaves, jax.tree.leaves(
      jax.device_get(get_task(_config()).init_state(jax.random.PRNGKey(0), _batches()[0],
                                                    None).params)))]
  assert max(moved) > 1e-3 / 2  # the steps did change the parameters
  # atol 1e-5 on parameters: Adam divides by sqrt(nu), so a weight whose gradient nearly cancels
  # turns float32 summation-order noise into a visible step difference (with the CPU GRU's
  # written-out backward one w_ih entry of 672 differs by 6.4e-6 after 4 steps at lr 1e-3;
  # the autodiff path, D2M_GRU_GRAD=off, stays within 5e-6); a wrong reduction would be off by
  # ~lr = 1e-3 in many entries.
  for a, b in zip(ref_leaves, leaves):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
  # The Adam moments agree too (the whole state, not only params).
  for a, b in zip(jax.tree.leaves(ref_state.opt_state), jax.tree.leaves(state.opt_state)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=5e-6)


def test_batch_not_divisible_is_a_clear_error():
  dp = parallel.DataParallel("jit", parallel.make_mesh(4))
  with pytest.raises(ValueError, match="not divisible by the 4 devices"):
    dp.check_batch_size(6)
  with pytest.raises(ValueError, match="expected one of"):
    parallel.DataParallel("vmap", parallel.make_mesh(1))
