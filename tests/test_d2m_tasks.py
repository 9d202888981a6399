"""Dancing2Music training steps with tiny networks: the loss falls, frozen parts stay frozen."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.d2m_composition import get_config as comp_config
from configs.d2m_decomposition import get_config as decomp_config
from d2m_jax.tasks import get_task


def _tiny(config):
  m = config.model
  m.hidden, m.z_mov, m.init_hidden, m.z_init = 16, 8, 8, 4
  if "z_dance" in m:
    m.z_dance, m.dance_hidden, m.style_input_frames = 8, 16, 20
  config.optim.lr = 3e-3
  return config


def _stats(batch):
  u = batch["units"].reshape(-1, batch["units"].shape[-1])
  a = batch["aud"].reshape(-1, 28)
  return {"pose_mean": u.mean(0), "pose_std": u.std(0), "d2m28_mean": a.mean(0),
          "d2m28_std": a.std(0)}


def test_decomposition_steps_reduce_loss():
  task = get_task(_tiny(decomp_config()))
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, _stats(batch))
  evaluate = jax.jit(task.eval_step)
  before = evaluate(state, batch)
  step = jax.jit(task.train_step)
  for _ in range(12):
    state, metrics = step(state, batch)
  after = evaluate(state, batch)
  assert int(state.step) == 12
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(after["loss"]) < 0.95 * float(before["loss"])
  assert float(after["self_recon"]) < float(before["self_recon"])
  # the anneal weight at step 12 is the spec's ~5.5e-4
  assert float(metrics["kl_coef"]) == pytest.approx(1 / (1 + np.exp(-0.0005 * (11 - 15000))),
                                                    rel=1e-4)


def test_decomposition_velocity_term_is_added_with_its_weight():
  """optim.lambda_stdp_velocity adds w x the four reconstructions' frame-difference L1."""
  from d2m_jax.models.d2m_layers import velocity_l1
  cfg = _tiny(decomp_config())
  base = get_task(cfg)
  cfg_v = _tiny(decomp_config())
  cfg_v.optim.lambda_stdp_velocity = 2.5
  task = get_task(cfg_v)
  rng = np.random.default_rng(3)
  x1 = jnp.asarray(rng.normal(size=(2, 32, 69)), jnp.float32)
  x2 = jnp.asarray(rng.normal(size=(2, 32, 69)), jnp.float32)
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  state = task.init_state(jax.random.PRNGKey(0), batch, _stats(batch))
  key = jax.random.PRNGKey(5)
  loss0, terms0 = base.losses(state.params, x1, x2, key, 0)
  loss1, terms1 = task.losses(state.params, x1, x2, key, 0)
  assert "velocity_recon" not in terms0
  np.testing.assert_allclose(float(loss1 - loss0), 2.5 * float(terms1["velocity_recon"]), rtol=1e-4)
  # the term itself: the same four decoder outputs, recomputed here
  mods, p = task.modules, state.params
  from d2m_jax.models.d2m_layers import reparameterize
  k_perm, k_i, k_m = jax.random.split(key, 3)
  del k_perm
  mu_i, lv_i = mods["initp_enc"].apply({"params": p["initp_enc"]}, jnp.concatenate(
      [x1[:, 0], x2[:, 0], jnp.zeros((8, 69))]))     # singles only shift later rows of z_i
  z_i = reparameterize(k_i, mu_i, lv_i)[:4]
  mu_m, lv_m = mods["movement_enc"].apply({"params": p["movement_enc"]}, jnp.concatenate([x1, x2]))
  z_m = reparameterize(k_m, mu_m, lv_m)
  dec = lambda zi, zm: mods["stdp_dec"].apply({"params": p["stdp_dec"]}, zi, zm)
  ref = (velocity_l1(dec(z_i[:2], z_m[:2]), x1) + velocity_l1(dec(z_i[2:], z_m[2:]), x2)
         + velocity_l1(dec(z_i[:2], z_m[2:]), x1) + velocity_l1(dec(z_i[2:], z_m[:2]), x2))
  np.testing.assert_allclose(float(terms1["velocity_recon"]), float(ref), rtol=1e-4)


def test_composition_steps_train_and_keep_frozen_parts():
  task = get_task(_tiny(comp_config()))
  batch = task.synthetic_batch(2, np.random.default_rng(1))
  state0 = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, _stats(batch))
  step = jax.jit(task.train_step)
  state, hist = state0, []
  for _ in range(10):
    state, metrics = step(state, batch)
    hist.append(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values())
  for name in ("style_loss", "zmovement_recon"):
    first, last = [np.mean([float(h[name]) for h in part]) for part in (hist[:3], hist[-3:])]
    assert last < first, (name, first, last)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in
                          zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(state.frozen, state0.frozen)           # movement_enc, initp_enc, style extractor
  for name in ("dance_enc", "dance_dec", "audstyle_enc", "dance_reg", "dis_movement",
               "dis_dance", "stdp_dec"):
    assert not same(state.params[name], state0.params[name]), name
  # stdp_dec is fine-tuned at lr x 0.1: its first-step change is ~0.1x that of dance_dec
  s1, _ = step(state0, batch)
  delta = lambda n: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(s1.params[n]), jax.tree.leaves(state0.params[n])))
  assert delta("stdp_dec") == pytest.approx(0.1 * delta("dance_dec"), rel=0.05)


