"""Project Kakashi (ROODAY/Kakashi): a sequence-to-sequence LSTM from MFCC frames to poses.
Spec: ``../shared/specs/wgan_learn2dance_kakashi.md`` §3.

* Encoder: Dropout(0.5) on the MFCC input -> LSTM(20 -> 512, 2 layers, dropout 0.5 between
  layers) (``d2m_jax.nn.LSTM``: hoisted input projection) -> final (h, c).
* Decoder: previous pose (B, P) -> per-sample input dropout (the original's ``Dropout2d`` on a
  (1, B, P) tensor drops whole per-example input vectors, PyTorch 1.1 semantics) ->
  LSTM(P -> 512, 2 layers, dropout 0.5) started from the encoder's (h, c) -> Linear(512 -> P).
* Teacher forcing: the decoder's input at step t > 0 is the ground-truth pose t-1 with
  probability ``tf_ratio`` (one coin per step for the whole batch, as the original), otherwise its
  own prediction; the coin is drawn **inside** the ``lax.scan`` from ``fold_in(key, t)``.
* Init: every parameter U(-0.08, 0.08), as the original.

The decoder is its own ``lax.scan`` because its input depends on its previous output. What can be
hoisted is: the ground-truth half of the layer-0 input projection (``gt @ W_ih0`` for all steps is
one matmul before the scan; the per-sample dropout scale commutes with it) -- the feedback half
``pred @ W_ih0`` is per step. Parameter names and layout equal ``d2m_jax.nn.LSTM``'s (so
``lstm_reference_numpy`` checks the decoder step in ``tests/test_kakashi.py``).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.nn import LSTM, mixed_dot
from d2m_jax.nn.rnn import resolve_impl, scan_unroll
from d2m_jax.nn.init import uniform_init

INIT = uniform_init(0.08)


class Encoder(nn.Module):
  hidden: int = 512
  num_layers: int = 2
  dropout: float = 0.5
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, mfcc, train: bool):
    x = nn.Dropout(self.dropout)(mfcc, deterministic=not train)
    _, state = LSTM(self.hidden, num_layers=self.num_layers, dropout_rate=self.dropout,
                    dtype=self.dtype, impl=self.rnn_impl, kernel_init=INIT, recurrent_init=INIT,
                    bias_init=INIT, name="lstm")(x, deterministic=not train)
    return state  # (h (L, B, H), c (L, B, H))


class Decoder(nn.Module):
  """Autoregressive 2-layer LSTM decoder as one ``lax.scan`` with per-step teacher forcing."""
  out_dim: int
  hidden: int = 512
  num_layers: int = 2
  dropout: float = 0.5
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, state, seed, targets, key, tf_ratio, train: bool):
    """Decodes ``targets.shape[1]`` steps.

    Args:
      state: encoder (h, c), each (L, B, H).
      seed: (B, P) the first input pose.
      targets: (B, T, P) ground truth used for teacher forcing (step t may get targets[:, t-1]).
      key: PRNG key for the coins and the dropout masks (unused when not training and
        tf_ratio is 0).
      tf_ratio: probability of feeding the ground truth (scalar, may be traced).
      train: enables the dropouts.
    Returns:
      (B, T, P) float32 predictions.
    """
    L, H, P = self.num_layers, self.hidden, self.out_dim
    ps = []
    for layer in range(L):
      d_in = P if layer == 0 else H
      ps.append((self.param(f"w_ih_l{layer}", INIT, (d_in, 4 * H)),
                 self.param(f"w_hh_l{layer}", INIT, (H, 4 * H)),
                 self.param(f"b_ih_l{layer}", INIT, (4 * H,)),
                 self.param(f"b_hh_l{layer}", INIT, (4 * H,))))
    w_out = self.param("out_kernel", INIT, (H, P))
    b_out = self.param("out_bias", INIT, (P,))
    B, T, _ = targets.shape
    dt = self.dtype
    # Hoisted: ground-truth inputs [seed, targets[:, :-1]] projected for all steps at once.
    gt_in = jnp.concatenate([seed[:, None], targets[:, :-1]], 1)
    gt_proj = mixed_dot(gt_in, ps[0][0], dt, "btd,dg->tbg")       # (T, B, 4H), no bias
    keep = 1.0 - self.dropout

    def cell(xp, h, c, w_hh, b_hh):
      g = xp + mixed_dot(h, w_hh, dt) + b_hh
      i = jax.nn.sigmoid(g[:, :H]); f = jax.nn.sigmoid(g[:, H:2 * H])
      gg = jnp.tanh(g[:, 2 * H:3 * H]); o = jax.nn.sigmoid(g[:, 3 * H:])
      c = f * c + i * gg
      return o * jnp.tanh(c), c

    def step(carry, xs):
      h, c, prev = carry
      t, gtp = xs
      kt = jax.random.fold_in(key, t)
      k_coin, k_in, k_mid = jax.random.split(kt, 3)
      use_gt = (t == 0) | (jax.random.uniform(k_coin) < tf_ratio)
      if train and self.dropout > 0:
        scale = jax.random.bernoulli(k_in, keep, (B, 1)).astype(jnp.float32) / keep
      else:
        scale = jnp.ones((B, 1), jnp.float32)
      fb_proj = mixed_dot(prev, ps[0][0], dt)
      xp = scale * jnp.where(use_gt, gtp, fb_proj) + ps[0][2]
      new_h, new_c = [], []
      for layer in range(L):
        w_ih, w_hh, b_ih, b_hh = ps[layer]
        if layer > 0:
          x_in = new_h[-1]
          if train and self.dropout > 0:
            m = jax.random.bernoulli(jax.random.fold_in(k_mid, layer), keep, x_in.shape)
            x_in = x_in * m.astype(jnp.float32) / keep
          xp = mixed_dot(x_in, w_ih, dt) + b_ih
        hl, cl = cell(xp, h[layer], c[layer], w_hh, b_hh)
        new_h.append(hl); new_c.append(cl)
      pred = mixed_dot(new_h[-1], w_out, dt) + b_out
      return (jnp.stack(new_h), jnp.stack(new_c), pred), pred

    h0, c0 = state
    carry = (h0.astype(jnp.float32), c0.astype(jnp.float32), seed.astype(jnp.float32))
    unroll = scan_unroll(resolve_impl(self.rnn_impl, "lstm", H), T)  # no Pallas LSTM kernel
    _, preds = jax.lax.scan(step, carry, (jnp.arange(T), gt_proj), unroll=unroll)
    return jnp.transpose(preds, (1, 0, 2))


class Seq2Seq(nn.Module):
  """MFCC (B, T_in, 20) -> poses (B, T_out, P): encoder state -> decoder from ``seed``."""
  out_dim: int = 69
  hidden: int = 512
  num_layers: int = 2
  dropout: float = 0.5
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  def setup(self):
    self.encoder = Encoder(self.hidden, self.num_layers, self.dropout, self.dtype, self.rnn_impl)
    self.decoder = Decoder(self.out_dim, self.hidden, self.num_layers, self.dropout, self.dtype,
                           self.rnn_impl)

  def __call__(self, mfcc, seed, targets, key, tf_ratio=0.0, train: bool = False):
    state = self.encoder(mfcc, train)
    return self.decoder(state, seed, targets, key, tf_ratio, train)
