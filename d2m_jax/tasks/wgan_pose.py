"""Phase 1 task: single-pose WGAN-GP (spec §1.2), ``config.task = "wgan_pose"``.

Data: 'windows' batches; the step pools every frame of the batch's windows, min-max normalises
them and draws ``n_critic * model.batch_size`` distinct frames on device (critic update ``i``
takes the ``i``-th group of ``model.batch_size``, the generator update reuses the last one). So
``data.batch_size`` windows must hold at least ``n_critic * model.batch_size`` frames
(4 windows = 480 frames >= 5 * 64).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from d2m_jax.models.wgan_pose import PoseCritic, PoseGenerator
from d2m_jax.tasks.wgan_common import (GANTask, apply_generator, minmax_denormalise,
                                       minmax_normalise)
from d2m_jax.train.defaults import base_config


def pose_config(latent: int = 50, size: int = 128, nblocks: int = 1) -> ml_collections.ConfigDict:
  """The phase-1 config; the original's grid is latent 10/50 x size 32/128/256 x blocks 1/2."""
  c = base_config()
  c.task = "wgan_pose"
  c.num_train_steps = 20000
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 2000
  c.data.kind = "windows"
  c.data.waveform = False          # motion only: the pipeline's smaller windows_nowave
  c.data.require_audio = False     # motion-only sequences are usable too
  c.data.batch_size = 4            # windows; frames are drawn from all 480 of them
  c.data.eval_batch_size = 4
  m = c.model
  m.latent = latent
  m.size = size
  m.nblocks = nblocks
  m.dropout = 0.5
  m.batch_size = 64                # poses per critic/generator update
  m.n_critic = 5
  m.gamma = 10.0                   # two-sided WGAN-GP
  m.parity_residual_bug = False    # True: the original's LinearBlock (fc2 applied to x)
  m.pose_dim = 69                  # synthetic_batch only; the model reads P from the data
  c.optim.lr = 1e-4               # generator and critic (config.optim.generator / .critic)
  return c


class WGANPoseTask(GANTask):
  name = "wgan_pose"

  def update_batch(self) -> int:
    """Poses per critic or generator update (``model.batch_size``, drawn from the windows)."""
    return int(self.config.model.batch_size)

  def _gen(self, axis_name=None, pose_dim=69):
    m = self.config.model
    return PoseGenerator(m.size, pose_dim, m.nblocks, m.dropout, m.parity_residual_bug,
                         self.dtype, axis_name)

  def _critic(self):
    m = self.config.model
    return PoseCritic(m.size, m.nblocks, m.dropout, m.parity_residual_bug, self.dtype)

  def init_models(self, rng, P):
    k1, k2, k3 = jax.random.split(rng, 3)
    z = jnp.zeros((2, self.config.model.latent))
    g_vars = self._gen(None, P).init({"params": k1, "dropout": k3}, z, train=False)
    d_params = self._critic().init({"params": k2}, jnp.zeros((2, P)), train=False)["params"]
    return dict(g_vars), d_params

  def prepare(self, state, batch, rng):
    pose = minmax_normalise(jnp.asarray(batch["pose"], jnp.float32), state.stats)
    frames = pose.reshape(-1, pose.shape[-1])
    n, b = self.n_critic, int(self.config.model.batch_size)
    if frames.shape[0] < n * b:
      raise ValueError(f"wgan_pose: the batch holds {frames.shape[0]} frames, fewer than "
                       f"n_critic * model.batch_size = {n * b}; raise data.batch_size")
    idx = jax.random.choice(rng, frames.shape[0], (n * b,), replace=False)
    return frames[idx].reshape(n, b, -1), {}

  def sample_fake(self, state, g_params, cond, rng, axis_name, num, train=True):
    k_z, k_d = jax.random.split(rng)
    P = g_params["fc_out"]["kernel"].shape[-1]
    z = jax.random.normal(k_z, (num, self.config.model.latent))
    return apply_generator(self._gen(axis_name, P), g_params, state.g_batch_stats, (z,), k_d,
                           train)

  def sample(self, state, rng, num: int):
    """``num`` poses in data units, (num, P)."""
    fake, _ = self.sample_fake(state, self.sampling_params(state), {}, rng, None, num,
                               train=False)
    return np.asarray(minmax_denormalise(fake, state.stats))


def make_task(config):
  return WGANPoseTask(config)
