"""learn2dance GANs: the fixed gradient penalty against finite differences, shapes, one step; the
package's one GAN step and its two adversarial losses (every GAN task trains through it; the
outputs before/after moving the learn2dance GANs onto it: tests/test_config_contract.py's
golden numbers)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from d2m_jax import configs
from d2m_jax.models.learn2dance_gan import PoseCritic, SeqGenerator
from d2m_jax.models.wgan_losses import gradient_penalty, interpolate
from d2m_jax.tasks.wgan_common import NON_SATURATING, WASSERSTEIN, GANTask


def test_gradient_penalty_is_nonzero_and_matches_finite_differences():
  B, P = 4, 6
  critic = PoseCritic(hidden=16)
  x = np.random.default_rng(0).normal(size=(B, P)).astype(np.float32)
  params = critic.init(jax.random.key(0), x)
  f = lambda v: critic.apply(params, v)  # noqa: E731  (inference mode: deterministic)
  gp = float(jax.jit(lambda v: gradient_penalty(f, [v])[0])(x))
  # Central differences per sample and coordinate (the critic is piecewise linear, so a small
  # step stays inside one linear piece and the estimate is accurate).
  eps = 1e-3
  f_np = jax.jit(f)
  norms = []
  for b in range(B):
    g = np.zeros(P)
    for j in range(P):
      hi, lo = x.copy(), x.copy()
      hi[b, j] += eps; lo[b, j] -= eps
      g[j] = (float(f_np(hi)[b]) - float(f_np(lo)[b])) / (2 * eps)
    norms.append(np.linalg.norm(g))
  ref = float(np.mean((np.asarray(norms) - 1.0) ** 2))
  assert gp > 1e-3 and abs(gp - 1.0) > 1e-3     # not zero, not the original's constant 1
  np.testing.assert_allclose(gp, ref, rtol=2e-2)


def test_interpolate_is_per_sample_convex_combination():
  real, fake = jnp.ones((5, 3)), jnp.zeros((5, 3))
  x = np.asarray(interpolate(real, fake, jax.random.uniform(jax.random.key(0), (5,))))
  assert np.all((x >= 0) & (x <= 1))
  np.testing.assert_allclose(x, np.repeat(x[:, :1], 3, 1))   # one alpha per sample
  assert np.std(x[:, 0]) > 0


def test_seq_generator_is_a_cumulative_latent_path():
  g = SeqGenerator(length=7, hidden=16)
  sz, pz = jnp.ones((3, 100)), jax.random.normal(jax.random.key(1), (3, 100))
  v = g.init(jax.random.key(0), sz, pz)
  path = np.asarray(g.apply(v, sz, pz))
  assert path.shape == (3, 7, 100)
  np.testing.assert_allclose(path[:, 0], pz, atol=1e-6)     # starts at the pose latent


def _cfg(task, kind="windows"):
  from d2m_jax.train.defaults import base_config
  c = base_config()
  c.task = task
  c.data.kind = kind
  c.model = ml_collections.ConfigDict(dict(joints=3, coords=3, hidden=16, bn_eps=0.8,
                                           gp_weight=10.0, seq_len=10, critic_hidden=8,
                                           pose_gan_workdir=None))
  c.optim = ml_collections.ConfigDict(dict(name="adam", lr=1e-3, b1=0.5, b2=0.999))
  return c


def test_pose_and_seq_gan_tasks_step_and_generate():
  from d2m_jax.tasks import get_task
  rng = np.random.default_rng(0)
  pose_task = get_task(_cfg("l2d_pose_gan"))
  batch = pose_task.synthetic_batch(2, rng)
  assert batch["pose"].shape == (2, 120, 9) and batch["waveform"].shape == (2, 79360)
  st = pose_task.init_state(jax.random.key(0), batch, None)
  st2, m = jax.jit(pose_task.train_step)(st, batch)
  assert int(st2.step) == 1 and float(m["gp"]) > 0 and np.isfinite(float(m["loss"]))
  seq_task = get_task(_cfg("l2d_seq_gan"))
  ss = seq_task.init_state(jax.random.key(0), batch, None, pose_state=st2)
  ss2, m = jax.jit(seq_task.train_step)(ss, batch)
  assert int(ss2.step) == 1 and np.isfinite(float(m["loss"]))
  # The pose generator is frozen: unchanged by the sequence GAN's step.
  for a, b in zip(jax.tree.leaves(ss.pose_g), jax.tree.leaves(ss2.pose_g)):
    np.testing.assert_array_equal(a, b)
  out = seq_task.generate(ss2, {}, None, 23, jax.random.key(0), 2)
  assert out.shape == (2, 23, 3, 3) and out.dtype == np.float32


def test_adversarial_losses_match_their_closed_forms():
  r, f = np.array([0.5, -1.0, 2.0]), np.array([-0.3, 0.8, 0.1])
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  loss, m = NON_SATURATING.critic(jnp.asarray(r, jnp.float32), jnp.asarray(f, jnp.float32))
  want = -np.mean(np.log(sig(r))) - np.mean(np.log(1 - sig(f)))
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  np.testing.assert_allclose([float(m["d_real"]), float(m["d_fake"])],
                             [sig(r).mean(), sig(f).mean()], rtol=1e-6)
  np.testing.assert_allclose(float(NON_SATURATING.generator(jnp.asarray(f, jnp.float32))),
                             -np.mean(np.log(sig(f))), rtol=1e-6)
  loss, m = WASSERSTEIN.critic(jnp.asarray(r), jnp.asarray(f))
  np.testing.assert_allclose([float(loss), float(m["w_dist"])],
                             [f.mean() - r.mean(), r.mean() - f.mean()], rtol=1e-6)
  assert WASSERSTEIN.penalised and not NON_SATURATING.penalised


def test_every_gan_task_trains_through_the_one_gan_step():
  from d2m_jax.tasks import get_task
  tasks = {n: get_task(configs.load(n)) for n in configs.names() if n != "l2d_kmeans"}
  gans = {n: t for n, t in tasks.items() if isinstance(t, GANTask)}
  assert {"wgan_pose", "wgan_seq", "wgan_audio", "l2d_pose_gan", "l2d_seq_gan"} <= set(gans)
  for name, task in gans.items():
    for member in ("train_step", "critic_step", "generator_step"):
      assert getattr(type(task), member) is getattr(GANTask, member), (name, member)
  assert gans["l2d_seq_gan"].loss is NON_SATURATING and gans["l2d_pose_gan"].loss is WASSERSTEIN
