"""Task ``l2d_pose_gan``: learn2dance's single-pose WGAN with a WORKING gradient penalty.

Model: ``d2m_jax.models.learn2dance_gan`` (PoseGenerator z 100 -> 500 -> 500 -> P2, PoseCritic).
Data: kind ``"windows"``; every frame of every window is one training pose (batch 8 windows x 120
frames = 960 poses, close to the original's 800), projected to 2-D
(``d2m_jax.models.learn2dance.project_to_2d``: front view for mocap, identity for OpenPose) and
normalised (per-coordinate mean, one global scale; the original used raw OpenPose pixels, the
mocap centimetres are rescaled so that the GAN sees unit-scale inputs).

One step = one critic update + one generator update (n_critic = 1), Adam 1e-3 (0.5, 0.999):
critic ``E[D(fake)] - E[D(real)] + 10 * GP``, generator ``-E[D(fake)]`` on the same z.
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
import numpy as np

from d2m_jax.models.learn2dance import project_to_2d
from d2m_jax.models.learn2dance_gan import POSE_Z, PoseCritic, PoseGenerator
from d2m_jax.models.wgan_losses import gradient_penalty, interpolate
from d2m_jax.tasks import l2d_common as common
from d2m_jax.tasks.wgan_common import apply_generator, apply_update
from d2m_jax.train.parallel_utils import pmean
from d2m_jax.train.task import Task, compute_dtype


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


class PoseGANTask(Task):
  name = "l2d_pose_gan"

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.J, self.C = int(m.joints), int(m.coords)
    self.P2 = self.J * 2
    dtype = compute_dtype(config)
    self.G = PoseGenerator(self.P2, hidden=m.hidden, bn_eps=m.bn_eps, dtype=dtype)
    self.D = PoseCritic(hidden=m.hidden, dtype=dtype)
    self.g_tx = common.make_optimizer(config.optim)
    self.d_tx = common.make_optimizer(config.optim)

  def synthetic_batch(self, batch_size, rng):
    return common.synthetic_batch(self.config, batch_size, rng)

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

  def train_step(self, state, batch, axis_name: Optional[str] = None):
    key = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    kz, kgd, kd1, kgp, kd2 = jax.random.split(key, 5)
    real = self.real_poses(state, batch)
    n = real.shape[0]
    z = jax.random.normal(kz, (n, POSE_Z))
    gp_w = float(self.config.model.gp_weight)

    def gen(gp, stats):
      return apply_generator(self.G, gp, stats, (z,), kgd, True, axis_name=axis_name)

    fake, _ = gen(state.g_params, state.g_batch_stats)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(dp):
      critic = lambda x: self.D.apply({"params": dp}, x, True, rngs={"dropout": kd1})  # noqa
      wd = jnp.mean(critic(real)) - jnp.mean(critic(fake))
      alpha = jax.random.uniform(kgp, (real.shape[0],))
      gp, _ = gradient_penalty(critic, [interpolate(real, fake, alpha)])
      return -wd + gp_w * gp, (wd, gp)

    (d_loss, (wd, gp)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt = apply_update(self.d_tx, d_grads, state.d_opt, state.d_params, axis_name)

    def g_loss_fn(gp):
      f, new_stats = gen(gp, state.g_batch_stats)
      return -jnp.mean(self.D.apply({"params": d_params}, f, True, rngs={"dropout": kd2})), new_stats

    (g_loss, new_stats), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt = apply_update(self.g_tx, g_grads, state.g_opt, state.g_params, axis_name)
    metrics = pmean({"loss": d_loss, "g_loss": g_loss, "wdist": wd, "gp": gp}, axis_name)
    return state.replace(step=state.step + 1, g_params=g_params, g_batch_stats=new_stats,
                         d_params=d_params, g_opt=g_opt, d_opt=d_opt), metrics

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
