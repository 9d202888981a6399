"""Task ``kakashi``: the Project Kakashi seq2seq LSTM (MFCC -> poses); see
``d2m_jax.models.kakashi``.

Data: kind ``"sequences"`` (``config.data.max_frames`` = 750 = 30 s at 25 fps, the original's
30-s chunks), inputs ``mfcc20`` (the contract's 20 MFCC per motion frame; the original averaged
librosa MFCCs over each pose frame's audio span, the same idea) and ``pose`` (69-d for the mocap
data; ``config.model.joints``/``coords`` for other skeletons). Padded frames (beyond ``length``)
are masked out of the loss. ``config.model.mode`` selects the original's three set-ups:

* ``"sequence"``: each (padded) sequence is one example; the decoder starts from the true first
  pose and predicts frames 1..T-1.
* ``"chunk"``: sequences cut into ``chunk_seconds`` (5, 10 or 15 s) chunks, each its own
  encoder/decoder example (a chunk with fewer than 2 real frames is masked out).
* ``"frame"``: every frame on its own: the encoder reads that frame's 20 MFCC (a length-1
  sequence) and the decoder makes one step from the mean pose.

Normalisation (a deviation, documented): the original fed VideoPose3D coordinates (|x| < 1)
unscaled; mocap centimetres would make the summed Euclidean loss and SGD 0.005 blow up, so poses
are centred per coordinate and divided by ONE global scale (geometry preserved, so the Euclidean
loss is still a per-joint distance) and MFCCs are standardised. Loss: the original's summed
per-joint Euclidean distance, summed over frames and joints, averaged over examples (so that it
does not depend on the batch size or device count); the t = 0 frame (constant, no gradient in
the original) is left out. ``mpjpe`` is the mean per-joint error in data units (cm).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from d2m_jax.models.kakashi import Seq2Seq
from d2m_jax.tasks import l2d_common as common
from d2m_jax.train import optim
from d2m_jax.train.parallel_utils import pmean
from d2m_jax.train.task import Task, compute_dtype


class KakashiState(flax.struct.PyTreeNode):
  step: Any
  rng: Any
  params: Any
  opt_state: Any
  pose_mean: Any
  pose_scale: Any
  mfcc_mean: Any
  mfcc_std: Any


class KakashiTask(Task):
  name = "kakashi"
  generation_features = ("mfcc20",)

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.J, self.C = int(m.joints), int(m.coords)
    self.P = self.J * self.C
    self.mode = m.mode
    if self.mode not in ("sequence", "chunk", "frame"):
      raise ValueError(f"config.model.mode={self.mode!r}: expected sequence | chunk | frame")
    self.fps = float(m.get("fps", 25.0))
    self.chunk = int(round(m.chunk_seconds * self.fps))
    dtype = compute_dtype(config)
    self.model = Seq2Seq(out_dim=self.P, hidden=m.hidden, num_layers=m.num_layers,
                         dropout=m.dropout, dtype=dtype, rnn_impl=m.get("rnn_impl", "auto"))
    self.tx = optim.build_optimizer(config)

  # -- data ---------------------------------------------------------------------------------
  def synthetic_batch(self, batch_size, rng):
    return common.synthetic_batch(self.config, batch_size, rng)

  def _examples(self, state, batch):
    """-> (mfcc (N, T, 20), pose (N, T, P) normalised, valid (N, T) float)."""
    mfcc = (batch["mfcc20"] - state.mfcc_mean) / state.mfcc_std
    pose = (batch["pose"] - state.pose_mean) / state.pose_scale
    B, T = pose.shape[:2]
    length = batch.get("length")
    valid = (jnp.ones((B, T), jnp.float32) if length is None else
             (jnp.arange(T)[None] < length[:, None]).astype(jnp.float32))
    if self.mode == "chunk":
      n = T // self.chunk
      if n == 0:
        raise ValueError(f"kakashi: chunk of {self.chunk} frames > sequence length {T}")
      cut = lambda a: a[:, :n * self.chunk].reshape((B * n, self.chunk) + a.shape[2:])  # noqa
      mfcc, pose, valid = cut(mfcc), cut(pose), cut(valid)
    elif self.mode == "frame":
      mfcc = mfcc.reshape(B * T, 1, -1)
      pose = pose.reshape(B * T, 1, -1)
      valid = valid.reshape(B * T, 1)
    return mfcc, pose, valid

  def _forward(self, params, mfcc, pose, key, tf_ratio, train):
    """-> predictions for the target frames and their targets (N, T', P)."""
    if self.mode == "frame":
      seed = jnp.zeros_like(pose[:, 0])
      targets = pose
    else:
      seed, targets = pose[:, 0], pose[:, 1:]
    k_model, k_drop = jax.random.split(key)
    preds = self.model.apply({"params": params}, mfcc, seed, targets, k_model, tf_ratio, train,
                             rngs={"dropout": k_drop})
    return preds, targets

  def _loss(self, params, state, batch, key, tf_ratio, train):
    mfcc, pose, valid = self._examples(state, batch)
    preds, targets = self._forward(params, mfcc, pose, key, tf_ratio, train)
    v = valid if self.mode == "frame" else valid[:, 1:]
    diff = (preds - targets).reshape(preds.shape[:2] + (self.J, self.C))
    dist = jnp.sqrt(jnp.sum(diff ** 2, -1) + 1e-12)                # (N, T', J)
    w = v[..., None]
    n_ex = jnp.maximum(jnp.sum(jnp.max(v, axis=1)), 1.0)
    loss = jnp.sum(dist * w) / n_ex
    mpjpe = jnp.sum(dist * w) * state.pose_scale / jnp.maximum(jnp.sum(w) * self.J, 1.0)
    return loss, {"mpjpe": mpjpe}

  # -- Task API -----------------------------------------------------------------------------
  def init_state(self, rng, batch, stats=None):
    pm, ps = common.pose2d_stats(None, self.J, self.C)  # placeholders, replaced below
    if stats is not None and "pose_mean" in stats:
      pm = jnp.asarray(stats["pose_mean"], jnp.float32)   # traced under build/abstract_state
      ps = jnp.maximum(jnp.mean(jnp.asarray(stats["pose_std"], jnp.float32)), 1e-6)
    else:
      pm = np.zeros((self.P,), np.float32); ps = np.float32(1.0)
    mm, msd = common.feature_stats(stats, "mfcc20", 20)
    k_init, k_state = jax.random.split(rng)
    T = 2
    # Jitted: the engine initialises this task eagerly, and an eager flax init of scans is slow.
    params = jax.jit(lambda k: self.model.init({"params": k, "dropout": k},
                                               jnp.zeros((1, T, 20)), jnp.zeros((1, self.P)),
                                               jnp.zeros((1, T, self.P)), k, 0.0,
                                               False)["params"])(k_init)
    return KakashiState(step=jnp.int32(0), rng=k_state, params=params,
                        opt_state=self.tx.init(params), pose_mean=jnp.asarray(pm),
                        pose_scale=jnp.asarray(ps), mfcc_mean=jnp.asarray(mm),
                        mfcc_std=jnp.asarray(msd))

  def train_step(self, state, batch, axis_name: Optional[str] = None):
    key = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    tf = float(self.config.model.teacher_forcing)
    (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(
        state.params, state, batch, key, tf, True)
    grads = pmean(grads, axis_name)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = pmean({"loss": loss, "mpjpe": aux["mpjpe"],
                     "grad_norm": optax.global_norm(grads)}, axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(self, state, batch, axis_name: Optional[str] = None):
    loss, aux = self._loss(state.params, state, batch, jax.random.key(0), 0.0, False)
    return pmean({"loss": loss, "mpjpe": aux["mpjpe"]}, axis_name)

  # -- generation ---------------------------------------------------------------------------
  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _decode(self, params, mfcc, steps, seed):
    """mfcc (S, T, 20) normalised, seed (S, P) -> (S, steps, P) with teacher forcing 0."""
    targets = jnp.zeros((mfcc.shape[0], steps, self.P))
    return self.model.apply({"params": params}, mfcc, seed, targets, jax.random.key(0), 0.0,
                            False)

  def generate(self, state, feats, beats, num_frames, rng, num_samples=1):
    """Song MFCCs -> dance. Seed pose: the mean pose (the original: a random training frame).
    The model is deterministic, so the ``num_samples`` outputs are identical."""
    del beats, rng
    mfcc = np.asarray(feats["mfcc20"], np.float32)[:num_frames]
    if mfcc.shape[0] < num_frames:
      raise ValueError(f"kakashi.generate: mfcc20 has {mfcc.shape[0]} frames < {num_frames}")
    mfcc = (mfcc - np.asarray(state.mfcc_mean)) / np.asarray(state.mfcc_std)
    seed = jnp.zeros((1, self.P))
    if self.mode == "sequence":
      out = self._decode(state.params, jnp.asarray(mfcc[None]), num_frames - 1, seed)
      out = jnp.concatenate([seed[:, None], out], 1)
    elif self.mode == "chunk":
      pieces, C = [seed[:, None]], self.chunk
      for s in range(0, num_frames, C):     # windows carry the last pose as the next seed
        m = mfcc[s:s + C]
        m = np.concatenate([m, np.repeat(m[-1:], C - len(m), 0)]) if len(m) < C else m
        p = self._decode(state.params, jnp.asarray(m[None]), C, seed)  # one compile
        pieces.append(p); seed = p[:, -1]
      out = jnp.concatenate(pieces, 1)[:, :num_frames]
    else:
      out = self._decode(state.params, jnp.asarray(mfcc[:, None]), 1,
                         jnp.zeros((num_frames, self.P)))[:, 0][None]
    poses = np.asarray(out[0]) * float(state.pose_scale) + np.asarray(state.pose_mean)
    poses = poses.reshape(num_frames, self.J, self.C).astype(np.float32)
    return np.repeat(poses[None], num_samples, 0)


def make_task(config):
  return KakashiTask(config)