def test_motion_budget_rows_against_numpy():
  """d2m_motion: the real row is the normalised units' own statistics (numpy float64), every
  path decodes 3B units of the real shape, ratios are row / real, static units are refused."""
  from d2m_jax.models import d2m_motion
  task = get_task(_tiny(comp_config()))
  batch = task.synthetic_batch(2, np.random.default_rng(4))
  stats = _stats(batch)
  state = task.init_state(jax.random.PRNGKey(0), batch, stats)
  decoded = d2m_motion.decoded_units(task, state, batch, jax.random.PRNGKey(1))
  assert set(decoded) == set(d2m_motion.ROWS)
  for v in decoded.values():
    assert v.shape == (6,) + batch["units"].shape[2:]
  units = ((np.asarray(batch["units"], np.float64) - np.asarray(state.stats["pose_mean"]))
           / np.asarray(state.stats["pose_std"])).reshape((6,) + batch["units"].shape[2:])
  rows = d2m_motion.motion_budget(task, state, batch, jax.random.PRNGKey(1))
  np.testing.assert_allclose(rows["real"]["motion"], np.abs(np.diff(units, axis=1)).mean(), rtol=1e-5)
  np.testing.assert_allclose(rows["real"]["temporal_std"], units.std(axis=1).mean(), rtol=1e-5)
  np.testing.assert_allclose(rows["real"]["batch_std"], units.std(axis=0).mean(), rtol=1e-5)
  v = np.asarray(decoded["music_path"], np.float64)
  np.testing.assert_allclose(rows["music_path"]["motion_ratio"],
                             np.abs(np.diff(v, axis=1)).mean() / rows["real"]["motion"], rtol=1e-4)
  assert rows["real"]["motion_ratio"] == 1.0
  still = dict(batch, units=np.repeat(batch["units"][:, :, :1], batch["units"].shape[2], axis=2))
  with pytest.raises(ValueError, match="do not move"):
    d2m_motion.motion_budget(task, state, still, jax.random.PRNGKey(1))


def test_motion_launcher_refuses_a_folder_that_is_no_workdir(tmp_path):
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "budget.json"
  r = subprocess.run([sys.executable, os.path.join(repo, "launch", "d2m_motion.py"),
                      f"--workdir={tmp_path}", f"--out={out}"], capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert r.returncode == 2, r.stderr
  assert str(tmp_path) in r.stderr and "no config.json" in r.stderr and "Traceback" not in r.stderr
  assert not out.exists()


def test_kl_free_bits_against_numpy():
  from d2m_jax.models.d2m_layers import kl_divergence, kl_with_free_bits
  rng = np.random.default_rng(0)
  mu, lv = rng.normal(size=(6, 5)), rng.normal(scale=0.3, size=(6, 5))
  per_dim = (-0.5 * (1 + lv - mu ** 2 - np.exp(lv))).mean(0)
  np.testing.assert_allclose(float(kl_with_free_bits(mu, lv, 0.0)), float(kl_divergence(mu, lv)),
                             rtol=1e-5)
  np.testing.assert_allclose(float(kl_with_free_bits(mu, lv, 0.4)),
                             np.maximum(per_dim, 0.4).sum(), rtol=1e-5)
  assert np.any(per_dim < 0.4) and np.any(per_dim > 0.4)      # the floor really acts


def test_composition_can_keep_the_stage1_decoder_frozen():
  cfg = _tiny(comp_config())
  cfg.optim.finetune_stdp_dec = False
  cfg.optim.kl_free_bits = 0.1
  task = get_task(cfg)
  batch = task.synthetic_batch(2, np.random.default_rng(1))
  state0 = jax.jit(task.init_state)(jax.random.PRNGKey(0), batch, _stats(batch))
  state, metrics = jax.jit(task.train_step)(state0, batch)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  leaves = lambda n, s: jax.tree.leaves(s.params[n])
  assert all(np.array_equal(a, b) for a, b in zip(leaves("stdp_dec", state), leaves("stdp_dec", state0)))
  assert not all(np.array_equal(a, b) for a, b in zip(leaves("dance_dec", state),
                                                      leaves("dance_dec", state0)))
