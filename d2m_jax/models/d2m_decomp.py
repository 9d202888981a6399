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
import numpy as np

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


UNIT_BEAT_OFFSET = 3       # first beat frame of a beat-normalised unit (d2m_jax/data/examples.py)
BEAT_SPACING = 8           # frames per beat in a beat-normalised unit
PHASE_PERIODS_BEATS = (4.0, 2.0, 1.0, 0.5)


def beat_phase_features(length: int) -> np.ndarray:
  """(length, 2 * len(PHASE_PERIODS_BEATS)) float32: sin, cos of 2 pi (t - 3) / (8 p) for each
  period p (beats) of :data:`PHASE_PERIODS_BEATS`; zero phase on the unit's beats."""
  t = np.arange(length, dtype=np.float64) - UNIT_BEAT_OFFSET
  cols = []
  for p in PHASE_PERIODS_BEATS:
    a = 2.0 * np.pi * t / (BEAT_SPACING * p)
    cols += [np.sin(a), np.cos(a)]
  return np.stack(cols, axis=-1).astype(np.float32)


class StandardPoseDec(nn.Module):
  """(z_init (B, zi), z_mov (B, zm)) -> a standardised dance unit (B, length, P).

  h0 = Linear(cat(z_init, z_mov)); the GRU's input is z_mov at every step, so it is projected
  once (``constant_input=True``) instead of ``length`` times; per step
  Linear(H, H)-LayerNorm-ReLU-Linear(H, P).

  ``beat_phase`` (not in the paper; ``model.beat_phase_input``, default False): the GRU's input
  at frame t is z_mov followed by :func:`beat_phase_features` (sin and cos of the beat phase at
  periods of 4, 2, 1 and 1/2 beats). Units are beat-normalised (beats on frames 3, 11, 19, 27),
  so this is a clock locked to the music; without it the GRU, fed a constant input, must learn
  to oscillate from its own dynamics, which it does late in training (the damped-motion problem
  of docs/dancing2music.md). The input projection stays one matmul: z_mov's part once per unit,
  the clock's part once per frame, added.
  """
  pose_size: int = 28
  length: int = 32
  hidden: int = 1024
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)
  beat_phase: bool = False

  @nn.compact
  def __call__(self, z_init, z_mov):
    h0 = TorchDense(self.hidden, dtype=self.dtype, name="init_h")(
        jnp.concatenate([z_init, z_mov], axis=-1)).astype(jnp.float32)
    gru = GRU(self.hidden, dtype=self.dtype, impl=self.rnn_impl, name="gru")
    clock = jnp.asarray(beat_phase_features(self.length)) if self.beat_phase else None
    ys, _ = gru(z_mov, h0[None], constant_input=True, length=self.length, step_input=clock)
    x = DenseNormAct(self.hidden, act=nn.relu, dtype=self.dtype, name="block")(ys)
    return TorchDense(self.pose_size, dtype=self.dtype, name="out")(x).astype(jnp.float32)
