"""Phase 1: single-pose WGAN-GP generator and critic (residual MLPs, spec §1.2).

Generator: ``Linear(L->S) BN ReLU -> B x LinearBlock(S, BN) -> Dropout(0.5) -> Linear(S->P)``.
Critic:    ``Linear(P->S) ReLU -> B x LinearBlock(S, no BN) -> Dropout(0.5) -> Linear(S->1)``.
The residual-block bug of the original is fixed (see :mod:`d2m_jax.models.wgan_layers`);
``parity_bug=True`` restores it.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.models.wgan_layers import LinearBlock, batch_norm, linear


class PoseGenerator(nn.Module):
  size: int = 128
  out: int = 69
  nblocks: int = 1
  dropout: float = 0.5
  parity_bug: bool = False
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, z, train: bool = True):
    h = jax.nn.relu(batch_norm(linear(z, self.size, self.dtype, name="fc_in"), train,
                               self.axis_name, name="bn_in"))
    for i in range(self.nblocks):
      h = LinearBlock(self.size, True, self.parity_bug, self.dtype, self.axis_name,
                      name=f"block{i}")(h, train)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return linear(h, self.out, self.dtype, name="fc_out").astype(jnp.float32)


class PoseCritic(nn.Module):
  size: int = 128
  nblocks: int = 1
  dropout: float = 0.5
  parity_bug: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = jax.nn.relu(linear(x, self.size, self.dtype, name="fc_in"))
    for i in range(self.nblocks):
      h = LinearBlock(self.size, False, self.parity_bug, self.dtype, name=f"block{i}")(h, train)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return linear(h, 1, self.dtype, name="fc_out").astype(jnp.float32)[:, 0]
