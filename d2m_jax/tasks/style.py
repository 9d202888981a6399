"""Music style classification (``config.task = "style"``): the Dancing2Music style extractor.

Reads kind "windows" batches and uses only ``d2m28`` (B, 120, 28) and ``style`` (B,). The
``config.model.num_frames`` frames (30 paper / 59 improved) are cropped ON DEVICE: a random
offset per example in training, the centred crop in evaluation. Features are z-scored with the
train split's ``d2m28_mean/_std`` (kept in the state, so a checkpoint is self-contained).

Loss: cross-entropy; optimiser Adam (``config.optim.learning_rate``, 2e-4 as WeiyuDu's
``model_style.py``). Metrics: loss, accuracy. Evaluation also returns the confusion matrix
(true class x predicted class counts) and per-class accuracy (``finalize_eval``). Train step,
evaluation and report are the shared :class:`d2m_jax.tasks.classifier.ClassifierTask`'s; this
module configures the model, the crops and the normalisation.

Parallel modes: the crop offsets are drawn for the GLOBAL batch and each device takes its rows
(``axis_index``), so jit, shard_map and pmap see identical crops and give identical parameters.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from d2m_jax.data import batch_layout
from d2m_jax.data.example_source import window_stride
from d2m_jax.models import style as style_model
from d2m_jax.tasks.classifier import ClassifierTask
from d2m_jax.train.task import compute_dtype

WINDOW = batch_layout.WINDOW_FRAMES
CLIP_STRIDE = window_stride("music_to_dance")   # the real data's eval windows: every 30 frames
PREDICT_BATCH = 64


class StyleState(flax.struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  params: Any
  opt_state: Any
  feat_mean: jax.Array   # (28,) d2m28 train mean
  feat_std: jax.Array    # (28,) d2m28 train std


def _crop(feats, offsets, length):
  """Per-example crop: feats (B, T, D), offsets (B,) -> (B, length, D)."""
  return jax.vmap(lambda f, o: jax.lax.dynamic_slice_in_dim(f, o, length, axis=0))(feats, offsets)


def _local_rows(x_global, local_batch, axis_name):
  """This device's rows of a per-example array drawn for the global batch."""
  if axis_name is None:
    return x_global
  idx = jax.lax.axis_index(axis_name)
  return jax.lax.dynamic_slice_in_dim(x_global, idx * local_batch, local_batch, axis=0)


class StyleTask(ClassifierTask):
  name = "style"

  def __init__(self, config):
    super().__init__(config)
    dtype = compute_dtype(config)
    self.model = style_model.from_config(config.model, dtype)
    self.num_frames = int(config.model.num_frames)
    if not 1 <= self.num_frames <= WINDOW:
      raise ValueError(f"config.model.num_frames={self.num_frames} must be in [1, {WINDOW}]")
    self.num_classes = int(config.model.num_classes)
    self.tx = optax.adam(float(config.optim.learning_rate))

  # ---- state ---------------------------------------------------------------------------------
  def init_state(self, rng, batch, stats=None):
    init_rng, state_rng = jax.random.split(rng)
    feats = jnp.zeros((1, 1, 28), jnp.float32)  # shapes only; T=1 keeps the init compile small
    params = self.model.init(init_rng, feats)["params"]
    if stats is not None and "d2m28_mean" in stats:
      mean = jnp.asarray(stats["d2m28_mean"], jnp.float32)
      std = jnp.maximum(jnp.asarray(stats["d2m28_std"], jnp.float32), 1e-6)
    else:
      mean, std = jnp.zeros((28,), jnp.float32), jnp.ones((28,), jnp.float32)
    return StyleState(step=jnp.zeros((), jnp.int32), rng=state_rng, params=params,
                      opt_state=self.tx.init(params), feat_mean=mean, feat_std=std)

  # ---- steps ---------------------------------------------------------------------------------
  def _inputs(self, state, batch, offsets):
    feats = (batch["d2m28"].astype(jnp.float32) - state.feat_mean) / state.feat_std
    return _crop(feats, offsets, self.num_frames)

  def train_inputs(self, state, batch, axis_name):
    """Randomly cropped, z-scored inputs, labels, uniform weights and the dropout key."""
    rng = jax.random.fold_in(state.rng, state.step)
    crop_rng, drop_rng = jax.random.split(rng)
    local_b, T = batch["d2m28"].shape[:2]
    n_dev = 1 if axis_name is None else jax.lax.psum(1, axis_name)
    offsets = jax.random.randint(crop_rng, (local_b * n_dev,), 0, T - self.num_frames + 1)
    offsets = _local_rows(offsets, local_b, axis_name)
    x = self._inputs(state, batch, offsets)
    labels = batch["style"].astype(jnp.int32)
    if axis_name is not None:  # distinct dropout masks per device
      drop_rng = jax.random.fold_in(drop_rng, jax.lax.axis_index(axis_name))
    weights = jnp.full((local_b,), 1.0 / (local_b * n_dev), jnp.float32)
    return x, labels, weights, drop_rng

  def train_logits(self, params, x, rng):
    return self.model.apply({"params": params}, x, deterministic=False, rngs={"dropout": rng})

  def logits(self, state, feats_window):
    """Logits for (B, >=num_frames, 28) raw d2m28 frames (the centred crop)."""
    B, T = feats_window.shape[:2]
    offsets = jnp.full((B,), (T - self.num_frames) // 2, jnp.int32)
    x = self._inputs(state, {"d2m28": feats_window}, offsets)
    return self.model.apply({"params": state.params}, x, deterministic=True)

  # ---- the style-model interface of launch/evaluate.py --style_model -------------------------
  clip_seconds = WINDOW / 25.0

  def predict_clip_logits(self, state, features) -> np.ndarray:
    """Per-clip logits (N, num_classes) for ONE whole processed sequence (un-normalised
    ``features["d2m28"]`` (T, 28), as ``ingest.process_sequence`` returns it). Clips are the
    pipeline's eval windows (120 frames every ``CLIP_STRIDE``), each classified on its centred
    crop exactly as ``eval_step`` does, z-scored with the train stats held in ``state``."""
    feats = np.asarray(features["d2m28"], np.float32)
    starts = np.arange(0, feats.shape[0] - WINDOW + 1, CLIP_STRIDE)
    if starts.size == 0:
      return np.zeros((0, self.num_classes), np.float32)
    if not hasattr(self, "_logits_jit"):
      self._logits_jit = jax.jit(self.logits)  # pylint: disable=attribute-defined-outside-init
    out = []
    for i in range(0, starts.size, PREDICT_BATCH):  # fixed batch: one compile for any length
      s = starts[i:i + PREDICT_BATCH]
      idx = np.concatenate([s, np.repeat(s[-1:], PREDICT_BATCH - s.size)])
      windows = feats[idx[:, None] + np.arange(WINDOW)]
      out.append(np.asarray(self._logits_jit(state, windows), np.float32)[:s.size])
    return np.concatenate(out)

  def eval_logits(self, state, batch):
    return self.logits(state, batch["d2m28"]), None

  # ---- synthetic data ------------------------------------------------------------------------
  def synthetic_batch(self, batch_size, rng):
    pose_dim = int(self.config.data.get("pose_dim", 69)) if hasattr(self.config.data, "get") \
        else 69
    return batch_layout.windows_batch(batch_size, rng, pose_dim)


def make_task(config) -> StyleTask:
  return StyleTask(config)
