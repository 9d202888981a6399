"""Task ``l2d_pose_gan``: learn2dance's single-pose WGAN with a WORKING gradient penalty.

Model: ``d2m_jax.models.learn2dance_gan`` (PoseGenerator z 100 -> 500 -> 500 -> P2, PoseCritic).
Data: kind ``"windows"``; every frame of every window is one training pose (batch 8 windows x 120
frames = 960 poses, close to the original's 800), projected to 2-D
(``d2m_jax.models.learn2dance.project_to_2d``: front view for mocap, identity for OpenPose) and
normalised (per-coordinate mean, one global scale; the original used raw OpenPose pixels, the
mocap centimetres are rescaled so that the GAN sees unit-scale inputs).

One step (the package's one GAN step, :class:`d2m_jax.tasks.l2d_common.L2DGANTask`) = one
critic update + one generator update (n_critic = 1), Adam 1e-3 (0.5, 0.999): critic
``E[D(fake)] - E[D(real)] + 10 * GP``, generator ``-E[D(fake)]`` on the same z.
Deliberate fix: GP is ``E[(|grad D(x_hat)| - 1)^2]`` at real/fake interpolates (the WGAN
family's ``d2m_jax.models.wgan_losses.gradient_penalty``); the original's
``grad_outputs = zeros`` turned it into the constant 1 (``config.model.gp_weight = 0`` reproduces
its unconstrained WGAN).
"""
from __future__ import annotations

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp

from d2m_jax.models.learn2dance import project_to_2d
from d2m_jax.models.learn2dance_gan import POSE_Z, PoseCritic, PoseGenerator
from d2m_jax.tasks import l2d_common as common
from d2m_jax.tasks.wgan_common import apply_generator
from d2m_jax.train.parallel_utils import pmean


class PoseGANState(flax.struct.PyTreeNode):
  step: Any
  rng: Any
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  pose2d_mean: Any
  pose2d_scale: Any


class PoseGANTask(common.L2DGANTask):
  name = "l2d_pose_gan"
  num_keys = 5

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.G = PoseGenerator(self.P2, hidden=m.hidden, bn_eps=m.bn_eps, dtype=self.dtype)
    self.D = PoseCritic(hidden=m.hidden, dtype=self.dtype)

  def init_state(self, rng, batch, stats=None):
    mean, scale = common.pose2d_stats(stats, self.J, self.C)
    kg, kd, ks = jax.random.split(rng, 3)
    gv = jax.jit(lambda k: self.G.init({"params": k}, jnp.zeros((2, POSE_Z)), False))(kg)
    dv = jax.jit(lambda k: self.D.init({"params": k}, jnp.zeros((2, self.P2)), False))(kd)
    return PoseGANState(step=jnp.int32(0), rng=ks, g_params=gv["params"],
                        g_batch_stats=gv["batch_stats"], d_params=dv["params"],
                        g_opt=self.g_tx.init(gv["params"]), d_opt=self.d_tx.init(dv["params"]),
                        pose2d_mean=jnp.asarray(mean), pose2d_scale=jnp.asarray(scale))

  def real_poses(self, state, batch):
    p = project_to_2d(batch["pose"], self.J, self.C)
    p = (p - state.pose2d_mean) / state.pose2d_scale
    return p.reshape(-1, self.P2)

  def key_roles(self, kz, kgd, kd1, kgp, kd2):
    """Noise and generator dropout (one fake sample for both updates), critic dropout,
    interpolation, the generator update's critic dropout."""
    return None, ((kz, kgd), (kd1, kd1), (kgp, kd1)), ((kz, kgd), kd2)

  def prepare(self, state, batch, rng):
    return self.real_poses(state, batch)[None], {}

  def sample_fake(self, state, g_params, cond, rng, axis_name, num, train=True):
    k_z, k_d = rng
    return apply_generator(self.G, g_params, state.g_batch_stats,
                           (jax.random.normal(k_z, (num, POSE_Z)),), k_d, train,
                           axis_name=axis_name)

  def eval_step(self, state, batch, axis_name: Optional[str] = None):
    real = self.real_poses(state, batch)
    z = jax.random.normal(jax.random.key(0), (real.shape[0], POSE_Z))
    fake = self.sample_poses(state, z, normalised=True)
    critic = lambda x: self.D.apply({"params": state.d_params}, x, False)  # noqa: E731
    wd = jnp.mean(critic(real)) - jnp.mean(critic(fake))
    # Mean/std match of the pose distribution (normalised units): a cheap sanity metric.
    moment = jnp.mean(jnp.abs(real.mean(0) - fake.mean(0))) + jnp.mean(
        jnp.abs(real.std(0) - fake.std(0)))
    return pmean({"loss": -wd, "wdist": wd, "moment_gap": moment}, axis_name)

  def sample_poses(self, state, z, normalised=False):
    """z (N, 100) -> (N, P2) poses, generator in inference mode (running BN statistics)."""
    p = self.G.apply({"params": state.g_params, "batch_stats": state.g_batch_stats}, z, False)
    return p if normalised else p * state.pose2d_scale + state.pose2d_mean


def make_task(config):
  return PoseGANTask(config)
