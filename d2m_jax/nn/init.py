"""Initialisers with PyTorch's defaults, for parity with the original systems.

PyTorch's ``nn.Linear`` draws weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); its
``nn.GRU``/``nn.LSTM`` draw every weight and bias from U(-1/sqrt(H), 1/sqrt(H)). Flax's defaults
(lecun_normal kernels, zero biases) differ, which changes early training dynamics, so the models
here use these by default.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def uniform_init(bound: float):
  """U(-bound, bound)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def torch_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch Linear/Conv weight init for a Flax kernel (fan_in = prod(shape[:-1]))."""
  fan_in = math.prod(shape[:-1])
  return uniform_init(1.0 / math.sqrt(fan_in))(key, shape, dtype)


def torch_bias_init(fan_in: int):
  """PyTorch Linear/Conv bias init: U(+-1/sqrt(fan_in))."""
  return uniform_init(1.0 / math.sqrt(max(fan_in, 1)))


class TorchDense(nn.Module):
  """``nn.Dense`` with PyTorch's default initialisation and a compute dtype.

  Parameters are kept in ``param_dtype`` (float32); inputs and kernel are cast to ``dtype``.
  """
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    return nn.Dense(self.features, use_bias=self.use_bias, dtype=self.dtype,
                    param_dtype=self.param_dtype, kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(fan_in), name="dense")(x)
