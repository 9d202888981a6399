"""Dancing2Music modules: PyTorch parameter counts (eval_shape, no compute), losses, augmentation."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from d2m_jax.models import d2m_common as common
from d2m_jax.train import optim
from d2m_jax.models import d2m_comp as C
from d2m_jax.models import d2m_decomp as D
from d2m_jax.models import d2m_layers as L


def _count(module, *shapes):
  tree = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                            *[jnp.zeros(s) for s in shapes]))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


# [run] values of the spec (dancing2music.md §2.2-2.4), pose_size 28.
@pytest.mark.parametrize("module,shapes,expected", [
    (D.InitPoseEnc(), [(2, 28)], 7_572),
    (D.InitPoseDec(28), [(2, 10)], 6_940),
    (D.MovementEnc(), [(2, 32, 28)], 8_576_000),
    (D.StandardPoseDec(28), [(2, 10), (2, 512)], 6_340_636),
    (C.DanceEnc(), [(2, 3, 1024)], 7_348_224),
    (C.DanceDec(), [(2, 512)], 7_351_296),
    (C.AudstyleEnc(), [(2, 30), (2, 30)], 144_704),
    (C.Dance2Style(), [(2, 512)], 432_542),
    (C.DanceAudDis2(), [(2, 3, 1024), (2, 28)], 3_816_155),
    (C.DanceAudDis2(), [(2, 1, 1024), (2, 28)], 1_719_003),
    (C.StyleGRU(), [(2, 30, 28)], 6_453),
])
def test_parameter_counts_match_pytorch(module, shapes, expected):
  assert _count(module, *shapes) == expected


def test_output_shapes_pose69():
  dec = D.StandardPoseDec(69)
  out = jax.eval_shape(lambda: dec.init_with_output(jax.random.PRNGKey(0), jnp.zeros((5, 10)),
                                                    jnp.zeros((5, 512)))[0])
  assert out.shape == (5, 32, 69)
  enc = D.MovementEnc()
  mu, lv = jax.eval_shape(lambda: enc.init_with_output(jax.random.PRNGKey(0),
                                                       jnp.zeros((5, 32, 69)))[0])
  assert mu.shape == lv.shape == (5, 512)
  dd = C.DanceDec()
  mu, _ = jax.eval_shape(lambda: dd.init_with_output(jax.random.PRNGKey(0), jnp.zeros((4, 512)))[0])
  assert mu.shape == (4, 3, 512)


def test_kl_bce_l1_mse_match_numpy():
  rng = np.random.default_rng(0)
  mu, lv = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)) * 0.5
  ref = np.mean(np.sum(-0.5 * (1 + lv - mu ** 2 - np.exp(lv)), axis=-1))
  np.testing.assert_allclose(L.kl_divergence(jnp.asarray(mu, jnp.float32),
                                             jnp.asarray(lv, jnp.float32)), ref, rtol=1e-5)
  # hand value: mu=1, logvar=0, 2 dims -> 0.5 * 2 = 1
  assert float(L.kl_divergence(jnp.ones((3, 2)), jnp.zeros((3, 2)))) == pytest.approx(1.0)
  logits = rng.normal(size=(7,)) * 4
  for target in (0.0, 1.0):
    p = 1 / (1 + np.exp(-logits))
    ref = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    np.testing.assert_allclose(L.bce_with_logits(jnp.asarray(logits, jnp.float32), target), ref,
                               rtol=1e-5)
  a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  np.testing.assert_allclose(L.l1_loss(a, b), np.abs(a - b).mean(), rtol=1e-6)
  np.testing.assert_allclose(L.mse_loss(a, b), ((a - b) ** 2).mean(), rtol=1e-6)


def test_velocity_l1_matches_numpy_and_ignores_offsets():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
  ref = np.mean(np.abs((a[:, 1:] - a[:, :-1]) - (b[:, 1:] - b[:, :-1])))
  np.testing.assert_allclose(L.velocity_l1(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)),
                             ref, rtol=1e-5)
  # a constant offset is no velocity error; a ramp of slope 0.5 per frame against a still pose is
  # exactly 0.5 (hand value)
  assert float(L.velocity_l1(jnp.asarray(a + 3.0), jnp.asarray(a))) == pytest.approx(0.0, abs=1e-6)
  ramp = 0.5 * jnp.arange(4.0)[:, None] * jnp.ones((4, 2))
  assert float(L.velocity_l1(ramp, jnp.zeros((4, 2)))) == pytest.approx(0.5)


def test_kl_anneal_schedule():
  assert float(L.kld_coef(0)) == pytest.approx(1 / (1 + math.exp(7.5)), rel=1e-5)  # ~5.5e-4
  assert float(L.kld_coef(15000)) == pytest.approx(0.5)
  assert float(L.kld_coef(30000)) == pytest.approx(1 / (1 + math.exp(-7.5)), rel=1e-5)


def test_reparameterize_uses_std_from_logvar():
  key = jax.random.PRNGKey(1)
  mu, lv = jnp.full((4000, 1), 2.0), jnp.full((4000, 1), math.log(9.0))
  z = np.asarray(L.reparameterize(key, mu, lv))
  assert abs(z.mean() - 2.0) < 0.2 and abs(z.std() - 3.0) < 0.2


def _jitter_cfg(kind, pose_size):
  return ml_collections.ConfigDict(dict(jitter=kind, pose_size=pose_size, joint_dims=0,
                                        jitter_x=50.0, jitter_y=20.0, jitter_yaw_deg=45.0))


def test_translate_jitter_shifts_every_joint_and_frame_equally():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 5, 28)), jnp.float32)
  y = np.asarray(common.jitter_units(jax.random.PRNGKey(0), x, _jitter_cfg("auto", 28)))
  d = (y - np.asarray(x)).reshape(64, 5, 14, 2)
  np.testing.assert_allclose(d, np.broadcast_to(d[:, :1, :1], d.shape), atol=1e-4)
  assert np.abs(d[..., 0]).max() <= 50 and np.abs(d[..., 1]).max() <= 20
  assert np.abs(d[..., 0]).max() > 25  # actually jitters


def test_yaw_jitter_rotates_about_vertical_axis():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 4, 69)), jnp.float32)
  y = np.asarray(common.jitter_units(jax.random.PRNGKey(0), x, _jitter_cfg("auto", 69)))
  xs, ys = np.asarray(x).reshape(32, 4, 23, 3), y.reshape(32, 4, 23, 3)
  np.testing.assert_allclose(ys[..., 1], xs[..., 1], atol=1e-5)            # height kept
  np.testing.assert_allclose(np.hypot(ys[..., 0], ys[..., 2]), np.hypot(xs[..., 0], xs[..., 2]),
                             rtol=1e-4, atol=1e-4)                          # horizontal radius kept
  ang = np.arctan2(xs[..., 2], xs[..., 0]) - np.arctan2(ys[..., 2], ys[..., 0])
  ang = (ang + np.pi) % (2 * np.pi) - np.pi
  assert np.abs(ang).max() <= math.radians(45) + 1e-3
  np.testing.assert_allclose(ang, np.broadcast_to(ang[:, :1, :1], ang.shape), atol=1e-3)


def test_module_optimizers_step_only_named_modules():
  opt = optim.ModuleOptimizers({"a": optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.1)),
                                 "b": optax.adam(0.1)})
  params = {"a": jnp.ones(3), "b": jnp.ones(3)}
  st = opt.init(params)
  grads = {"a": jnp.full(3, 100.0), "b": jnp.full(3, 1.0)}
  new, st2 = opt.apply(params, st, grads, ["a"])
  np.testing.assert_array_equal(new["b"], params["b"])
  assert st2["b"] is st["b"]
  np.testing.assert_allclose(new["a"], 1 - 0.1, rtol=1e-4)  # Adam first step = lr * sign


def test_beat_phase_features_hand_computed():
  """sin/cos of 2 pi (t - 3) / (8 p) for p = 4, 2, 1, 1/2 beats: zero phase on every beat frame
  of a beat-normalised unit (3, 11, 19, 27) for the 1-beat period, quarter phase two frames on."""
  from d2m_jax.models.d2m_decomp import beat_phase_features
  f = beat_phase_features(32)
  assert f.shape == (32, 8) and f.dtype == np.float32
  for t in (3, 11, 19, 27):          # the 1-beat and 1/2-beat clocks restart on each beat
    np.testing.assert_allclose(f[t, 4:], [0, 1, 0, 1], atol=1e-6)
  np.testing.assert_allclose(f[5, 4:6], [1, 0], atol=1e-6)        # 2 of 8 frames: pi/2
  np.testing.assert_allclose(f[3, :4], [0, 1, 0, 1], atol=1e-6)   # 4- and 2-beat clocks at 0
  np.testing.assert_allclose(f[19, :2], [0, -1], atol=1e-6)       # 16 of 32 frames: pi
  np.testing.assert_allclose(f[0, 0], np.sin(-2 * np.pi * 3 / 32), rtol=1e-6)


def test_stdp_dec_beat_phase_moves_with_the_clock():
  """With ``beat_phase=True`` the decoder's output depends on the frame's phase even for
  z = 0 and zero recurrent weights (so only the clock can vary it); the parameter count grows
  by exactly 8 input rows x 3H."""
  from d2m_jax.models.d2m_decomp import StandardPoseDec
  P, T, H = 6, 32, 8
  plain = StandardPoseDec(P, T, H)
  clocked = StandardPoseDec(P, T, H, beat_phase=True)
  zi, zm = jnp.zeros((1, 10)), jnp.zeros((1, 4))
  p0 = plain.init(jax.random.key(0), zi, zm)
  p1 = clocked.init(jax.random.key(0), zi, zm)
  n0 = sum(x.size for x in jax.tree.leaves(p0))
  n1 = sum(x.size for x in jax.tree.leaves(p1))
  assert n1 - n0 == 8 * 3 * H
  p1 = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if "w_hh" in jax.tree_util.keystr(path) else x, p1)
  out = np.asarray(clocked.apply(p1, zi, zm))[0]
  assert np.abs(np.diff(out, axis=0)).mean() > 1e-3
  # frames one full beat apart see the same fast clocks but different 4- and 2-beat phases
  assert not np.allclose(out[3], out[11])
