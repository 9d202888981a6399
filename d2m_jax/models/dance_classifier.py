"""Dance-style classifier over poses, after music2dance's ``dance_classification`` conv net.

Spec (../shared/specs/wgan_learn2dance_kakashi.md §1.4): ``Conv1d(69 -> C, k 9) -> ReLU ->
2 x TemporalBlock(C) -> Conv1d(C -> 4, k = seqlen)`` on 4.8 s (120-frame) clips, cross-entropy,
Adam 2e-4, batch 49. ``TemporalBlock`` is the music2dance residual block
``x + ReLU(conv2(ReLU(conv1(x))))`` (k 7, same padding), shared with the WGAN critic
(``d2m_jax.models.wgan_layers``). The first convolution uses same padding (pad 4) so the last
convolution (kernel = clip length) sees exactly ``seqlen`` frames and outputs one logit vector.

Channels-last: input (B, T, P) with T == ``seqlen``; output logits (B, num_classes).
``features`` (the C x T activations pooled over time, C-d) serve as an embedding for a
classifier-feature FID (Dancing2Music's FID uses a style classifier's features).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.models.wgan_layers import TemporalBlock, conv1d


class DanceClassifier(nn.Module):
  channels: int = 128
  num_blocks: int = 2
  num_classes: int = 4
  seqlen: int = 120
  first_kernel: int = 9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, return_features: bool = False):
    if x.shape[1] != self.seqlen:
      raise ValueError(f"DanceClassifier expects {self.seqlen} frames, got {x.shape[1]}")
    h = jax.nn.relu(conv1d(x.astype(self.dtype), self.channels, self.first_kernel, 1,
                           (self.first_kernel - 1) // 2, self.dtype, name="conv_in"))
    for i in range(self.num_blocks):
      h = TemporalBlock(self.channels, dtype=self.dtype, name=f"block{i}")(h)
    logits = conv1d(h, self.num_classes, self.seqlen, 1, 0, self.dtype, name="conv_out")
    logits = logits[:, 0, :].astype(jnp.float32)
    if return_features:
      return logits, jnp.mean(h, axis=1).astype(jnp.float32)
    return logits


def from_config(model_cfg, dtype=jnp.float32) -> DanceClassifier:
  return DanceClassifier(channels=int(model_cfg.channels), num_blocks=int(model_cfg.num_blocks),
                         num_classes=int(model_cfg.num_classes), seqlen=int(model_cfg.seqlen),
                         dtype=dtype)
