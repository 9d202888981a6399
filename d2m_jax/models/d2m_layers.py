"""Dancing2Music building blocks and loss functions (spec ``dancing2music.md`` §2.1).

Conventions of the original (PyTorch) code, kept here:

* every ``*_std`` head outputs a **log-variance**; sampling is ``mu + eps * exp(0.5 * logvar)``;
* KL = ``mean_batch(sum_dims -0.5 * (1 + logvar - mu^2 - exp(logvar)))``;
* L1 / MSE are means over all elements; GAN losses are ``BCEWithLogits`` means;
* LayerNorm eps 1e-5, LeakyReLU slope 0.2, PyTorch-default Linear initialisation.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.nn import TorchDense

LEAKY_SLOPE = 0.2


def leaky_relu(x):
  return nn.leaky_relu(x, LEAKY_SLOPE)


class DenseNormAct(nn.Module):
  """``Linear -> LayerNorm -> activation`` (the original's repeated block)."""
  features: int
  act: Callable = leaky_relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = TorchDense(self.features, dtype=self.dtype, name="linear")(x)
    x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm")(x.astype(jnp.float32))
    return self.act(x)


class GaussianHead(nn.Module):
  """Two Linear heads: mean and log-variance."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    mu = TorchDense(self.features, dtype=self.dtype, name="mean")(x)
    logvar = TorchDense(self.features, dtype=self.dtype, name="logvar")(x)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)


def reparameterize(key, mu, logvar):
  """``mu + eps * exp(0.5 * logvar)``, eps ~ N(0, I)."""
  eps = jax.random.normal(key, mu.shape, mu.dtype)
  return mu + eps * jnp.exp(0.5 * logvar)


def kl_divergence(mu, logvar):
  """``mean over rows of sum over the last axis of -0.5 (1 + logvar - mu^2 - exp(logvar))``."""
  kl = -0.5 * jnp.sum(1.0 + logvar - mu ** 2 - jnp.exp(logvar), axis=-1)
  return jnp.mean(kl)


def kl_with_free_bits(mu, logvar, free_bits: float = 0.0):
  """KL with a free-bits floor: ``sum over the last axis of max(free_bits, mean over rows of the
  per-dimension KL)`` (Kingma et al. 2016). Equals :func:`kl_divergence` for ``free_bits=0``;
  dimensions whose mean KL is under the floor get no gradient from it."""
  kl = -0.5 * (1.0 + logvar - mu ** 2 - jnp.exp(logvar))
  kl = jnp.mean(kl.reshape(-1, kl.shape[-1]), axis=0)
  return jnp.sum(jnp.maximum(kl, free_bits)) if free_bits else jnp.sum(kl)


def l1_loss(a, b):
  return jnp.mean(jnp.abs(a - b))


def velocity_l1(a, b):
  """``mean |(a[t+1] - a[t]) - (b[t+1] - b[t])|`` over frames (axis -2) and everything else.

  Not in the original: the frame-difference (velocity) L1 that ``optim.lambda_stdp_velocity`` /
  ``lambda_stdpseq_velocity`` add to the decoders' position L1 (see the Dancing2Music docs).
  """
  return jnp.mean(jnp.abs(jnp.diff(a, axis=-2) - jnp.diff(b, axis=-2)))


def mse_loss(a, b):
  return jnp.mean((a - b) ** 2)


def bce_with_logits(logits, target: float):
  """``BCEWithLogitsLoss`` against a constant target (mean), numerically stable."""
  return jnp.mean(jnp.maximum(logits, 0.0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def kld_coef(step, rate: float = 0.0005, center: float = 15000.0):
  """The decomposition stage's KL anneal: ``1 / (1 + exp(-rate * (step - center)))``."""
  return jax.nn.sigmoid(rate * (jnp.asarray(step, jnp.float32) - center))


def learned_h0(module: nn.Module, name: str, shape, batch: int):
  """A learned initial hidden state ~ N(0, 1) of ``shape`` (L*dirs, 1, H) tiled to the batch."""
  h0 = module.param(name, nn.initializers.normal(1.0), shape, jnp.float32)
  return jnp.broadcast_to(h0, (shape[0], batch, shape[2]))


def cast_tree(tree, dtype: Optional[Any]):
  return tree if dtype is None else jax.tree.map(lambda x: x.astype(dtype), tree)
