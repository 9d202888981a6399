"""A GRU layer whose backward pass takes the recurrent weight gradient in ONE matmul.

Autodiff of ``lax.scan`` accumulates ``dW_hh += h_{t-1}^T dhp_t`` inside the reverse loop: a
(H, B) x (B, 3H) product per step whose inner dimension is only the batch, read-modify-writing
the whole (H, 3H) accumulator every step (12.6 MB per step for H = 1024). Here the reverse loop
only carries ``dh`` (one (B, 3H) x (3H, H) matmul per step) and emits the per-step gate
gradients; after the loop ``dW_hh = H_prev^T dHP`` is one (H, T*B) x (T*B, 3H) matmul and the
biases and input-projection gradients are sums / the stacked gate gradients. The maths is the
GRU of :mod:`d2m_jax.nn.rnn` (PyTorch's gate order r, z, n); only the order of the sums in the
weight gradient differs (float rounding).

Used by ``rnn_impl="hoisted"`` (GRU; LSTMs run the plain scan).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _dot(x, w, dtype):
  return jnp.dot(x.astype(dtype), w.astype(dtype)).astype(jnp.float32)


def _forward(xproj, h0, w, b, dtype, unroll):
  H = h0.shape[-1]

  def body(h, xp):
    hp = _dot(h, w, dtype) + b
    xp = xp.astype(jnp.float32)
    r = jax.nn.sigmoid(xp[:, :H] + hp[:, :H])
    z = jax.nn.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
    n = jnp.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
    h_new = (1.0 - z) * n + z * h
    return h_new, (h_new, h, r, z, n, hp[:, 2 * H:])

  return jax.lax.scan(body, h0, xproj, unroll=unroll)


def make_gru_scan(dtype=jnp.float32, unroll: int = 1):
  """``gru(xproj (T, B, 3H), h0 (B, H), w_hh (H, 3H), b_hh (3H,)) -> (ys (T, B, H), h_T)``."""

  @jax.custom_vjp
  def gru(xproj, h0, w, b):
    h_last, (ys, *_) = _forward(xproj, h0, w, b.astype(jnp.float32), dtype, unroll)
    return ys, h_last

  def fwd(xproj, h0, w, b):
    h_last, (ys, hprev, r, z, n, hpn) = _forward(xproj, h0, w, b.astype(jnp.float32), dtype,
                                                 unroll)
    return (ys, h_last), (hprev, r, z, n, hpn, w, b, jnp.zeros((0,), xproj.dtype))

  def bwd(res, cot):
    hprev, r, z, n, hpn, w, b, x_probe = res
    ys_bar, hlast_bar = cot
    wt = w.T

    def body(dh, inputs):
      y_bar, hp_, r_, z_, n_, hpn_ = inputs
      dh = dh + y_bar
      dn = dh * (1.0 - z_)
      dz = dh * (hp_ - n_)
      da_n = dn * (1.0 - n_ * n_)
      da_z = dz * z_ * (1.0 - z_)
      da_r = da_n * hpn_ * r_ * (1.0 - r_)
      dhp = jnp.concatenate([da_r, da_z, da_n * r_], axis=-1)          # d(h W + b)
      dxp = jnp.concatenate([da_r, da_z, da_n], axis=-1)               # d(xproj)
      dh_prev = dh * z_ + _dot(dhp, wt, dtype)
      return dh_prev, (dxp, dhp)

    dh0, (dxp, dhp) = jax.lax.scan(body, hlast_bar, (ys_bar, hprev, r, z, n, hpn),
                                   reverse=True, unroll=unroll)
    T, B, G = dhp.shape
    dw = _dot(hprev.reshape(T * B, -1).T, dhp.reshape(T * B, G), dtype)
    db = dhp.sum(axis=(0, 1))
    return dxp.astype(x_probe.dtype), dh0, dw.astype(w.dtype), db.astype(b.dtype)

  gru.defvjp(fwd, bwd)
  return gru


def gru_layer_hoisted(xproj, h0, w_hh, b_hh, *, reverse=False, dtype=jnp.float32,
                      length=None, unroll: int = 1):
  """One GRU layer/direction like ``rnn.recurrent_scan``: xproj (T, B, 3H), or (B, 3H) with
  ``length`` for a constant input. Returns (outputs (T, B, H) in input time order, h_final)."""
  if length is not None:
    xproj = jnp.broadcast_to(xproj[None], (length,) + xproj.shape)
  if reverse:
    xproj = xproj[::-1]
  ys, h = make_gru_scan(dtype, unroll)(xproj, h0.astype(jnp.float32), w_hh, b_hh)
  return (ys[::-1] if reverse else ys), h
