"""Phase 2: unconditional and dance-type-conditional sequence GAN (spec §1.3).

Generator: per-frame noise ``z (B, T, 50)`` -> ``GRU(50 -> 50, 3 layers)`` -> FrameDecoder
(``Linear(50->256) BN ReLU -> 2 x LinearBlock(256, BN) -> Linear(256->P)``) -> ``(B, T, P)``.
Critic (joint coordinates as channels): ``Conv1d(P->128, k25, pad 12) ReLU -> 3 x
TemporalBlock(128, k7) -> Conv1d(128->1, k=T)`` -> one score.

Conditional variant (``num_classes > 0``): an ``Embedding(4, 4)`` of the dance type is
concatenated to every noise frame (GRU input 54) in the generator and, through the critic's own
embedding, as 4 extra input channels of the critic, which also gets ``Dropout(0.5)`` before its
last convolution.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.models.wgan_layers import GRU_INITS, FrameDecoder, TemporalBlock, conv1d
from d2m_jax.nn import GRU


def _label_frames(labels, num_classes, dim, T, name):
  emb = nn.Embed(num_classes, dim, embedding_init=nn.initializers.normal(1.0), name=name)(labels)
  return jnp.broadcast_to(emb[:, None, :], (labels.shape[0], T, dim))


class SeqGenerator(nn.Module):
  hidden: int = 50          # GRU width (= noise size in the original)
  n_cells: int = 3
  size: int = 256
  out: int = 69
  nblocks: int = 2
  num_classes: int = 0      # > 0: dance-type conditional
  embed_dim: int = 4
  parity_bug: bool = False
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, z, labels=None, train: bool = True):
    if self.num_classes:
      z = jnp.concatenate([z, _label_frames(labels, self.num_classes, self.embed_dim,
                                            z.shape[1], "label_embed")], axis=-1)
    h, _ = GRU(self.hidden, self.n_cells, dtype=self.dtype, impl=self.rnn_impl, name="rnn",
               **GRU_INITS)(z)
    return FrameDecoder(self.size, self.out, self.nblocks, self.parity_bug, self.dtype,
                        self.axis_name, name="decoder")(h, train)


class SeqCritic(nn.Module):
  channels: int = 128
  init_kernel: int = 25
  nblocks: int = 3
  num_classes: int = 0
  embed_dim: int = 4
  dropout: float = 0.5      # used by the conditional critic only (as the original)
  dtype: Any = jnp.float32
  conv_impl: str = "xla"    # "xla" | "im2col" | "auto" (wgan_layers.conv1d; same parameters)

  @nn.compact
  def __call__(self, x, labels=None, train: bool = True):
    T = x.shape[1]
    if self.num_classes:
      x = jnp.concatenate([x, _label_frames(labels, self.num_classes, self.embed_dim, T,
                                            "label_embed")], axis=-1)
    h = jax.nn.relu(conv1d(x, self.channels, self.init_kernel, 1, (self.init_kernel - 1) // 2,
                           self.dtype, name="conv_in", impl=self.conv_impl))
    for i in range(self.nblocks):
      h = TemporalBlock(self.channels, dtype=self.dtype, conv_impl=self.conv_impl,
                        name=f"block{i}")(h)
    if self.num_classes:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    out = conv1d(h, 1, T, dtype=self.dtype, name="conv_out", impl=self.conv_impl)  # (B, 1, 1)
    return out.astype(jnp.float32).reshape((x.shape[0],))
