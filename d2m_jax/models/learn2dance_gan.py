"""learn2dance GAN model (after arXiv 1711.08682): a pose WGAN, then a latent-sequence GAN that
walks through the pose generator's latent space. Spec: ``wgan_learn2dance_kakashi.md`` §2.3.

* ``block(in, out, bn, dropout)`` = Linear -> [BatchNorm(eps=0.8)] -> LeakyReLU(0.02) ->
  [Dropout(0.5)]. (The original passes 0.8 as BatchNorm1d's second positional argument, which is
  ``eps``, not momentum; kept, switch ``bn_eps``.)
* Pose GAN: G = block(100 -> 500, BN), block(500 -> 500, BN, dropout), Linear(500 -> P2);
  D = block(P2 -> 500), block(500 -> 500, dropout), Linear(500 -> 1). WGAN loss with a
  **working gradient penalty** (the WGAN family's one implementation,
  :func:`d2m_jax.models.wgan_losses.gradient_penalty`): the original called
  ``autograd.grad`` with ``grad_outputs = zeros``, so every gradient was 0 and its "penalty" was
  the constant ``(0 - 1)^2 = 1`` -- an unconstrained WGAN. Here the penalty is
  ``E[(|grad_x D(x_hat)|_2 - 1)^2]`` at random interpolates of real and fake poses.
* Sequence GAN: G = block(200 -> 500, BN), block(500 -> 500, BN, dropout),
  Linear(500 -> 100 * (L - 1)) -> L - 1 latent deltas; the latent path is
  ``cumsum([pose_z, deltas])`` (L latents) and the frozen pose generator (inference mode) decodes
  every latent into a pose. D = LSTM(P2 -> 100, 2 layers, bidirectional) -> concat(out[:, 0],
  out[:, -1]) (400) -> block(400 -> 500) -> Linear(500 -> 1) logit (sigmoid / BCE loss, as the
  original's standard GAN).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from d2m_jax.nn import LSTM, TorchDense

POSE_Z = 100
SEQ_Z = 100
HIDDEN = 500


class Block(nn.Module):
  features: int
  batch_norm: bool = True
  dropout: bool = False
  bn_eps: float = 0.8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, axis_name=None):
    x = TorchDense(self.features, dtype=self.dtype, name="fc")(x)
    if self.batch_norm:
      # PyTorch BatchNorm1d momentum 0.1 == flax momentum 0.9.
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,
                       axis_name=axis_name, dtype=jnp.float32, name="bn")(x)
    x = nn.leaky_relu(x.astype(jnp.float32), 0.02)
    if self.dropout:
      x = nn.Dropout(0.5)(x, deterministic=not train)
    return x


class PoseGenerator(nn.Module):
  out_dim: int
  hidden: int = HIDDEN
  bn_eps: float = 0.8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = False, axis_name=None):
    h = Block(self.hidden, True, False, self.bn_eps, self.dtype, name="b1")(z, train, axis_name)
    h = Block(self.hidden, True, True, self.bn_eps, self.dtype, name="b2")(h, train, axis_name)
    return TorchDense(self.out_dim, dtype=self.dtype, name="out")(h).astype(jnp.float32)


class PoseCritic(nn.Module):
  hidden: int = HIDDEN
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = Block(self.hidden, False, False, dtype=self.dtype, name="b1")(x, train)
    h = Block(self.hidden, False, True, dtype=self.dtype, name="b2")(h, train)
    return TorchDense(1, dtype=self.dtype, name="out")(h).astype(jnp.float32)[..., 0]


class SeqGenerator(nn.Module):
  """(seq_z (B, 100), pose_z (B, 100)) -> latent path (B, L, 100)."""
  length: int = 50
  hidden: int = HIDDEN
  bn_eps: float = 0.8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, seq_z, pose_z, train: bool = False, axis_name=None):
    h = jnp.concatenate([seq_z, pose_z], -1)
    h = Block(self.hidden, True, False, self.bn_eps, self.dtype, name="b1")(h, train, axis_name)
    h = Block(self.hidden, True, True, self.bn_eps, self.dtype, name="b2")(h, train, axis_name)
    d = TorchDense(pose_z.shape[-1] * (self.length - 1), dtype=self.dtype, name="out")(h)
    d = d.astype(jnp.float32).reshape(h.shape[0], self.length - 1, pose_z.shape[-1])
    return jnp.cumsum(jnp.concatenate([pose_z[:, None], d], 1), axis=1)


class SeqCritic(nn.Module):
  """(B, L, P2) pose sequences -> (B,) logits."""
  hidden: int = 100
  num_layers: int = 2
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, seq, train: bool = False):
    out, _ = LSTM(self.hidden, num_layers=self.num_layers, bidirectional=True,
                  dtype=self.dtype, impl=self.rnn_impl, name="lstm")(seq)
    h = jnp.concatenate([out[:, 0], out[:, -1]], -1)
    h = Block(HIDDEN, False, False, dtype=self.dtype, name="b1")(h, train)
    return TorchDense(1, dtype=self.dtype, name="out")(h).astype(jnp.float32)[..., 0]
