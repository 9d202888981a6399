"""Dance-style classification from poses (``config.task = "dance_style"``).

The evaluation classifier for **style consistency** (Dancing2Music §4: accuracy of a dance-style
classifier on generated dances, the music's style as the label) and for a classifier-feature FID.
Model: :mod:`d2m_jax.models.dance_classifier` (music2dance ``dance_classification``).

Batches: kind "windows" (120 frames); uses ``pose`` (B, 120, P) and ``style``. Poses are z-scored
with the train split's ``pose_mean/_std`` kept in the state (self-contained checkpoints), so the
classifier applies to generated dances in data units.

Loss: cross-entropy, Adam (2e-4 as the original). The original balanced dance types with a
``WeightedRandomSampler`` (1 / class count); here ``config.model.class_balanced_loss`` weights the
loss by inverse class frequency (``stats['style_counts']`` when the pipeline provides them, else
uniform) instead, which keeps the input pipeline shared. Train step, evaluation and report are
the shared :class:`d2m_jax.tasks.classifier.ClassifierTask`'s (the weighted mean is taken over
the global batch, so the three parallel modes agree).

:meth:`DanceStyleTask.classify` scores dances of ANY length: non-overlapping 120-frame windows
(the last one aligned to the end), logits averaged per dance.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from d2m_jax.data import batch_layout
from d2m_jax.models import dance_classifier
from d2m_jax.tasks.classifier import ClassifierTask
from d2m_jax.train.parallel_utils import psum
from d2m_jax.train.task import compute_dtype

WINDOW = batch_layout.WINDOW_FRAMES


class DanceStyleState(flax.struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  params: Any
  opt_state: Any
  pose_mean: jax.Array  # (P,)
  pose_std: jax.Array   # (P,)
  class_weights: jax.Array  # (num_classes,)


class DanceStyleTask(ClassifierTask):
  name = "dance_style"

  def __init__(self, config):
    super().__init__(config)
    dtype = compute_dtype(config)
    self.model = dance_classifier.from_config(config.model, dtype)
    self.num_classes = int(config.model.num_classes)
    self.seqlen = int(config.model.seqlen)
    self.pose_dim = int(config.model.get("pose_dim", 69))
    self.tx = optax.adam(float(config.optim.learning_rate))
    self._apply = jax.jit(lambda p, x: self.model.apply({"params": p}, x, return_features=True))

  def init_state(self, rng, batch, stats=None):
    init_rng, state_rng = jax.random.split(rng)
    P = batch["pose"].shape[-1] if batch and "pose" in batch else self.pose_dim
    params = self.model.init(init_rng, jnp.zeros((1, self.seqlen, P), jnp.float32))["params"]
    mean, std = jnp.zeros((P,), jnp.float32), jnp.ones((P,), jnp.float32)
    if stats is not None and "pose_mean" in stats:
      mean = jnp.asarray(stats["pose_mean"], jnp.float32)
      std = jnp.maximum(jnp.asarray(stats["pose_std"], jnp.float32), 1e-3)
    weights = jnp.ones((self.num_classes,), jnp.float32)
    if (self.config.model.get("class_balanced_loss", False) and stats is not None
        and "style_counts" in stats):
      counts = np.maximum(np.asarray(stats["style_counts"], np.float64)[:self.num_classes], 1.0)
      w = counts.sum() / (len(counts) * counts)
      weights = jnp.asarray(w, jnp.float32)
    return DanceStyleState(step=jnp.zeros((), jnp.int32), rng=state_rng, params=params,
                           opt_state=self.tx.init(params), pose_mean=mean, pose_std=std,
                           class_weights=weights)

  def _inputs(self, state, pose):
    return (pose.astype(jnp.float32) - state.pose_mean) / state.pose_std

  def train_inputs(self, state, batch, axis_name):
    """Z-scored poses, labels and class weights normalised to sum 1 over the global batch."""
    x = self._inputs(state, batch["pose"][:, :self.seqlen])
    labels = batch["style"].astype(jnp.int32)
    w = state.class_weights[labels]
    return x, labels, w / psum(jnp.sum(w), axis_name), None

  def train_logits(self, params, x, rng):
    return self.model.apply({"params": params}, x)

  def eval_logits(self, state, batch):
    return self.model.apply({"params": state.params},
                            self._inputs(state, batch["pose"][:, :self.seqlen])), None

  # ---- use on generated dances ----------------------------------------------------------------
  def classify(self, state, dances, batch_windows: int = 64):
    """Dances (N, T, P) or (N, T, J, C), any T >= 1 -> (logits (N, K), features (N, C)).

    Each dance is cut into non-overlapping ``seqlen`` windows (the last one ending on the last
    frame; dances shorter than a window are edge-padded); logits and features are averaged per
    dance.
    """
    d = np.asarray(dances, np.float32)
    d = d.reshape(d.shape[0], d.shape[1], -1)
    N, T, P = d.shape
    L = self.seqlen
    if T < L:
      d = np.concatenate([d, np.repeat(d[:, -1:], L - T, axis=1)], axis=1)
      T = L
    starts = sorted(set(list(range(0, T - L + 1, L)) + [T - L]))
    win = np.stack([d[:, s:s + L] for s in starts], axis=1).reshape(-1, L, P)
    logits, feats = [], []
    for i in range(0, win.shape[0], batch_windows):
      chunk = win[i:i + batch_windows]
      pad = batch_windows - chunk.shape[0]
      if pad:  # one compiled shape for every call
        chunk = np.concatenate([chunk, np.zeros((pad, L, P), np.float32)])
      x = (chunk - np.asarray(state.pose_mean)) / np.asarray(state.pose_std)
      lg, ft = self._apply(state.params, x)
      n = chunk.shape[0] - pad
      logits.append(np.asarray(lg)[:n])
      feats.append(np.asarray(ft)[:n])
    logits = np.concatenate(logits).reshape(N, len(starts), -1).mean(1)
    feats = np.concatenate(feats).reshape(N, len(starts), -1).mean(1)
    return logits, feats

  def synthetic_batch(self, batch_size, rng):
    return batch_layout.windows_batch(batch_size, rng, self.pose_dim)


def make_task(config) -> DanceStyleTask:
  return DanceStyleTask(config)
