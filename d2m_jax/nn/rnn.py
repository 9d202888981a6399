"""GRU and LSTM layers as ``lax.scan`` with the input projection hoisted out of the scan.

Semantics follow PyTorch's ``nn.GRU`` / ``nn.LSTM`` (batch_first=True) exactly, so parameter
counts and numerics can be checked against the original systems:

GRU, gate order (r, z, n)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

LSTM, gate order (i, f, g, o)::

    i, f, o = sigmoid(.), g = tanh(.), of (W_i* x + b_i* + W_h* h + b_h*)
    c' = f * c + i * g;  h' = o * tanh(c')

Throughput: for every layer and direction the input projection ``x @ W_ih + b_ih`` for *all*
time steps is one (B*T, D) x (D, G*H) matmul before the scan, so the scan body does a single
(B, H) x (H, G*H) recurrent matmul per step. When the input is the same vector at every step
(Dancing2Music's decoders repeat z 32 times) pass it with ``constant_input=True``: it is
projected once, not T times.

Parameters per layer and direction: ``w_ih`` (D, G*H), ``w_hh`` (H, G*H), ``b_ih`` (G*H,),
``b_hh`` (G*H,) -- the same count as PyTorch (G = 3 for GRU, 4 for LSTM). Kernels are stored
input-major (the transpose of PyTorch's ``weight_ih_l0``).

Mixed precision: matmuls run in ``dtype`` (e.g. bfloat16); gate non-linearities and the carried
state are float32; parameters are float32.

Implementations (``impl`` on :class:`GRU` / :class:`LSTM`, ``model.rnn_impl`` in the configs;
:func:`resolve_impl` is the one place that decides):

* ``scan``: ``lax.scan`` with ``unroll`` (default 1) -- what every model ran before;
* ``unrolled``: the same scan unrolled -- fully for ``T <= FULL_UNROLL_MAX_STEPS`` (the 32-step
  Dancing2Music unit GRUs), else by ``LONG_UNROLL``; ``unroll > 0`` overrides. Identical maths:
  fewer, larger kernels per step on GPU (decomposition bf16 at batch 256 on an H200: 15.2 ms with
  the scan, 12.9 ms with unroll 8, 10.4 ms fully unrolled; issue 13), longer compiles;
* ``pallas``: GRU only, the fused persistent kernel of :mod:`d2m_jax.nn.rnn_pallas` (one kernel
  per layer and direction for the whole time loop, forward and backward) for
  ``H <= PALLAS_MAX_HIDDEN`` on GPU (CPU: Pallas interpret mode, for tests). Other cases (LSTM,
  larger H, TPU) fall back to ``unrolled`` with a one-time logged notice. Opt-in: not measured
  faster on a GPU yet;
* ``auto`` (default): ``unrolled`` on GPU (measured faster, above), ``scan`` on CPU (unrolling
  only lengthens the compile there) and on TPU (not measured).

Gradient of a ``scan``/``unrolled`` GRU (``seq_grad`` of :func:`recurrent_scan`,
:func:`use_seq_grad`): on CPU by default the written-out backward of
:mod:`d2m_jax.nn.gru_seq_grad` (one reverse scan; ``dW_hh`` as one GEMM after it instead of a
per-step accumulation; measured 1-14% fewer CPU-seconds per training step on XLA:CPU,
docs/performance.md); elsewhere autodiff of the scan. Same maths, float32 rounding apart. With it
the GRU stack runs time-major inside (:class:`GRU`: one transpose in, one out; each layer's input
projection one row-major GEMM, its bias added inside the steps): 7% fewer CPU-seconds for the
B=256 style_improved step, whose batch-major projections XLA:CPU had laid out transposed.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax import target
from d2m_jax.nn import gru_seq_grad
from d2m_jax.nn.cells import gru_gates, mixed_dot  # noqa: F401  (mixed_dot: public here)
from d2m_jax.nn import rnn_pallas
from d2m_jax.nn.init import uniform_init

Array = jax.Array

RNN_IMPLS = ("auto", "scan", "unrolled", "pallas")
FULL_UNROLL_MAX_STEPS = 64   # "unrolled" unrolls every step up to this length ...
LONG_UNROLL = 8              # ... and by this factor beyond it
_NOTICES = set()


def _notice_once(msg: str) -> None:
  if msg not in _NOTICES:
    _NOTICES.add(msg)
    logging.getLogger(__name__).warning(msg)


def resolve_impl(impl: str, kind: str = "gru", hidden: int = 0,
                 backend: Optional[str] = None) -> str:
  """The implementation that actually runs for ``impl`` (see the module docstring).

  ``auto`` -> ``unrolled`` on GPU, ``scan`` elsewhere; ``pallas`` -> ``pallas`` for a GRU with
  ``hidden <= rnn_pallas.PALLAS_MAX_HIDDEN`` on GPU or CPU (interpret mode), otherwise
  ``unrolled`` (logged once per reason).
  """
  if impl not in RNN_IMPLS:
    raise ValueError(f"unknown rnn_impl {impl!r}; expected one of {RNN_IMPLS}")
  backend = backend or target.backend()
  if impl == "auto":
    return "unrolled" if backend == "gpu" else "scan"
  if impl != "pallas":
    return impl
  if kind != "gru":
    _notice_once("rnn_impl='pallas': no Pallas LSTM kernel; the LSTMs run 'unrolled'")
    return "unrolled"
  if backend not in ("gpu", "cpu"):
    _notice_once(f"rnn_impl='pallas': the GRU kernel targets GPU (Triton); on {backend} the "
                 "GRUs run 'unrolled'")
    return "unrolled"
  if not rnn_pallas.supports(hidden):
    _notice_once(f"rnn_impl='pallas': GRU hidden size {hidden} > "
                 f"{rnn_pallas.PALLAS_MAX_HIDDEN} does not keep W_hh on chip; it runs "
                 "'unrolled'")
    return "unrolled"
  if backend == "cpu":
    _notice_once("rnn_impl='pallas' on CPU runs the GRU kernel in Pallas interpret mode (slow; "
                 "meant for tests)")
  return "pallas"


# What ``auto`` means for the GRU gradient in this process: ``$D2M_GRU_GRAD`` (auto | on | off),
# read at import. ``off`` gives autodiff gradients everywhere, bit for bit those recorded in the
# golden files (tests/test_config_contract.py sets it), for comparisons across versions.
SEQ_GRAD_DEFAULT = os.environ.get("D2M_GRU_GRAD", "auto")


def use_seq_grad(choice: str = "auto", backend: Optional[str] = None) -> bool:
  """Whether a ``scan``/``unrolled`` GRU takes its gradient from
  :mod:`d2m_jax.nn.gru_seq_grad` (written-out backward, weight gradients as one GEMM after the
  reverse scan) instead of autodiff of the scan: ``auto`` -> :data:`SEQ_GRAD_DEFAULT`, whose own
  ``auto`` is on CPU only (measured faster there, docs/performance.md); ``on`` / ``off`` force
  it. Same maths, float32 rounding apart."""
  if choice == "auto":
    choice = SEQ_GRAD_DEFAULT
  if choice not in ("auto", "on", "off"):
    raise ValueError(f"unknown GRU gradient choice {choice!r} (argument or $D2M_GRU_GRAD); "
                     "expected auto, on or off")
  if choice == "auto":
    return (backend or target.backend()) == "cpu"
  return choice == "on"


def scan_unroll(impl: str, length: int, unroll: int = 0) -> int:
  """``lax.scan``'s ``unroll`` for a resolved ``impl`` over ``length`` steps (``unroll > 0``
  overrides the default: 1 for ``scan``, full up to ``FULL_UNROLL_MAX_STEPS`` steps else
  ``LONG_UNROLL`` for ``unrolled``)."""
  if unroll > 0:
    return unroll
  if impl == "unrolled":
    return max(1, length) if length <= FULL_UNROLL_MAX_STEPS else LONG_UNROLL
  return 1


def _gru_cell(hproj_fn, xp, h):
  """One GRU step given the hoisted input projection ``xp`` (B, 3H) and state ``h`` (B, H)."""
  return gru_gates(xp, hproj_fn(h), h)[0]


def _lstm_cell(hproj_fn, xp, carry):
  h, c = carry
  H = h.shape[-1]
  g = xp.astype(jnp.float32) + hproj_fn(h)
  i = jax.nn.sigmoid(g[:, :H])
  f = jax.nn.sigmoid(g[:, H:2 * H])
  gg = jnp.tanh(g[:, 2 * H:3 * H])
  o = jax.nn.sigmoid(g[:, 3 * H:])
  c = f * c + i * gg
  h = o * jnp.tanh(c)
  return h, c


def recurrent_scan(kind: str, xproj: Array, carry0, w_hh: Array, b_hh: Array, *,
                   reverse: bool = False, unroll: int = 0, dtype=jnp.float32,
                   length: Optional[int] = None, impl: str = "scan",
                   seq_grad: str = "auto", x_bias: Optional[Array] = None):
  """Runs one recurrent layer/direction over time.

  Args:
    kind: "gru" or "lstm".
    xproj: hoisted input projection, time-major (T, B, G*H); or (B, G*H) for a constant input,
      in which case ``length`` gives T.
    carry0: h0 (B, H) for GRU, (h0, c0) for LSTM; float32.
    w_hh, b_hh: recurrent kernel (H, G*H) and bias (G*H,).
    reverse: run from the last step to the first (outputs stay in input time order).
    unroll: ``lax.scan``'s unroll; 0 = the default of ``impl`` (:func:`scan_unroll`).
    impl: one of :data:`RNN_IMPLS`, resolved by :func:`resolve_impl`.
    seq_grad: GRU only, ``scan``/``unrolled``: the written-out backward of
      :mod:`d2m_jax.nn.gru_seq_grad` (``auto``: on CPU; :func:`use_seq_grad`).
    x_bias: optional (G*H,) bias of the input projection, not yet added to ``xproj``: the
      written-out GRU backward adds it inside each step (no pass over the whole projection),
      the other paths to ``xproj`` first; the same float32 sums either way. With a constant
      input it may be (T, G*H), a per-step term every sequence shares (a clock): the written-out
      backward keeps the input constant and sums that term's gradient over the batch in its
      reverse scan; the other paths broadcast it into a time-major (T, B, G*H) projection.
  Returns:
    (outputs (T, B, H) float32, final carry).
  """
  impl = resolve_impl(impl, kind, w_hh.shape[0])
  written_out = kind == "gru" and impl != "pallas" and use_seq_grad(seq_grad)
  if x_bias is not None and length is not None and x_bias.ndim == 2 and not written_out:
    xproj, x_bias, length = xproj[None] + x_bias[:, None].astype(xproj.dtype), None, None
  if impl == "pallas":
    return rnn_pallas.gru_layer_pallas(xproj, carry0, w_hh, b_hh, reverse=reverse, dtype=dtype,
                                       length=length)
  steps = length if length is not None else xproj.shape[0]
  unroll = scan_unroll(impl, steps, unroll)
  if written_out:
    b_x = (jnp.zeros(b_hh.shape, jnp.float32) if x_bias is None
           else x_bias.astype(jnp.float32))
    return gru_seq_grad.gru_layer_seq_grad(xproj, carry0, w_hh, b_hh, b_x, reverse, unroll,
                                           dtype, length)
  if x_bias is not None:
    xproj = xproj + x_bias
  w = w_hh
  b = b_hh.astype(jnp.float32)

  def hproj(h):
    return mixed_dot(h, w, dtype) + b

  cell = _gru_cell if kind == "gru" else _lstm_cell
  if length is not None:  # constant input: project once, reuse at every step
    const = xproj

    def body(carry, _):
      new = cell(hproj, const, carry)
      h = new if kind == "gru" else new[0]
      return new, h
    carry, ys = jax.lax.scan(body, carry0, None, length=length, reverse=reverse, unroll=unroll)
  else:
    def body(carry, xp):
      new = cell(hproj, xp, carry)
      h = new if kind == "gru" else new[0]
      return new, h
    carry, ys = jax.lax.scan(body, carry0, xproj, reverse=reverse, unroll=unroll)
  return ys, carry


class _RNNBase(nn.Module):
  """Shared multi-layer, optionally bidirectional recurrent stack (batch-major I/O)."""
  hidden: int
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0  # between layers, as PyTorch's ``dropout``
  impl: str = "auto"         # scan | unrolled | pallas | auto (see the module docstring)
  unroll: int = 0            # lax.scan unroll; 0 = the impl's default (scan_unroll)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Optional[Callable] = None  # default: PyTorch U(+-1/sqrt(H)) for all weights
  recurrent_init: Optional[Callable] = None
  bias_init: Optional[Callable] = None

  kind = "gru"
  gates = 3

  def _params(self, layer: int, direction: int, in_features: int):
    G, H = self.gates, self.hidden
    default = uniform_init(1.0 / math.sqrt(H))
    sfx = f"l{layer}" + ("_reverse" if direction else "")
    w_ih = self.param(f"w_ih_{sfx}", self.kernel_init or default, (in_features, G * H),
                      self.param_dtype)
    w_hh = self.param(f"w_hh_{sfx}", self.recurrent_init or default, (H, G * H),
                      self.param_dtype)
    b_ih = self.param(f"b_ih_{sfx}", self.bias_init or default, (G * H,), self.param_dtype)
    b_hh = self.param(f"b_hh_{sfx}", self.bias_init or default, (G * H,), self.param_dtype)
    return w_ih, w_hh, b_ih, b_hh

  def _zero_carry(self, batch):
    h = jnp.zeros((batch, self.hidden), jnp.float32)
    return h if self.kind == "gru" else (h, h)

  @nn.compact
  def __call__(self, x: Array, initial_state=None, *, constant_input: bool = False,
               length: Optional[int] = None, step_input: Optional[Array] = None,
               deterministic: bool = True):
    """Runs the stack.

    Args:
      x: (B, T, D) inputs; or (B, D) with ``constant_input=True`` and ``length=T`` when the same
        input is fed at every step (projected once).
      initial_state: GRU: (L*dirs, B, H) like PyTorch's h0 (or None for zeros). LSTM: a pair
        (h0, c0) of that shape.
      step_input: with ``constant_input=True`` only: (T, D2) features shared by every
        sequence (a clock); the first layer's input at step t is ``concat(x, step_input[t])``
        (parameters as for that concatenated input), projected as one (B, D) and one (T, D2)
        matmul, added.
      deterministic: disables inter-layer dropout.
    Returns:
      outputs (B, T, dirs*H) float32 of the top layer, and the final state in PyTorch layout
      ((L*dirs, B, H); a pair for LSTM).
    """
    dirs = 2 if self.bidirectional else 1
    B = x.shape[0]
    if constant_input:
      if length is None:
        raise ValueError("constant_input=True needs length=T")
      T = length
    else:
      T = x.shape[1]
    # The written-out GRU backward runs the stack time-major: (T, B, D) from the first
    # projection to the last layer's output, one transpose in and one out, instead of one per
    # layer (which XLA:CPU turned into transposed GEMM outputs and copies of (T, B, 3H) arrays).
    seq = (self.kind == "gru" and use_seq_grad()
           and resolve_impl(self.impl, "gru", self.hidden) != "pallas")
    finals_h, finals_c = [], []
    if step_input is not None and not constant_input:
      raise ValueError("step_input needs constant_input=True")
    layer_in = x if constant_input or not seq else jnp.transpose(x, (1, 0, 2))
    for layer in range(self.num_layers):
      outs = []
      in_features = layer_in.shape[-1]
      if step_input is not None and layer == 0:
        in_features += step_input.shape[-1]
      for d in range(dirs):
        w_ih, w_hh, b_ih, b_hh = self._params(layer, d, in_features)
        idx = layer * dirs + d
        if initial_state is None:
          carry0 = self._zero_carry(B)
        elif self.kind == "gru":
          carry0 = initial_state[idx].astype(jnp.float32)
        else:
          carry0 = (initial_state[0][idx].astype(jnp.float32),
                    initial_state[1][idx].astype(jnp.float32))
        wi = w_ih
        if constant_input and layer == 0 and step_input is not None:
          # constant part (B, G*H) once, the clock's (T, G*H) once: recurrent_scan adds them
          # per step (the written-out backward keeps the input constant; see x_bias there)
          D = layer_in.shape[-1]
          clock = mixed_dot(step_input, wi[D:], self.dtype) + b_ih
          ys, carry = recurrent_scan(self.kind, mixed_dot(layer_in, wi[:D], self.dtype), carry0,
                                     w_hh, b_hh, reverse=bool(d), unroll=self.unroll,
                                     dtype=self.dtype, length=T, impl=self.impl, x_bias=clock)
        elif constant_input and layer == 0:
          xp = mixed_dot(layer_in, wi, self.dtype) + b_ih
          ys, carry = recurrent_scan(self.kind, xp, carry0, w_hh, b_hh, reverse=bool(d),
                                     unroll=self.unroll, dtype=self.dtype, length=T,
                                     impl=self.impl)
        else:
          # One matmul for every time step, then time-major for the scan.
          x_bias = None
          if seq:   # b_ih is added inside the steps (recurrent_scan's x_bias)
            xp, x_bias = gru_seq_grad.input_projection(layer_in, wi, self.dtype), b_ih
          else:
            xp = mixed_dot(layer_in, wi, self.dtype, "btd,dg->tbg") + b_ih
          ys, carry = recurrent_scan(self.kind, xp, carry0, w_hh, b_hh, reverse=bool(d),
                                     unroll=self.unroll, dtype=self.dtype, impl=self.impl,
                                     x_bias=x_bias)
        outs.append(ys)
        if self.kind == "gru":
          finals_h.append(carry)
        else:
          finals_h.append(carry[0])
          finals_c.append(carry[1])
      out = outs[0] if dirs == 1 else jnp.concatenate(outs, axis=-1)  # (T, B, dirs*H)
      layer_in = out if seq else jnp.transpose(out, (1, 0, 2))
      if self.dropout_rate > 0 and layer < self.num_layers - 1:
        drop = nn.Dropout(self.dropout_rate)   # on batch-major values: the same mask either way
        if seq:
          layer_in = jnp.transpose(drop(jnp.transpose(layer_in, (1, 0, 2)),
                                        deterministic=deterministic), (1, 0, 2))
        else:
          layer_in = drop(layer_in, deterministic=deterministic)
    if seq:
      layer_in = jnp.transpose(layer_in, (1, 0, 2))
    h_n = jnp.stack(finals_h)
    if self.kind == "gru":
      return layer_in, h_n
    return layer_in, (h_n, jnp.stack(finals_c))


class GRU(_RNNBase):
  """PyTorch-equivalent multi-layer GRU (gate order r, z, n) as a hoisted ``lax.scan``."""
  kind = "gru"
  gates = 3


class LSTM(_RNNBase):
  """PyTorch-equivalent multi-layer LSTM (gate order i, f, g, o) as a hoisted ``lax.scan``."""
  kind = "lstm"
  gates = 4


# ----------------------------------------------------------------------------------------------
# float64 numpy references (used by the tests; written from PyTorch's documented equations).

def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def gru_reference_numpy(params: dict, x: np.ndarray, h0: Optional[np.ndarray] = None, *,
                        num_layers: int = 1, bidirectional: bool = False):
  """float64 GRU with PyTorch equations; ``params`` as produced by :class:`GRU`."""
  return _reference("gru", params, x, h0, num_layers, bidirectional)


def lstm_reference_numpy(params: dict, x: np.ndarray, state=None, *, num_layers: int = 1,
                         bidirectional: bool = False):
  """float64 LSTM with PyTorch equations; ``params`` as produced by :class:`LSTM`."""
  return _reference("lstm", params, x, state, num_layers, bidirectional)


def _reference(kind, params, x, state, num_layers, bidirectional):
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  x = np.asarray(x, np.float64)
  B, T, _ = x.shape
  dirs = 2 if bidirectional else 1
  H = p["w_hh_l0"].shape[0]
  finals_h, finals_c = [], []
  inp = x
  for layer in range(num_layers):
    outs = []
    for d in range(dirs):
      sfx = f"l{layer}" + ("_reverse" if d else "")
      wi, wh, bi, bh = p[f"w_ih_{sfx}"], p[f"w_hh_{sfx}"], p[f"b_ih_{sfx}"], p[f"b_hh_{sfx}"]
      idx = layer * dirs + d
      if state is None:
        h = np.zeros((B, H)); c = np.zeros((B, H))
      elif kind == "gru":
        h = np.asarray(state[idx], np.float64); c = None
      else:
        h = np.asarray(state[0][idx], np.float64); c = np.asarray(state[1][idx], np.float64)
      ys = np.zeros((T, B, H))
      steps = range(T - 1, -1, -1) if d else range(T)
      for t in steps:
        gi = inp[:, t] @ wi + bi
        gh = h @ wh + bh
        if kind == "gru":
          r = _sigmoid(gi[:, :H] + gh[:, :H])
          z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
          n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
          h = (1 - z) * n + z * h
        else:
          g = gi + gh
          i_, f_ = _sigmoid(g[:, :H]), _sigmoid(g[:, H:2 * H])
          gg, o_ = np.tanh(g[:, 2 * H:3 * H]), _sigmoid(g[:, 3 * H:])
          c = f_ * c + i_ * gg
          h = o_ * np.tanh(c)
        ys[t] = h
      outs.append(ys)
      finals_h.append(h)
      finals_c.append(c)
    inp = np.transpose(np.concatenate(outs, -1), (1, 0, 2))
  if kind == "gru":
    return inp, np.stack(finals_h)
  return inp, (np.stack(finals_h), np.stack(finals_c))


def pallas_gpu_smoke(batch: int = 64, steps: int = 32, hidden: int = 64, inputs: int = 32,
                     dtype=jnp.float32) -> dict:
  """Compiles and runs the kernel (forward and gradient) on the default backend and returns the
  largest absolute differences from the scan: a quick check that the Triton lowering compiles
  and agrees on a given GPU before timing it::

    python -c "from d2m_jax.nn.rnn import pallas_gpu_smoke; print(pallas_gpu_smoke())"
  """
  ks = jax.random.split(jax.random.PRNGKey(0), 4)
  s = hidden ** -0.5
  xp = jax.random.normal(ks[0], (steps, batch, 3 * hidden), jnp.float32)
  h0 = jax.random.normal(ks[1], (batch, hidden), jnp.float32)
  w = jax.random.uniform(ks[2], (hidden, 3 * hidden), jnp.float32, -s, s)
  b = jax.random.uniform(ks[3], (3 * hidden,), jnp.float32, -s, s)

  def loss(f, xp, h0, w, b):
    ys, hT = f(xp, h0, w, b)
    return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(hT)
  fp = lambda *a: rnn_pallas.gru_layer_pallas(*a, dtype=dtype)  # noqa: E731
  fs = lambda *a: recurrent_scan("gru", *a, dtype=dtype)  # noqa: E731
  out = {}
  for name, f in (("pallas", fp), ("scan", fs)):
    g = jax.jit(jax.value_and_grad(functools.partial(loss, f), argnums=(0, 1, 2, 3)))
    out[name] = jax.block_until_ready(g(xp, h0, w, b))
  diffs = jax.tree.map(lambda a, c: float(jnp.max(jnp.abs(a - c))), out["pallas"], out["scan"])
  leaves = jax.tree.leaves(diffs)
  return {"backend": jax.default_backend(),
          "interpret": rnn_pallas._use_interpret(),  # pylint: disable=protected-access
          "max_abs_diff_loss": leaves[0], "max_abs_diff_grads": max(leaves[1:])}
