"""Building blocks shared by the three WGAN phases (music2dance, spec §1).

Layout is channels-last (``(B, T, C)``, Flax's NWC) where the original is ``(B, C, T)``; the
arithmetic (kernel, stride, padding, output length) is the same.

Initialisation follows the original's ``initialize_weights``: Xavier-normal for every Linear and
Conv kernel (and GRU weights, see :data:`GRU_INITS`), biases at PyTorch's default
U(+-1/sqrt(fan_in)).

Convolutions (:func:`conv1d`) have two implementations with the same parameters (``kernel``
``(k, C_in, C_out)``, ``bias`` ``(C_out,)``, same names and initialisation, so checkpoints are
interchangeable): ``"xla"`` (``flax.linen.Conv``, i.e. ``lax.conv_general_dilated``; cuDNN on GPU)
and ``"im2col"`` (:class:`Im2ColConv1d`: patch matrix from contiguous slices + one matmul). On
XLA:CPU the gradients of strided convolutions (transposed convolutions with lhs dilation) take a
slow generic path, and the WGAN gradient penalty differentiates them twice; the im2col form
differentiates into pads and matmuls only (measured in ``.notes/issue_5_conv.md``: the critic's
raw-audio branch GP double backward ~14x faster on CPU, the phase-3 step ~10x).
:func:`resolve_conv_impl` maps ``"auto"`` to ``"im2col"`` on CPU and ``"xla"`` elsewhere.

Deliberate fix (spec §1.2): the original ``LinearBlock`` computes ``h = ReLU(BN1(fc1(x)))`` and
then discards it, returning ``x + ReLU(BN2(fc2(x)))``. Here ``fc2`` takes ``h``. The original
behaviour is kept behind ``parity_bug=True`` (``config.model.parity_residual_bug``) for
comparisons; both variants have the same parameters.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
from flax.linen.dtypes import promote_dtype
import jax
import jax.numpy as jnp

from d2m_jax import target
from d2m_jax.nn.init import torch_bias_init

# PyTorch xavier_normal_ draws from a plain normal (JAX's glorot_normal is truncated).
XAVIER = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
# The original applies xavier_normal_ to GRU weights too (biases keep PyTorch's default).
GRU_INITS = dict(kernel_init=XAVIER, recurrent_init=XAVIER)

ACTIVATIONS = {
    "id": lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def linear(x, features: int, dtype=jnp.float32, name: Optional[str] = None):
  """PyTorch ``nn.Linear`` with Xavier-normal weight (call inside a compact method)."""
  return nn.Dense(features, dtype=dtype, kernel_init=XAVIER,
                  bias_init=torch_bias_init(x.shape[-1]), name=name)(x)


CONV_IMPLS = ("xla", "im2col")


def resolve_conv_impl(impl: str = "auto") -> str:
  """``"auto"`` -> ``"im2col"`` on the CPU backend, ``"xla"`` otherwise (cuDNN/TPU convs)."""
  if impl == "auto":
    return "im2col" if target.backend() == "cpu" else "xla"
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv_impl {impl!r}; expected 'auto' or one of {CONV_IMPLS}")
  return impl


def im2col_patches(x, kernel: int, stride: int = 1, pad: int = 0):
  """``(B, T, C)`` -> ``(B, T_out, kernel * C)`` with ``patches[b, t, j * C + c] =
  x_padded[b, stride * t + j, c]`` (zero padding ``pad`` on both sides).

  Built from ``ceil(kernel / stride)`` contiguous slices of the padded input reshaped to
  ``(L / stride, stride * C)`` (phase ``r`` of block ``i`` is tap ``i * stride + r``), so the
  graph has few ops and its derivatives (of any order) are pads, slices and reshapes.
  """
  B, T, C = x.shape
  t_out = conv_out_len(T, kernel, stride, pad)
  if t_out < 1:
    raise ValueError(f"conv kernel {kernel} (stride {stride}, pad {pad}) longer than input {T}")
  if t_out == 1 and pad == 0:
    return x[:, :kernel].reshape(B, 1, kernel * C)
  q = -(-kernel // stride)                  # blocks of `stride` taps
  length = stride * (t_out + q - 1)         # padded samples the patches can reach
  xp = jnp.pad(x, ((0, 0), (pad, max(length - T - pad, 0)), (0, 0)))[:, :length]
  xr = xp.reshape(B, length // stride, stride * C)
  if q == 1:
    pm = xr
  else:
    pm = jnp.concatenate([jax.lax.slice_in_dim(xr, i, i + t_out, axis=1) for i in range(q)],
                         axis=-1)
  return pm[..., :kernel * C]


class Im2ColConv1d(nn.Module):
  """``nn.Conv1d`` as im2col + one matmul, with ``flax.linen.Conv``'s parameters (names, shapes,
  dtypes, init) so the two are interchangeable in a checkpoint."""
  features: int
  kernel_size: int
  stride: int = 1
  pad: int = 0
  dtype: Any = jnp.float32
  kernel_init: Any = XAVIER
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    c_in = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (self.kernel_size, c_in, self.features),
                        jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    lead = x.shape[:-2]
    x = x.reshape((-1,) + x.shape[-2:])
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    pm = im2col_patches(x, self.kernel_size, self.stride, self.pad)
    y = jnp.dot(pm, kernel.reshape(self.kernel_size * c_in, self.features)) + bias
    return y.reshape(lead + y.shape[-2:])


def conv1d(x, features: int, kernel: int, stride: int = 1, pad: int = 0, dtype=jnp.float32,
           name: Optional[str] = None, impl: str = "xla"):
  """PyTorch ``nn.Conv1d`` on channels-last input ``(B, T, C)``; Xavier-normal weight.

  ``impl``: ``"xla"`` (``flax.linen.Conv``) or ``"im2col"`` (:class:`Im2ColConv1d`), same
  parameters; ``"auto"`` picks by backend (:func:`resolve_conv_impl`)."""
  fan_in = x.shape[-1] * kernel
  impl = resolve_conv_impl(impl)
  if impl == "im2col":
    return Im2ColConv1d(features, kernel, stride, pad, dtype, kernel_init=XAVIER,
                        bias_init=torch_bias_init(fan_in), name=name)(x)
  return nn.Conv(features, (kernel,), strides=(stride,), padding=[(pad, pad)], dtype=dtype,
                 kernel_init=XAVIER, bias_init=torch_bias_init(fan_in), name=name)(x)


def batch_norm(x, train: bool, axis_name: Optional[str], name: Optional[str] = None):
  """PyTorch ``BatchNorm1d`` defaults (eps 1e-5, momentum 0.1); statistics in float32 and
  averaged over ``axis_name`` in the parallel modes."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=jnp.float32, axis_name=axis_name, name=name)(x)


