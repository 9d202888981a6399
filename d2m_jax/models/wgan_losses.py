"""WGAN losses: gradient penalties (two-sided WGAN-GP, one-sided WGAN-LP), total variation.

The penalties differentiate the critic with respect to its input; the caller differentiates the
result again with respect to the critic parameters (the "double backward"), all inside one jit.
The critic must treat samples independently (no BatchNorm in the critics, as in the original), so
the gradient of ``sum_i D(x_i)`` with respect to ``x`` gives every sample's own input gradient.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

EPS = 1e-12  # inside the square root, as the original ``sqrt(sum g^2 + 1e-12)``


def interpolate(real, fake, alpha):
  """``alpha * real + (1 - alpha) * fake`` with one ``alpha`` per sample (shape (B,))."""
  a = alpha.reshape((-1,) + (1,) * (real.ndim - 1)).astype(real.dtype)
  return a * real + (1.0 - a) * fake


def per_sample_norm(g):
  """Euclidean norm of each sample's gradient over all non-batch axes, float32."""
  g = g.astype(jnp.float32).reshape((g.shape[0], -1))
  return jnp.sqrt(jnp.sum(g * g, axis=1) + EPS)


def penalty_from_norm(norm, one_sided: bool):
  """Two-sided ``(|g| - 1)^2`` or one-sided ``max(0, |g| - 1)^2`` per sample."""
  d = norm - 1.0
  if one_sided:
    d = jnp.maximum(d, 0.0)
  return d * d


def gradient_penalty(critic: Callable, inputs: Sequence[jax.Array], wrt: Sequence[int] = (0,),
                     one_sided: bool = False):
  """Mean over samples of the summed penalties of ``critic(*inputs)``'s input gradients.

  Args:
    critic: function of the inputs returning one score per sample, shape (B,) or (B, 1).
    inputs: the critic's inputs at the penalty points (e.g. the real/fake interpolate and, for
      the audio critic, the real audio).
    wrt: which inputs get a penalty term; each contributes its own norm term (the original's
      ``(|grad_pose| - 1)^2 + (|grad_audio| - 1)^2``).
    one_sided: WGAN-LP (``max(0, |g| - 1)^2``) instead of WGAN-GP.
  Returns:
    (scalar penalty, mean gradient norm of the first ``wrt`` input) both float32.
  """
  inputs = list(inputs)

  def total(*xs):
    args = list(inputs)
    for i, x in zip(wrt, xs):
      args[i] = x
    return jnp.sum(critic(*args).astype(jnp.float32))

  grads = jax.grad(total, argnums=tuple(range(len(wrt))))(*[inputs[i] for i in wrt])
  norms = [per_sample_norm(g) for g in grads]
  pen = sum(penalty_from_norm(n, one_sided) for n in norms)
  return jnp.mean(pen), jnp.mean(norms[0])


def total_variation(x, time_axis: int = 1):
  """``mean |x[t+1] - x[t]|`` over every element (the original's TV smoothness term)."""
  x = x.astype(jnp.float32)
  n = x.shape[time_axis]
  d = jax.lax.slice_in_dim(x, 1, n, axis=time_axis) - jax.lax.slice_in_dim(x, 0, n - 1,
                                                                          axis=time_axis)
  return jnp.mean(jnp.abs(d))
