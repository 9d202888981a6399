"""Phase 2 task: (dance-type conditional) sequence GAN with a temporal-conv critic (spec §1.3),
``config.task = "wgan_seq"``; ``model.num_classes = 4`` gives the conditional variant.

Critic loss ``D(fake) - D(real) + gamma * LP`` with the one-sided penalty (WGAN-LP) on the whole
flattened (T x P) sequence; generator loss ``-D(fake) + eta * TV(fake)``. Adam 5e-4 with the
original's MultiStepLR (x0.8 at iterations 10k, 35k, 50k) as an optax schedule. Batches: 'windows',
``data.batch_size = n_critic * 24``, sliced per critic update (see ``wgan_common``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from d2m_jax.models.wgan_layers import resolve_conv_impl
from d2m_jax.models.wgan_losses import total_variation
from d2m_jax.models.wgan_seq import SeqCritic, SeqGenerator
from d2m_jax.tasks.wgan_common import (WINDOW_FRAMES, GANTask, apply_generator,
                                       minmax_denormalise, minmax_normalise)
from d2m_jax.train.defaults import base_config


def seq_config(conditional: bool = False) -> ml_collections.ConfigDict:
  c = base_config()
  c.task = "wgan_seq"
  c.num_train_steps = 100000
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 5000
  c.data.kind = "windows"
  c.data.waveform = False          # motion only: the pipeline's smaller windows_nowave
  c.data.require_audio = False     # motion-only sequences are usable too
  m = c.model
  m.n_critic = 8
  m.per_update_batch = 24
  c.data.batch_size = m.n_critic * m.per_update_batch   # 192 windows per iteration
  c.data.eval_batch_size = m.n_critic * 4
  m.noise = 50                # per-frame noise = GRU width
  m.n_cells = 3
  m.size = 256
  m.nblocks_gen = 2
  m.channels = 128
  m.init_kernel = 25
  m.nblocks_critic = 3
  m.num_classes = 4 if conditional else 0
  m.embed_dim = 4
  m.critic_dropout = 0.5      # conditional critic only
  m.conv_impl = "auto"        # critic convs: im2col on CPU (fast penalty double backward)
  m.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  m.gamma = 10.0              # one-sided (WGAN-LP)
  m.eta = 50.0                # TV weight
  m.parity_residual_bug = False
  m.slice_batch = True
  m.pose_dim = 69
  c.optim.lr = 5e-4               # generator and critic (config.optim.generator / .critic)
  c.optim.schedule = "multistep"  # the original's MultiStepLR, counted in iterations
  c.optim.milestones = (10000, 35000, 50000)
  c.optim.decay_factor = 0.8
  return c


class WGANSeqTask(GANTask):
  name = "wgan_seq"
  one_sided = True

  def _gen(self, axis_name=None, pose_dim=69):
    m = self.config.model
    return SeqGenerator(m.noise, m.n_cells, m.size, pose_dim, m.nblocks_gen, m.num_classes,
                        m.embed_dim, m.parity_residual_bug, self.dtype, axis_name,
                        rnn_impl=m.get("rnn_impl", "auto"))

  def _critic(self):
    m = self.config.model
    # im2col convs on CPU: XLA:CPU's convolution double backward (the penalty) is ~10x slower.
    return SeqCritic(m.channels, m.init_kernel, m.nblocks_critic, m.num_classes, m.embed_dim,
                     m.critic_dropout, self.dtype,
                     resolve_conv_impl(m.get("conv_impl", "auto")))

  def window_frames(self) -> int:
    """Frames per sequence: the pipeline's 120-frame windows, or ``model.window_frames`` (the
    critic's last convolution spans the whole window, so the length is fixed at init)."""
    return int(self.config.model.get("window_frames", 0) or WINDOW_FRAMES)

  def init_models(self, rng, P):
    k1, k2 = jax.random.split(rng)
    T = self.window_frames()
    labels = jnp.zeros((2,), jnp.int32)
    g_vars = self._gen(None, P).init(k1, jnp.zeros((2, T, self.config.model.noise)), labels,
                                     train=False)
    d_params = self._critic().init(k2, jnp.zeros((2, T, P)), labels, train=False)["params"]
    return dict(g_vars), d_params

  def prepare(self, state, batch, rng):
    pose = minmax_normalise(jnp.asarray(batch["pose"], jnp.float32), state.stats)
    cond = {}
    if self.config.model.num_classes:
      cond["labels"] = self.split_slices(jnp.asarray(batch["style"], jnp.int32))
    return self.split_slices(pose), cond

  def sample_fake(self, state, g_params, cond, rng, axis_name, num, train=True,
                  labels=None):
    k_z, k_d = jax.random.split(rng)
    P = g_params["decoder"]["fc_out"]["kernel"].shape[-1]
    if labels is None:
      labels = cond.get("labels")
    z = jax.random.normal(k_z, (num, self.window_frames(), self.config.model.noise))
    return apply_generator(self._gen(axis_name, P), g_params, state.g_batch_stats, (z, labels),
                           k_d, train)

  def gen_regulariser(self, fake, real, cond):
    tv = total_variation(fake, time_axis=1)
    return self.config.model.eta * tv, {"tv": tv}

  def motion_rows(self, state, batch, rng):
    """The ``motion_ratio`` evaluator's rows, (N, 120, P) min-max normalised: the batch's last
    real slice and as many sequences generated for its conditioning (inference mode, the
    sampling parameters, as :meth:`sample`)."""
    real, cond = self.prepare(state, batch, rng)
    real, cond = real[-1], jax.tree.map(lambda x: x[-1], cond)
    fake, _ = self.sample_fake(state, self.sampling_params(state), cond, rng, None,
                               real.shape[0], train=False)
    return {"real": real, "generated": fake}

  def sample(self, state, rng, num: int, style=None):
    """``num`` 4.8 s sequences in data units, (num, 120, P); ``style`` for the conditional."""
    labels = None
    if self.config.model.num_classes:
      labels = jnp.full((num,), 0 if style is None else style, jnp.int32)
    fake, _ = self.sample_fake(state, self.sampling_params(state), {}, rng, None,
                               num, train=False, labels=labels)
    return np.asarray(minmax_denormalise(fake, state.stats))


def make_task(config):
  return WGANSeqTask(config)
