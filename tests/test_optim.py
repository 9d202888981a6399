"""d2m_jax/train/optim.py and noise_scale.py: schedules, lr scaling, decay masks, per-network
inheritance, old spellings, accumulation = one large batch (one device and the data-parallel
modes), and the gradient noise scale against the closed form of Gaussian linear regression."""
from __future__ import annotations

import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import style_paper  # noqa: E402
from d2m_jax.tasks import get_task  # noqa: E402
from d2m_jax.train import noise_scale, optim, parallel  # noqa: E402


def _config(**optim_keys):
  c = ml_collections.ConfigDict({"num_train_steps": 100, "data": {"batch_size": 64},
                                 "optim": optim_keys})
  return c


def test_schedules_and_scaling_closed_form():
  c = _config(lr=0.1, schedule="warmup_cosine", warmup_steps=10, decay_steps=110,
              lr_scaling="linear", reference_batch=16)
  assert optim.effective_lr(c) == pytest.approx(0.4)
  s = optim.make_schedule(c)
  for t in (0, 5, 10, 60, 110):
    want = 0.4 * t / 10 if t < 10 else 0.4 * 0.5 * (1 + math.cos(math.pi * (t - 10) / 100))
    assert float(s(t)) == pytest.approx(want, abs=1e-7), t
  c.optim.schedule, c.optim.lr_scaling = "warmup_linear", "sqrt"
  s = optim.make_schedule(c)
  assert float(s(5)) == pytest.approx(0.2 * 0.5) and float(s(60)) == pytest.approx(0.1)
  c.optim.schedule, c.optim.milestones, c.optim.decay_factor = "multistep", (10, 20), 0.5
  s = optim.make_schedule(c, updates_per_step=3)   # a critic updated 3 times per step
  assert [float(s(t)) for t in (29, 30, 59, 60)] == pytest.approx([0.2, 0.1, 0.1, 0.05])


def test_effective_lr_is_in_the_state_and_logged_per_network():
  c = _config(lr=1e-3, lr_scaling="linear", reference_batch=32, critic={"lr": 4e-3})
  params = {"w": jnp.ones((2, 2))}
  state = {"g_opt_state": optim.build_optimizer(c, "generator").init(params),
           "d_opt_state": optim.build_optimizer(c, "critic").init(params)}
  m = optim.optimizer_metrics(state)
  assert float(m["optim/g/lr"]) == pytest.approx(2e-3)
  assert float(m["optim/d/lr"]) == pytest.approx(8e-3)
  assert "generator: adam lr 0.002" in optim.describe_batch(c, 4, ("generator", "critic"))
  assert optim.describe_batch(c, 4).startswith(
      "global batch 64 = 16 per device x 4 devices x 1 accumulation steps")


def test_weight_decay_skips_biases_and_norms():
  params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
            "LayerNorm_0": {"scale": jnp.ones(3), "bias": jnp.ones(3)}}
  zero = jax.tree.map(jnp.zeros_like, params)
  for name in ("adamw", "lamb", "lars"):
    tx = optim.build_optimizer(_config(name=name, lr=0.1, weight_decay=0.5))
    upd, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(upd["Dense_0"]["kernel"]).max()) > 0, name
    for leaf in (upd["Dense_0"]["bias"], upd["LayerNorm_0"]["scale"], upd["LayerNorm_0"]["bias"]):
      assert float(jnp.abs(leaf).max()) == 0.0, name
  # adamw: the kernel's decoupled decay is lr x wd x w exactly (zero gradient).
  tx = optim.build_optimizer(_config(name="adamw", lr=0.1, weight_decay=0.5))
  upd, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(upd["Dense_0"]["kernel"], -0.05, rtol=1e-6)


