"""Dancing2Music composition-stage networks (the music-to-movement GAN, spec §2.4).

Parameter counts equal the PyTorch originals with the default sizes (``tests/test_d2m_models.py``):

=================================  ==========
DanceEnc(512, 512, H=1024)          7,348,224
DanceDec(512, 512, H=1024)          7,351,296
AudstyleEnc(30, 512, noise 30)        144,704
Dance2Style(512, 30)                  432,542
DanceAudDis2(28, 512, length=3)     3,816,155
DanceAudDis2(28, 512, length=1)     1,719,003
StyleGRU (AudioClassifier_rnn)          6,453
=================================  ==========

``StyleGRU`` is the original's small music-style classifier (learned h0, GRU(28 -> 30), last
output = style vector). It is used only as the documented fallback when no checkpoint of the
style-classifier task is given (see ``d2m_jax.tasks.d2m_composition``).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from d2m_jax.models.d2m_layers import DenseNormAct, GaussianHead, learned_h0
from d2m_jax.nn import GRU, TorchDense


class DanceEnc(nn.Module):
  """Movement codes (B, n_units, 2*z_mov) = cat(mu, logvar) -> (mu, logvar) of z_dance."""
  z_dance: int = 512
  hidden: int = 1024
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, codes):
    h0 = learned_h0(self, "init_h", (1, 1, self.hidden), codes.shape[0])
    _, h_n = GRU(self.hidden, dtype=self.dtype, impl=self.rnn_impl, name="gru")(codes, h0)
    return GaussianHead(self.z_dance, dtype=self.dtype, name="head")(h_n[0])


class DanceDec(nn.Module):
  """z_dance (B, z_dance) -> (mu, logvar) of ``length`` movement codes, each (B, length, z_mov).

  The GRU's input is z_dance at every step (projected once, ``constant_input=True``).
  """
  z_mov: int = 512
  length: int = 3
  hidden: int = 1024
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, z_dance):
    h0 = TorchDense(self.hidden, dtype=self.dtype, name="init_h")(z_dance).astype(jnp.float32)
    ys, _ = GRU(self.hidden, dtype=self.dtype, impl=self.rnn_impl, name="gru")(
        z_dance, h0[None], constant_input=True, length=self.length)
    x = DenseNormAct(self.hidden, act=nn.relu, dtype=self.dtype, name="block")(ys)
    return GaussianHead(self.z_mov, dtype=self.dtype, name="head")(x)


class AudstyleEnc(nn.Module):
  """(style (B, S), noise (B, N)) -> (mu, logvar) of a fake z_dance (the music-to-dance generator)."""
  z_dance: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, style, noise):
    x = jnp.concatenate([style, noise], axis=-1)
    x = DenseNormAct(64, dtype=self.dtype, name="block0")(x)
    x = DenseNormAct(128, dtype=self.dtype, name="block1")(x)
    return GaussianHead(self.z_dance, dtype=self.dtype, name="head")(x)


class Dance2Style(nn.Module):
  """The style regressor: z_dance (B, z) -> style vector (B, S)."""
  style_dim: int = 30
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    x = z
    for i, f in enumerate((512, 256, 128)):
      x = DenseNormAct(f, dtype=self.dtype, name=f"block{i}")(x)
    return TorchDense(self.style_dim, dtype=self.dtype, name="out")(x).astype(jnp.float32)


class DanceAudDis2(nn.Module):
  """Latent discriminator conditioned on the mean audio feature.

  movement (B, length, 2*z) flattened -> 1024 -> 512 -> 256 (LN-LReLU each) -> 30;
  audio mean (B, A) -> 30 -> 30 (LN-LReLU each); cat -> Linear(60, 1) logit (B,).
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, movement, aud_mean):
    m = movement.reshape(movement.shape[0], -1)
    for i, f in enumerate((1024, 512, 256)):
      m = DenseNormAct(f, dtype=self.dtype, name=f"mov{i}")(m)
    m = TorchDense(30, dtype=self.dtype, name="mov_out")(m).astype(jnp.float32)
    a = DenseNormAct(30, dtype=self.dtype, name="aud0")(aud_mean)
    a = DenseNormAct(30, dtype=self.dtype, name="aud1")(a)
    logit = TorchDense(1, dtype=self.dtype, name="out")(jnp.concatenate([m, a], axis=-1))
    return logit[:, 0].astype(jnp.float32)


class StyleGRU(nn.Module):
  """The original ``AudioClassifier_rnn(10, 30, 28, cls=3)``: audio (B, T, 28) -> (style, logits)."""
  style_dim: int = 30
  num_classes: int = 3
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, aud):
    h0 = learned_h0(self, "init_h", (1, 1, self.style_dim), aud.shape[0])
    ys, _ = GRU(self.style_dim, dtype=self.dtype, impl=self.rnn_impl, name="gru")(aud, h0)
    style = ys[:, -1]
    x = nn.relu(TorchDense(self.style_dim, dtype=self.dtype, name="fc0")(style))
    logits = TorchDense(self.num_classes, dtype=self.dtype, name="fc1")(x)
    return style, logits.astype(jnp.float32)
