"""Dancing2Music decomposition-stage networks (the dance-unit VAE, spec §2.3).

Parameter counts equal the PyTorch originals for ``pose_size=28`` with the default sizes
(checked with ``jax.eval_shape`` in ``tests/test_d2m_models.py``):

=====================  ==========
InitPoseEnc(28, 10)         7,572
InitPoseDec(28, 10)         6,940
MovementEnc (bi-GRU)    8,576,000
StandardPoseDec         6,340,636
=====================  ==========

``pose_size`` is free: 28 (14 OpenPose joints x 2) or 69 (23 mocap joints x 3).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from d2m_jax.models.d2m_layers import DenseNormAct, GaussianHead, learned_h0
from d2m_jax.nn import GRU, TorchDense


class InitPoseEnc(nn.Module):
  """Initial pose (B, P) -> (mu, logvar) of z_init (B, z_init)."""
  z_init: int = 10
  hidden: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pose):
    x = DenseNormAct(self.hidden, dtype=self.dtype, name="block0")(pose)
    x = DenseNormAct(self.hidden, dtype=self.dtype, name="block1")(x)
    return GaussianHead(self.z_init, dtype=self.dtype, name="head")(x)


class InitPoseDec(nn.Module):
  """z_init (B, z_init) -> pose (B, P)."""
  pose_size: int = 28
  hidden: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    x = DenseNormAct(self.hidden, dtype=self.dtype, name="block0")(z)
    x = DenseNormAct(self.hidden, dtype=self.dtype, name="block1")(x)
    return TorchDense(self.pose_size, dtype=self.dtype, name="out")(x).astype(jnp.float32)


class MovementEnc(nn.Module):
  """A dance unit (B, T, P) -> (mu, logvar) of z_movement (B, z_mov).

  Learned h0 (2, 1, H); bidirectional GRU; the feature is the forward state after the last
  frame concatenated with the backward state after the first frame (= PyTorch's outputs at
  t = T-1 and t = 0 of the two directions).
  """
  z_mov: int = 512
  hidden: int = 1024
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, units):
    B = units.shape[0]
    h0 = learned_h0(self, "init_h", (2, 1, self.hidden), B)
    _, h_n = GRU(self.hidden, bidirectional=True, dtype=self.dtype, impl=self.rnn_impl,
                 name="gru")(units, h0)
    feat = jnp.concatenate([h_n[0], h_n[1]], axis=-1)
    return GaussianHead(self.z_mov, dtype=self.dtype, name="head")(feat)


class StandardPoseDec(nn.Module):
  """(z_init (B, zi), z_mov (B, zm)) -> a standardised dance unit (B, length, P).

  h0 = Linear(cat(z_init, z_mov)); the GRU's input is z_mov at every step, so it is projected
  once (``constant_input=True``) instead of ``length`` times; per step
  Linear(H, H)-LayerNorm-ReLU-Linear(H, P).
  """
  pose_size: int = 28
  length: int = 32
  hidden: int = 1024
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, z_init, z_mov):
    h0 = TorchDense(self.hidden, dtype=self.dtype, name="init_h")(
        jnp.concatenate([z_init, z_mov], axis=-1)).astype(jnp.float32)
    ys, _ = GRU(self.hidden, dtype=self.dtype, impl=self.rnn_impl, name="gru")(
        z_mov, h0[None], constant_input=True, length=self.length)
    x = DenseNormAct(self.hidden, act=nn.relu, dtype=self.dtype, name="block")(ys)
    return TorchDense(self.pose_size, dtype=self.dtype, name="out")(x).astype(jnp.float32)