def test_old_spellings_and_bad_values_are_clear_errors():
  with pytest.raises(ValueError, match=r"config.optim.learning_rate: renamed: use config.optim.lr"):
    optim.build_optimizer(_config(learning_rate=1e-3))
  with pytest.raises(ValueError, match=r"config.optim.lr_g: renamed"):
    optim.build_optimizer(_config(lr_g=1e-3))
  with pytest.raises(ValueError, match=r"config.optim.critic.lrr: unknown"):
    optim.build_optimizer(_config(critic={"lrr": 1.0}), "critic")
  with pytest.raises(ValueError, match=r"config.optim.reference_batch"):
    optim.build_optimizer(_config(lr_scaling="sqrt"))
  with pytest.raises(ValueError, match=r"config.optim.noise_scale: needs accumulate_steps"):
    optim.build_optimizer(_config(noise_scale=True))
  with pytest.raises(ValueError, match=r"config.optim.name: 'adagrad'"):
    optim.build_optimizer(_config(name="adagrad"))


# ------------------------------------------------------------------ accumulation ------------
MICRO, K = 4, 2        # 2 micro-batches of 4 = one batch of 8; 2 optimiser updates


def _style_config(name, batch, k):
  c = style_paper.get_config()
  c.model.hidden = 8
  c.model.num_frames = 10
  c.optim.name = name
  c.optim.lr = 1e-3 if name == "adam" else 0.5
  c.optim.accumulate_steps = k
  c.data.batch_size = batch
  return c


def _big_batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(2):
    style = rng.integers(0, 4, (MICRO * K,)).astype(np.int32)
    # windows as long as the crop: no random crop offsets (they differ between micro-steps)
    d2m28 = (rng.standard_normal((MICRO * K, 10, 28)) + style[:, None, None]).astype(np.float32)
    out.append({"d2m28": d2m28, "style": style})
  return out


def _train(config, batches, mode="jit", devices=1):
  task = get_task(config)
  dp = parallel.DataParallel(mode, parallel.make_mesh(devices))
  state = dp.put_state(task.init_state(jax.random.PRNGKey(0), batches[0], None))
  step = dp.wrap(task.train_step)
  for b in batches:
    state, _ = step(state, dp.put_batch(b))
  return jax.device_get(dp.get_state(state)).params


def _micro(batches):
  return [jax.tree.map(lambda x, i=i: x[i * MICRO:(i + 1) * MICRO], b)
          for b in batches for i in range(K)]


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_accumulated_micro_batches_equal_one_large_batch(name):
  big = _big_batches()
  want = _train(_style_config(name, MICRO * K, 1), big)
  start = jax.device_get(get_task(_style_config(name, MICRO * K, 1)).init_state(
      jax.random.PRNGKey(0), big[0], None).params)
  got = _train(_style_config(name, MICRO, K), _micro(big))
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(want),
                                                         jax.tree.leaves(start)))
  assert moved > 1e-3  # two updates did move the parameters
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-6)
  # One micro-step short of the second update: the parameters are still those of update one.
  half = _train(_style_config(name, MICRO, K), _micro(big)[:2 * K - 1])
  one = _train(_style_config(name, MICRO * K, 1), big[:1])
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(half)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("mode", ["jit", "shard_map", "pmap"])
def test_accumulation_under_data_parallel_modes(mode):
  """4 devices x 1 example x 2 micro-steps = one batch of 8 on one device (adam)."""
  big = _big_batches()
  want = _train(_style_config("adam", MICRO * K, 1), big)
  got = _train(_style_config("adam", MICRO, K), _micro(big), mode, 4)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-6)


# ------------------------------------------------------------------ noise scale -------------
def test_noise_scale_estimates_exact_on_two_batch_sizes():
  """E|G_B|^2 = |G|^2 + tr(Sigma)/B inverted exactly for noise-free inputs."""
  g2, tr = 3.0, 50.0
  small, big = g2 + tr / 8, g2 + tr / 32
  est = noise_scale.estimates(jnp.float32(small), jnp.float32(big), 8.0, 32.0)
  np.testing.assert_allclose([float(est[0]), float(est[1])], [g2, tr], rtol=1e-5)


