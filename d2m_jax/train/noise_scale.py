"""The gradient noise scale measured online (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", appendix A), as an optax wrapper around the accumulating optimiser.

Over the k micro-steps of one accumulated update the wrapper sees each micro-batch gradient
g_i (batch B_small = data.batch_size, over all devices) and keeps their sum. At the k-th it has

  |G_small|^2 = mean_i |g_i|^2      (batch B_small)
  |G_big|^2   = |mean_i g_i|^2      (batch B_big = k B_small)

and the unbiased estimates (E|G_B|^2 = |G|^2 + tr(Sigma)/B):

  |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
  tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

Each is noisy alone, so it keeps bias-corrected EMAs of both (decay ``ema``) and the ratio of the
EMAs, B_simple = tr(Sigma)/|G|^2 (the batch beyond which larger batches stop buying fewer steps
roughly linearly). Cost per step: one squared norm and one add over the gradient tree, and one
gradient-sized buffer (measured in benchmarks/batch_scaling.py).
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax


class NoiseScaleState(NamedTuple):
  micro: jax.Array        # micro-steps seen in the current accumulation cycle
  sum_sq: jax.Array       # sum_i |g_i|^2 this cycle
  acc: Any                # sum_i g_i this cycle (gradient-sized)
  updates: jax.Array      # completed cycles
  weight: jax.Array       # 1 - ema^updates: the EMAs' bias correction
  g2_ema: jax.Array       # EMA of the |G|^2 estimate
  trace_ema: jax.Array    # EMA of the tr(Sigma) estimate
  g2_last: jax.Array      # the last cycle's estimates, unsmoothed
  trace_last: jax.Array
  inner: Any              # the wrapped optimiser's state


def _sq_norm(tree) -> jax.Array:
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


def estimates(small_sq: jax.Array, big_sq: jax.Array, b_small: float, b_big: float):
  """(|G|^2, tr(Sigma)) unbiased from mean squared norms at two batch sizes."""
  g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
  trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
  return g2, trace


def noise_scale(inner: optax.GradientTransformation, k: int, b_small: int,
                ema: float = 0.95) -> optax.GradientTransformationExtraArgs:
  """``inner`` (which accumulates k micro-steps itself, e.g. optax.MultiSteps) plus the noise
  scale estimate from the k micro-batch gradients it is fed."""
  if k < 2:
    raise ValueError("noise_scale needs k >= 2 micro-batches per update")
  b_big = float(k * b_small)

  def init(params):
    z = jnp.zeros((), jnp.float32)
    return NoiseScaleState(jnp.zeros((), jnp.int32), z,
                           jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
                           jnp.zeros((), jnp.int32), z, z, z, z, z, inner.init(params))

  def update(updates, state, params=None, **extra):
    out, inner_state = inner.update(updates, state.inner, params, **extra)
    acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), state.acc, updates)
    sum_sq = state.sum_sq + _sq_norm(updates)
    micro = state.micro + 1
    done = micro >= k
    g2, trace = estimates(sum_sq / k, _sq_norm(acc) / (k * k), float(b_small), b_big)
    n = state.updates + done.astype(jnp.int32)
    keep = lambda new, old: jnp.where(done, new, old)  # noqa: E731
    new = NoiseScaleState(
        micro=jnp.where(done, 0, micro),
        sum_sq=jnp.where(done, 0.0, sum_sq),
        acc=jax.tree.map(lambda a: jnp.where(done, jnp.zeros_like(a), a), acc),
        updates=n,
        weight=keep(ema * state.weight + (1 - ema), state.weight),
        g2_ema=keep(ema * state.g2_ema + (1 - ema) * g2, state.g2_ema),
        trace_ema=keep(ema * state.trace_ema + (1 - ema) * trace, state.trace_ema),
        g2_last=keep(g2, state.g2_last), trace_last=keep(trace, state.trace_last),
        inner=inner_state)
    return out, new

  return optax.GradientTransformationExtraArgs(init, update)


def metrics(state: NoiseScaleState) -> Dict[str, jax.Array]:
  """Bias-corrected EMAs of |G|^2 and tr(Sigma) (divided by 1 - ema^n after n cycles; NaN
  before the first), B_simple = tr(Sigma) / |G|^2, and the last cycle's raw estimates."""
  w = jnp.where(state.weight > 0, state.weight, jnp.nan)
  g2, trace = state.g2_ema / w, state.trace_ema / w
  b_simple = jnp.where(g2 > 0, trace / jnp.where(g2 > 0, g2, 1.0), jnp.nan)
  return {"gns_g2": g2, "gns_trace": trace, "gns_b_simple": b_simple,
          "gns_g2_last": state.g2_last, "gns_trace_last": state.trace_last}
