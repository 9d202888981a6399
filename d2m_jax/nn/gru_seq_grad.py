"""A GRU layer whose backward pass is written out: one reverse scan, weight gradients after it.

``gru_layer_seq_grad`` computes exactly what :func:`d2m_jax.nn.rnn.recurrent_scan` computes for
a GRU (the same scan, the same cell arithmetic), with a hand-written ``jax.custom_vjp``:

* forward: the scan, keeping the gates ``r``, ``z``, ``n`` and ``W_hn h + b_hn`` of every step;
* backward: one reverse scan whose body is the elementwise gate derivatives and the single
  recurrent product ``dh_prev = z * dh + dg_h @ W_hh^T`` (``W_hh^T`` materialised once, so it is
  a row-major GEMM); the per-step gate gradients are stacked, and after the scan
  ``dW_hh = sum_t h_{t-1}^T dg_h[t]`` is ONE (H, T*B) x (T*B, 3H) GEMM and ``db_hh`` one sum.

Autodiff of the scan instead accumulates ``dW_hh`` inside the loop: T small (H, B) x (B, 3H)
GEMMs plus T read-modify-writes of the whole (H, 3H) accumulator, next to the per-step
``dh`` GEMM against a transposed operand. On XLA:CPU that cost the GRU training steps time
against PyTorch (docs/performance.md, "CPU training against the PyTorch peer"). The maths is the
same; only the order of the float32 sums in ``dW_hh``/``db_hh`` differs (tested against autodiff
and a float64 reference in ``tests/test_gru_seq_grad.py``).

Derivatives (gate order r, z, n as PyTorch; ``a_*`` pre-activations, ``hn = W_hn h + b_hn``)::

    h' = (1 - z) n + z h
    dz = dh' (h - n);   dn = dh' (1 - z);   da_n = dn (1 - n^2)
    da_r = da_n hn r (1 - r);   da_z = dz z (1 - z)
    dg_x = [da_r, da_z, da_n]          (the input projection's gradient)
    dg_h = [da_r, da_z, da_n r]        (the recurrent projection's gradient)
    dh = dh' z + dg_h W_hh^T
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from d2m_jax.nn.cells import gru_gates, mixed_dot

Array = jax.Array


def _forward(xproj, h0, w, b, reverse, unroll, dtype, length, keep):
  """The scan. ``keep``: also return the per-step (h, r, z, n, hn) for the backward."""
  wc = w.astype(dtype)
  bf = b.astype(jnp.float32)

  def step(h, xp):
    out = gru_gates(xp, mixed_dot(h, wc, dtype) + bf, h)
    return out[0], (out if keep else out[0])

  if length is not None:  # constant input: the same projection at every step
    const = xproj
    body = lambda h, _: step(h, const)  # noqa: E731
    return jax.lax.scan(body, h0, None, length=length, reverse=reverse, unroll=unroll)
  return jax.lax.scan(step, h0, xproj, reverse=reverse, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def gru_layer_seq_grad(xproj: Array, h0: Array, w_hh: Array, b_hh: Array, reverse: bool,
                       unroll: int, dtype, length: Optional[int]):
  """One GRU layer/direction: (outputs (T, B, H) float32, final state (B, H)).

  Arguments as :func:`d2m_jax.nn.rnn.recurrent_scan` (``xproj`` time-major (T, B, 3H), or
  (B, 3H) with ``length`` for a constant input).
  """
  h_t, ys = _forward(xproj, h0, w_hh, b_hh, reverse, unroll, dtype, length, keep=False)
  return ys, h_t


def _fwd(xproj, h0, w_hh, b_hh, reverse, unroll, dtype, length):
  h_t, (ys, r, z, n, hn) = _forward(xproj, h0, w_hh, b_hh, reverse, unroll, dtype, length,
                                    keep=True)
  return (ys, h_t), (xproj, h0, w_hh, b_hh, ys, r, z, n, hn)


def _bwd(reverse, unroll, dtype, length, res, cts):
  xproj, h0, w_hh, b_hh, ys, r, z, n, hn = res
  d_ys, d_ht = cts
  # h_{t-1} of every step, in time order (the reverse direction's previous step is t + 1).
  if reverse:
    h_prev = jnp.concatenate([ys[1:], h0[None].astype(ys.dtype)], axis=0)
  else:
    h_prev = jnp.concatenate([h0[None].astype(ys.dtype), ys[:-1]], axis=0)
  w_t = jnp.transpose(w_hh.astype(dtype))

  def step(dh_next, inp):
    dy, r_, z_, n_, hn_, hp_ = inp
    dh = dh_next + dy
    dz = dh * (hp_ - n_)
    da_n = dh * (1.0 - z_) * (1.0 - n_ * n_)
    da_r = da_n * hn_ * r_ * (1.0 - r_)
    da_z = dz * z_ * (1.0 - z_)
    dg_h = jnp.concatenate([da_r, da_z, da_n * r_], axis=-1)
    dg_x = jnp.concatenate([da_r, da_z, da_n], axis=-1)
    dh_prev = dh * z_ + mixed_dot(dg_h, w_t, dtype)
    return dh_prev, (dg_x, dg_h)

  dh0, (dg_x, dg_h) = jax.lax.scan(step, d_ht.astype(jnp.float32),
                                   (d_ys.astype(jnp.float32), r, z, n, hn, h_prev),
                                   reverse=not reverse, unroll=unroll)
  T, B, G = dg_h.shape
  H = h0.shape[-1]
  dw = jax.lax.dot_general(h_prev.reshape(T * B, H).astype(dtype),
                           dg_h.reshape(T * B, G).astype(dtype),
                           (((0,), (0,)), ((), ()))).astype(jnp.float32)
  db = jnp.sum(dg_h, axis=(0, 1))
  dx = dg_x if length is None else jnp.sum(dg_x, axis=0)
  return (dx.astype(xproj.dtype), dh0.astype(h0.dtype), dw.astype(w_hh.dtype),
          db.astype(b_hh.dtype))


gru_layer_seq_grad.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def input_projection(x: Array, w_ih: Array, dtype) -> Array:
  """The hoisted input projection ``x (B, T, D) @ w_ih (D, G)`` -> time-major (T, B, G) float32,
  whose gradient w.r.t. ``x`` multiplies by a materialised ``w_ih^T`` (a row-major GEMM; autodiff
  of the einsum takes the transposed operand, slow on XLA:CPU). Same maths as
  ``mixed_dot(x, w_ih, dtype, "btd,dg->tbg")``."""
  return _project(x, w_ih, dtype)


def _project(x, w_ih, dtype):
  return jnp.einsum("btd,dg->tbg", x.astype(dtype), w_ih.astype(dtype)).astype(jnp.float32)


def _proj_fwd(x, w_ih, dtype):
  return _project(x, w_ih, dtype), (x, w_ih)


def _proj_bwd(dtype, res, g):
  x, w_ih = res
  w_t = jnp.transpose(w_ih.astype(dtype))
  gd = g.astype(dtype)
  dx = jnp.einsum("tbg,gd->btd", gd, w_t).astype(jnp.float32)
  dw = jnp.einsum("btd,tbg->dg", x.astype(dtype), gd).astype(jnp.float32)
  return dx.astype(x.dtype), dw.astype(w_ih.dtype)


input_projection.defvjp(_proj_fwd, _proj_bwd)