def test_noise_scale_matches_linear_regression_closed_form():
  """y = x.w* + e, x ~ N(0, I_d), e ~ N(0, s^2), loss 0.5 (x.w - y)^2 at fixed w = w* + delta:
  G = delta, Sigma = (|delta|^2 + s^2) I + delta delta^T, so |G|^2 = |delta|^2 and
  tr(Sigma) = d (|delta|^2 + s^2) + |delta|^2."""
  d, s, b_small, k, cycles = 10, 0.5, 8, 4, 3000
  delta = jnp.asarray(np.random.default_rng(0).standard_normal(d) * 0.5, jnp.float32)
  g2_true = float(jnp.sum(delta ** 2))
  tr_true = d * (g2_true + s * s) + g2_true
  tx = noise_scale.noise_scale(optax.MultiSteps(optax.sgd(0.0), k).gradient_transformation(),
                               k, b_small, ema=0.999)
  params = {"w": jnp.zeros(d)}

  def micro(state, key):
    kx, ke = jax.random.split(key)
    x = jax.random.normal(kx, (b_small, d))
    e = s * jax.random.normal(ke, (b_small,))
    grad = {"w": jnp.mean(x * (x @ delta - e)[:, None], axis=0)}
    _, state = tx.update(grad, state, params)
    return state, None

  state, _ = jax.lax.scan(micro, tx.init(params), jax.random.split(jax.random.PRNGKey(1),
                                                                   cycles * k))
  m = noise_scale.metrics(state)
  assert int(state.updates) == cycles
  assert float(m["gns_g2"]) == pytest.approx(g2_true, rel=0.05)
  assert float(m["gns_trace"]) == pytest.approx(tr_true, rel=0.05)
  assert float(m["gns_b_simple"]) == pytest.approx(tr_true / g2_true, rel=0.08)


def test_noise_scale_is_in_the_logged_optimizer_metrics():
  c = _config(name="sgd", lr=0.1, accumulate_steps=2, noise_scale=True)
  c.data.batch_size = 4
  params = {"w": jnp.zeros(3)}
  tx = optim.build_optimizer(c)
  st = tx.init(params)
  for g in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]):
    upd, st = tx.update({"w": jnp.asarray(g)}, st, params)
    params = optax.apply_updates(params, upd)
  m = optim.optimizer_metrics({"opt_state": st})
  # |G_small|^2 = 1, |G_big|^2 = 0.5 -> |G|^2 = (8 * 0.5 - 4) / 4 = 0, tr = 0.5 / (1/8) = 4
  assert float(m["optim/gns_trace"]) == pytest.approx(4.0)
  assert float(m["optim/gns_g2"]) == pytest.approx(0.0, abs=1e-6)
  assert float(m["optim/lr"]) == pytest.approx(0.1)
  np.testing.assert_allclose(params["w"], [-0.05, -0.05, 0.0], rtol=1e-6)  # sgd on the mean


def test_gan_noise_scale_takes_the_per_update_batch(monkeypatch):
  """A WGAN critic/generator update sees one slice of data.batch_size / n_critic examples (phase
  1: model.batch_size poses): that is the noise scale's B_small, not data.batch_size (which would
  make tr(Sigma) and B_simple n_critic times too large)."""
  from d2m_jax.tasks.wgan_pose import WGANPoseTask, pose_config  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks.wgan_seq import WGANSeqTask, seq_config  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import noise_scale as ns  # pylint: disable=import-outside-toplevel
  seen = []
  real = ns.noise_scale
  monkeypatch.setattr(ns, "noise_scale", lambda tx, k, b, ema=0.95: seen.append(b) or
                      real(tx, k, b, ema))
  c = seq_config()
  c.data.batch_size = 64                     # n_critic 8: slices of 8
  c.optim.accumulate_steps, c.optim.noise_scale = 2, True
  WGANSeqTask(c)
  assert seen == [8, 8]                      # generator, critic
  c.model.slice_batch = False                # every update sees the whole batch
  WGANSeqTask(c)
  assert seen[2:] == [64, 64]
  p = pose_config()
  p.optim.accumulate_steps, p.optim.noise_scale = 2, True
  WGANPoseTask(p)
  assert seen[4:] == [int(p.model.batch_size)] * 2
