"""The recurrent cell arithmetic shared by the scanned GRU (``rnn.py``) and its written-out
backward (``gru_seq_grad.py``): one matmul convention and one set of GRU gate equations, so the
two paths cannot drift apart."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def mixed_dot(x: Array, w: Array, dtype, spec: Optional[str] = None) -> Array:
  """Matmul in the compute ``dtype`` with a float32 result.

  (``preferred_element_type=float32`` on bfloat16 operands is not supported by XLA's CPU
  backend, so the product is taken in ``dtype`` and cast; GPUs and TPUs accumulate bf16
  products in float32 internally either way.)
  """
  x, w = x.astype(dtype), w.astype(dtype)
  y = jnp.dot(x, w) if spec is None else jnp.einsum(spec, x, w)
  return y.astype(jnp.float32)


def gru_gates(xp: Array, hp: Array, h: Array):
  """PyTorch's GRU step from the input projection ``xp`` (B, 3H) and the hidden projection
  ``hp`` (B, 3H, bias included) of state ``h`` (B, H): ``(h_new, r, z, n, hn)`` with ``hn`` the
  hidden part of the candidate (what the backward needs)."""
  H = h.shape[-1]
  xp = xp.astype(jnp.float32)
  r = jax.nn.sigmoid(xp[:, :H] + hp[:, :H])
  z = jax.nn.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
  hn = hp[:, 2 * H:]
  n = jnp.tanh(xp[:, 2 * H:] + r * hn)
  return (1.0 - z) * n + z * h, r, z, n, hn
