"""A fused (persistent) GRU layer in Pallas: one kernel runs the whole time loop.

``gru_layer_pallas(xproj, h0, w_hh, b_hh)`` computes exactly what ``recurrent_scan("gru", ...)``
computes (PyTorch gate order r, z, n; see :mod:`d2m_jax.nn.rnn`) for one layer and direction:

* the input projection for all steps stays ONE matmul outside (the caller's ``xproj``);
* forward: one ``pallas_call`` whose grid tiles the batch; each program owns a block of
  ``block_b`` sequences, loads the recurrent kernel ``W_hh`` once (kept on chip: registers/shared
  memory) and runs all T steps in a ``lax.fori_loop`` (three (bB, H) x (H, H) dots per step);
* backward (``jax.custom_vjp``): one ``pallas_call`` running the reverse time loop from the saved
  gates (r, z, n, W_hn h + b_hn), accumulating dW_hh and db_hh on chip per program; the per-program
  partial sums (one per batch block) are added outside, as is dW_ih (the caller's matmul).

Layout for the Triton lowering (every load/store a power-of-two size): H is padded to
``Hp = max(16, next_pow2(H))`` per gate, the batch to a multiple of ``block_b`` (a power of two,
>= 16 for Triton's dots). Padding is exact: padded units see zero weights, biases and inputs, so
they start at 0 and stay 0 (h' = 0.5 h), and padded rows of W_hh are zero, so they never feed
the real units; the outputs and gradients are sliced back.

Supported sizes: W_hh on chip needs 3 Hp^2 values per program, and the backward also holds the
three float32 dW accumulators: 3 * 64^2 * (4 + 4) B = 96 KiB at Hp = 64, 384 KiB at Hp = 128 --
more than an H100/H200 SM's 256 KiB register file. So the kernel is used for
``H <= PALLAS_MAX_HIDDEN = 64`` (the style GRU-30, the WGAN GRU-50 and noise GRUs);
:func:`d2m_jax.nn.rnn.resolve_impl` falls back to the unrolled scan for larger H (D2M's 1024,
the style extractor's 512, the WGAN audio GRU's 240) with a one-time logged notice.
``supports(hidden, max_hidden=None)`` lets a benchmark try larger sizes (Triton then spills).

Backends: GPU -> the Triton lowering; CPU -> Pallas interpret mode (slow: for tests); TPU is
not supported here (``resolve_impl`` falls back). GPU speed is not measured yet: ``auto`` never
picks this kernel; ``rnn_impl="pallas"`` opts in.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from d2m_jax import target

PALLAS_MAX_HIDDEN = 64


def _next_pow2(n: int) -> int:
  return 1 << max(0, (int(n) - 1).bit_length())


def padded_hidden(hidden: int) -> int:
  return max(16, _next_pow2(hidden))


def supports(hidden: int, max_hidden: Optional[int] = -1) -> bool:
  """Whether the fused kernel runs this hidden size (``max_hidden`` -1: the module's
  ``PALLAS_MAX_HIDDEN`` at call time; None: any)."""
  if max_hidden == -1:
    max_hidden = PALLAS_MAX_HIDDEN
  return max_hidden is None or padded_hidden(hidden) <= padded_hidden(max_hidden)


def default_block_b(batch: int) -> int:
  return min(64, max(16, _next_pow2(batch)))


def _use_interpret() -> bool:
  return target.backend() != "gpu"


def _compiler_params(hp: int):
  if _use_interpret():
    return None
  from jax.experimental.pallas import triton as plgpu
  return plgpu.CompilerParams(num_warps=4 if hp <= 32 else 8, num_stages=1)


def _dot(a, b, dtype, contract=((1,), (0,))):
  """``a @ b`` (or another contraction) with operands in ``dtype`` and a float32 result."""
  return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), (contract, ((), ())),
                             preferred_element_type=jnp.float32)


def _time_index(s, T, reverse):
  return T - 1 - s if reverse else s


# ------------------------------------------------------------------------------- kernels

def _fwd_kernel(x_ref, h0_ref, w_ref, b_ref, y_ref, *res_refs, T, reverse, dtype):
  """x (3, T, bB, Hp) f32; h0 (bB, Hp); w (3, Hp, Hp); b (3, Hp) -> y (T, bB, Hp) [+ res]."""
  w_r, w_z, w_n = w_ref[0].astype(dtype), w_ref[1].astype(dtype), w_ref[2].astype(dtype)
  b_r, b_z, b_n = b_ref[0], b_ref[1], b_ref[2]

  def step(s, h):
    t = _time_index(s, T, reverse)
    r = jax.nn.sigmoid(x_ref[0, t] + _dot(h, w_r, dtype) + b_r[None, :])
    z = jax.nn.sigmoid(x_ref[1, t] + _dot(h, w_z, dtype) + b_z[None, :])
    hn = _dot(h, w_n, dtype) + b_n[None, :]
    n = jnp.tanh(x_ref[2, t] + r * hn)
    h_new = (1.0 - z) * n + z * h
    y_ref[t] = h_new
    if res_refs:
      res_ref, = res_refs
      res_ref[0, t] = r
      res_ref[1, t] = z
      res_ref[2, t] = n
      res_ref[3, t] = hn
    return h_new

  jax.lax.fori_loop(0, T, step, h0_ref[...].astype(jnp.float32))


def _bwd_kernel(dy_ref, dhT_ref, y_ref, h0_ref, res_ref, w_ref, dx_ref, dh0_ref, dw_ref, db_ref,
                *, T, reverse, dtype):
  """Reverse time loop. dx (3, T, bB, Hp); dh0 (bB, Hp); dw (1, 3, Hp, Hp); db (1, 3, Hp)."""
  w_r, w_z, w_n = w_ref[0].astype(dtype), w_ref[1].astype(dtype), w_ref[2].astype(dtype)
  hp = w_ref.shape[-1]
  h0 = h0_ref[...].astype(jnp.float32)
  t_contract = ((1,), (1,))   # g @ W^T
  b_contract = ((0,), (0,))   # h^T @ g

  def step(k, carry):
    dh, dwr, dwz, dwn, dbr, dbz, dbn = carry
    s = T - 1 - k                                   # processing order, last step first
    t = _time_index(s, T, reverse)
    t_prev = _time_index(jnp.maximum(s - 1, 0), T, reverse)
    h_prev = jnp.where(s > 0, y_ref[t_prev], h0)
    r, z, n, hn = res_ref[0, t], res_ref[1, t], res_ref[2, t], res_ref[3, t]
    dh = dh + dy_ref[t]
    dn = dh * (1.0 - z)
    da_n = dn * (1.0 - n * n)
    da_z = dh * (h_prev - n) * z * (1.0 - z)
    da_r = da_n * hn * r * (1.0 - r)
    g_n = da_n * r                                  # d(W_hn h + b_hn)
    dx_ref[0, t] = da_r
    dx_ref[1, t] = da_z
    dx_ref[2, t] = da_n
    dh = (dh * z + _dot(da_r, w_r, dtype, t_contract) + _dot(da_z, w_z, dtype, t_contract)
          + _dot(g_n, w_n, dtype, t_contract))
    dwr = dwr + _dot(h_prev, da_r, dtype, b_contract)
    dwz = dwz + _dot(h_prev, da_z, dtype, b_contract)
    dwn = dwn + _dot(h_prev, g_n, dtype, b_contract)
    return (dh, dwr, dwz, dwn, dbr + jnp.sum(da_r, axis=0), dbz + jnp.sum(da_z, axis=0),
            dbn + jnp.sum(g_n, axis=0))

  zw = jnp.zeros((hp, hp), jnp.float32)
  zb = jnp.zeros((hp,), jnp.float32)
  dh, dwr, dwz, dwn, dbr, dbz, dbn = jax.lax.fori_loop(
      0, T, step, (dhT_ref[...].astype(jnp.float32), zw, zw, zw, zb, zb, zb))
  dh0_ref[...] = dh
  dw_ref[0, 0] = dwr
  dw_ref[0, 1] = dwz
  dw_ref[0, 2] = dwn
  db_ref[0, 0] = dbr
  db_ref[0, 1] = dbz
  db_ref[0, 2] = dbn


# ------------------------------------------------------------------------ pallas_call wrappers

def _specs(T, bb, hp):
  seq = pl.BlockSpec((T, bb, hp), lambda i: (0, i, 0))
  gates = pl.BlockSpec((3, T, bb, hp), lambda i: (0, 0, i, 0))
  res = pl.BlockSpec((4, T, bb, hp), lambda i: (0, 0, i, 0))
  state = pl.BlockSpec((bb, hp), lambda i: (i, 0))
  weights = pl.BlockSpec((3, hp, hp), lambda i: (0, 0, 0))
  bias = pl.BlockSpec((3, hp), lambda i: (0, 0))
  return seq, gates, res, state, weights, bias


def _forward(x, h0, w, b, *, reverse, dtype, block_b, save):
  _, T, bp, hp = x.shape
  seq, gates, res, state, weights, bias = _specs(T, block_b, hp)
  out_shape = [jax.ShapeDtypeStruct((T, bp, hp), jnp.float32)]
  out_specs = [seq]
  if save:
    out_shape.append(jax.ShapeDtypeStruct((4, T, bp, hp), jnp.float32))
    out_specs.append(res)
  kernel = functools.partial(_fwd_kernel, T=T, reverse=reverse, dtype=dtype)
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=(bp // block_b,),
      in_specs=[gates, state, weights, bias], out_specs=out_specs,
      interpret=_use_interpret(), compiler_params=_compiler_params(hp),
      name="gru_fwd_reverse" if reverse else "gru_fwd")(x, h0, w, b)


def _backward(dy, dhT, y, h0, res, w, *, reverse, dtype, block_b):
  T, bp, hp = y.shape
  nb = bp // block_b
  seq, gates, res_spec, state, weights, _ = _specs(T, block_b, hp)
  kernel = functools.partial(_bwd_kernel, T=T, reverse=reverse, dtype=dtype)
  return pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct((3, T, bp, hp), jnp.float32),
                 jax.ShapeDtypeStruct((bp, hp), jnp.float32),
                 jax.ShapeDtypeStruct((nb, 3, hp, hp), jnp.float32),
                 jax.ShapeDtypeStruct((nb, 3, hp), jnp.float32)],
      grid=(nb,),
      in_specs=[seq, state, seq, state, res_spec, weights],
      out_specs=[gates, state, pl.BlockSpec((1, 3, hp, hp), lambda i: (i, 0, 0, 0)),
                 pl.BlockSpec((1, 3, hp), lambda i: (i, 0, 0))],
      interpret=_use_interpret(), compiler_params=_compiler_params(hp),
      name="gru_bwd_reverse" if reverse else "gru_bwd")(dy, dhT, y, h0, res, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _gru_padded(x, h0, w, b, reverse, dtype, block_b):
  y, = _forward(x, h0, w, b, reverse=reverse, dtype=dtype, block_b=block_b, save=False)
  return y


def _gru_padded_fwd(x, h0, w, b, reverse, dtype, block_b):
  y, res = _forward(x, h0, w, b, reverse=reverse, dtype=dtype, block_b=block_b, save=True)
  return y, (y, h0, res, w)


def _gru_padded_bwd(reverse, dtype, block_b, saved, dy):
  y, h0, res, w = saved
  dhT = jnp.zeros_like(h0)   # the final state is read from y outside, so its cotangent is in dy
  dx, dh0, dw, db = _backward(dy, dhT, y, h0, res, w, reverse=reverse, dtype=dtype,
                              block_b=block_b)
  return dx, dh0, jnp.sum(dw, axis=0).astype(w.dtype), jnp.sum(db, axis=0)


_gru_padded.defvjp(_gru_padded_fwd, _gru_padded_bwd)


# ------------------------------------------------------------------------------ public entry

def gru_layer_pallas(xproj, h0, w_hh, b_hh, *, reverse: bool = False, dtype=jnp.float32,
                     length: Optional[int] = None, block_b: Optional[int] = None):
  """One GRU layer/direction with the fused kernel; same contract as ``recurrent_scan("gru")``.

  Args:
    xproj: hoisted input projection (T, B, 3H) time-major, or (B, 3H) with ``length=T`` for a
      constant input (broadcast here; its gradient is summed over time by autodiff).
    h0: (B, H) initial state.  w_hh (H, 3H), b_hh (3H,): recurrent kernel and bias.
    reverse: run from the last step to the first (outputs stay in input time order).
    dtype: matmul operand dtype (bf16 or f32); gates, state and accumulation are float32.
    block_b: sequences per program (power of two >= 16; default min(64, next_pow2(B))).
  Returns:
    (outputs (T, B, H) float32, final state (B, H) float32).
  """
  H = w_hh.shape[0]
  if length is not None:
    xproj = jnp.broadcast_to(xproj[None], (length,) + xproj.shape)
  T, B, _ = xproj.shape
  hp = padded_hidden(H)
  bb = block_b or default_block_b(B)
  if bb < 16 or bb & (bb - 1):
    raise ValueError(f"block_b must be a power of two >= 16, got {bb}")
  bp = -(-B // bb) * bb
  # (T, B, 3H) -> (3, T, Bp, Hp); (H, 3H) -> (3, Hp, Hp); (3H,) -> (3, Hp).
  x = jnp.moveaxis(xproj.astype(jnp.float32).reshape(T, B, 3, H), 2, 0)
  x = jnp.pad(x, ((0, 0), (0, 0), (0, bp - B), (0, hp - H)))
  w = jnp.moveaxis(w_hh.reshape(H, 3, H), 1, 0)
  w = jnp.pad(w, ((0, 0), (0, hp - H), (0, hp - H)))
  b = jnp.pad(b_hh.astype(jnp.float32).reshape(3, H), ((0, 0), (0, hp - H)))
  h = jnp.pad(h0.astype(jnp.float32), ((0, bp - B), (0, hp - H)))
  y = _gru_padded(x, h, w, b, bool(reverse), jnp.dtype(dtype), bb)[:, :B, :H]
  return y, (y[0] if reverse else y[-1])
