"""A GRU layer whose backward pass is written out: one reverse scan, weight gradients after it.

``gru_layer_seq_grad`` computes exactly what :func:`d2m_jax.nn.rnn.recurrent_scan` computes for
a GRU (the same scan, the same cell arithmetic), with a hand-written ``jax.custom_vjp``:

* forward: the scan, keeping the gates ``r``, ``z``, ``n`` and ``W_hn h + b_hn`` of every step;
* backward: one reverse scan whose body is the elementwise gate derivatives and the single
  recurrent product ``dh_prev = z * dh + dg_h @ W_hh^T`` (``W_hh^T`` materialised once, so it is
  a row-major GEMM); the per-step gate gradients are stacked, and after the scan
  ``dW_hh = sum_t h_{t-1}^T dg_h[t]`` is ONE (H, T*B) x (T*B, 3H) GEMM and ``db_hh`` one sum;
  a constant input's gradient (the sum over steps of the input-side gate gradients) is summed in
  the reverse scan's carry instead of stacking (T, B, 3H) and reducing it afterwards (XLA:CPU's
  reduction over the leading axis of that array took 1.7 s of the B = 256 decomposition step);
* the input projection's bias ``b_x`` is added inside each step, not to the whole (T, B, 3H)
  projection first (the same float32 sums, one pass over that array less).

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


def _forward(xproj, h0, w, b, b_x, reverse, unroll, dtype, length, keep):
  """The scan. ``keep``: also return the per-step (h, r, z, n, hn) for the backward. ``b_x``
  (the input projection's bias) is added to each step's ``xproj`` inside the step: the same
  float32 sum as adding it to the whole (T, B, 3H) array first, without that extra pass. With a
  constant input ``b_x`` may be per step, (T, 3H): a term every sequence shares (a clock)."""
  wc = w.astype(dtype)
  bf = b.astype(jnp.float32)

  def step(h, xp, bx):
    out = gru_gates(xp.astype(jnp.float32) + bx, mixed_dot(h, wc, dtype) + bf, h)
    return out[0], (out if keep else out[0])

  if length is not None:  # constant input: the same projection at every step
    const = xproj
    if b_x.ndim == 2:   # ... plus a per-step term shared by the batch
      return jax.lax.scan(lambda h, bx: step(h, const, bx), h0, b_x, reverse=reverse,
                          unroll=unroll)
    body = lambda h, _: step(h, const, b_x)  # noqa: E731
    return jax.lax.scan(body, h0, None, length=length, reverse=reverse, unroll=unroll)
  return jax.lax.scan(lambda h, xp: step(h, xp, b_x), h0, xproj, reverse=reverse, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def gru_layer_seq_grad(xproj: Array, h0: Array, w_hh: Array, b_hh: Array, b_x: Array,
                       reverse: bool, unroll: int, dtype, length: Optional[int]):
  """One GRU layer/direction: (outputs (T, B, H) float32, final state (B, H)).

  Arguments as :func:`d2m_jax.nn.rnn.recurrent_scan` (``xproj`` time-major (T, B, 3H), or
  (B, 3H) with ``length`` for a constant input; ``b_x`` (3H,) float32 added to it per step,
  or with a constant input (T, 3H): a per-step term shared by the batch, whose gradient is
  summed over the batch inside the reverse scan).
  """
  h_t, ys = _forward(xproj, h0, w_hh, b_hh, b_x, reverse, unroll, dtype, length, keep=False)
  return ys, h_t


def _fwd(xproj, h0, w_hh, b_hh, b_x, reverse, unroll, dtype, length):
  h_t, (ys, r, z, n, hn) = _forward(xproj, h0, w_hh, b_hh, b_x, reverse, unroll, dtype, length,
                                    keep=True)
  return (ys, h_t), (xproj, h0, w_hh, b_hh, b_x, ys, r, z, n, hn)


def _bwd(reverse, unroll, dtype, length, res, cts):
  xproj, h0, w_hh, b_hh, b_x, ys, r, z, n, hn = res
  d_ys, d_ht = cts
  # h_{t-1} of every step, in time order (the reverse direction's previous step is t + 1).
  if reverse:
    h_prev = jnp.concatenate([ys[1:], h0[None].astype(ys.dtype)], axis=0)
  else:
    h_prev = jnp.concatenate([h0[None].astype(ys.dtype), ys[:-1]], axis=0)
  w_t = jnp.transpose(w_hh.astype(dtype))

  const = length is not None
  per_step_bias = const and b_x.ndim == 2

  def step(carry, inp):
    dh_next, dx_sum = carry
    dy, r_, z_, n_, hn_, hp_ = inp
    dh = dh_next + dy
    dz = dh * (hp_ - n_)
    da_n = dh * (1.0 - z_) * (1.0 - n_ * n_)
    da_r = da_n * hn_ * r_ * (1.0 - r_)
    da_z = dz * z_ * (1.0 - z_)
    dg_h = jnp.concatenate([da_r, da_z, da_n * r_], axis=-1)
    dg_x = jnp.concatenate([da_r, da_z, da_n], axis=-1)
    dh_prev = dh * z_ + mixed_dot(dg_h, w_t, dtype)
    if per_step_bias:   # and the shared per-step term's: the sum over the batch, per step
      return (dh_prev, dx_sum + dg_x), (jnp.sum(dg_x, axis=0), dg_h)
    if const:   # a constant input's gradient is the sum over steps: kept in the carry
      return (dh_prev, dx_sum + dg_x), dg_h
    return (dh_prev, dx_sum), (dg_x, dg_h)

  B_, G_ = ys.shape[1], w_hh.shape[-1]
  zero = jnp.zeros((B_, G_) if const else (), jnp.float32)
  (dh0, dx_sum), stacked = jax.lax.scan(step, (d_ht.astype(jnp.float32), zero),
                                        (d_ys.astype(jnp.float32), r, z, n, hn, h_prev),
                                        reverse=not reverse, unroll=unroll)
  db_steps = None
  if per_step_bias:
    db_steps, dg_h = stacked
  elif const:
    dg_h = stacked
  else:
    dg_x, dg_h = stacked
  T, B, G = dg_h.shape
  H = h0.shape[-1]
  dw = jax.lax.dot_general(h_prev.reshape(T * B, H).astype(dtype),
                           dg_h.reshape(T * B, G).astype(dtype),
                           (((0,), (0,)), ((), ()))).astype(jnp.float32)
  dx = dx_sum if const else dg_x
  db = jnp.sum(dg_h, axis=(0, 1))
  db_x = db_steps if per_step_bias else jnp.sum(dx, axis=tuple(range(dx.ndim - 1)))
  return (dx.astype(xproj.dtype), dh0.astype(h0.dtype), dw.astype(w_hh.dtype),
          db.astype(b_hh.dtype), db_x.astype(b_x.dtype))


gru_layer_seq_grad.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def input_projection(x: Array, w_ih: Array, dtype) -> Array:
  """The hoisted input projection of a time-major ``x (T, B, D) @ w_ih (D, G)`` -> (T, B, G)
  float32, as ONE row-major (T*B, D) x (D, G) GEMM; its gradient w.r.t. ``x`` multiplies by a
  materialised ``w_ih^T`` (a row-major GEMM; autodiff takes the transposed operand, slow on
  XLA:CPU). Same maths as ``mixed_dot(x, w_ih, dtype, "tbd,dg->tbg")``.

  Time-major in and out: with a batch-major ``x`` (the einsum ``btd,dg->tbg``) XLA:CPU produced
  the projection and its ``dx`` with transposed layouts and paid a copy of the (T, B, G) array
  for each (docs/performance.md, the B = 256 profile)."""
  return _project(x, w_ih, dtype)


def _rows(a):
  return a.reshape(-1, a.shape[-1])


def _project(x, w_ih, dtype):
  T, B, _ = x.shape
  y = jnp.dot(_rows(x).astype(dtype), w_ih.astype(dtype)).astype(jnp.float32)
  return y.reshape(T, B, -1)


def _proj_fwd(x, w_ih, dtype):
  return _project(x, w_ih, dtype), (x, w_ih)


def _proj_bwd(dtype, res, g):
  x, w_ih = res
  # Materialised: without the barrier XLA folds the transpose into the dot (a transposed right
  # operand, which YNNPACK runs slower).
  w_t = jax.lax.optimization_barrier(jnp.transpose(w_ih.astype(dtype)))
  gd = _rows(g).astype(dtype)
  dx = jnp.dot(gd, w_t).astype(jnp.float32).reshape(x.shape)
  dw = jax.lax.dot_general(_rows(x).astype(dtype), gd,
                           (((0,), (0,)), ((), ()))).astype(jnp.float32)
  return dx.astype(x.dtype), dw.astype(w_ih.dtype)


input_projection.defvjp(_proj_fwd, _proj_bwd)