def conv_out_len(length: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
  return (length + 2 * pad - kernel) // stride + 1


class LinearBlock(nn.Module):
  """Residual MLP block ``x + ReLU(BN2(fc2(ReLU(BN1(fc1(x))))))`` (BN optional).

  ``parity_bug=True`` reproduces the original (``fc2`` applied to ``x``; ``fc1``'s output
  unused except for BN1's running statistics).
  """
  size: int
  use_bn: bool = True
  parity_bug: bool = False
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = linear(x, self.size, self.dtype, name="fc1")
    if self.use_bn:
      h = batch_norm(h, train, self.axis_name, name="bn1")
    h = jax.nn.relu(h)
    o = linear(x if self.parity_bug else h, self.size, self.dtype, name="fc2")
    if self.use_bn:
      o = batch_norm(o, train, self.axis_name, name="bn2")
    return x + jax.nn.relu(o)


class FrameDecoder(nn.Module):
  """Per-frame MLP ``Linear(in->size) BN ReLU -> nblocks x LinearBlock(BN) -> Linear(size->out)``.

  Input ``(..., in)``; all leading axes are flattened for BatchNorm (as the original's
  ``(B*T, in)`` reshape).
  """
  size: int
  out: int
  nblocks: int = 2
  parity_bug: bool = False
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    lead = x.shape[:-1]
    h = x.reshape((-1, x.shape[-1]))
    h = jax.nn.relu(batch_norm(linear(h, self.size, self.dtype, name="fc_in"), train,
                               self.axis_name, name="bn_in"))
    for i in range(self.nblocks):
      h = LinearBlock(self.size, True, self.parity_bug, self.dtype, self.axis_name,
                      name=f"block{i}")(h, train)
    h = linear(h, self.out, self.dtype, name="fc_out")
    return h.astype(jnp.float32).reshape(lead + (self.out,))


class TemporalBlock(nn.Module):
  """``x + ReLU(conv2(ReLU(conv1(x))))`` with same-length convolutions (k 7, pad 3)."""
  channels: int
  kernel: int = 7
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    p = (self.kernel - 1) // 2
    h = jax.nn.relu(conv1d(x, self.channels, self.kernel, 1, p, self.dtype, "conv1",
                           self.conv_impl))
    h = conv1d(h, self.channels, self.kernel, 1, p, self.dtype, "conv2", self.conv_impl)
    return x + jax.nn.relu(h)
