"""Music style from rhythm (``config.task = "music_style"``): a classifier that generalises to
unseen songs (issue 14 item 4), next to the two paper models of ``tasks/style.py``.

Data: kind ``"sequences"`` (whole songs, every sequence with audio; motion-only ones are masked
out: their audio features are all zero). Only the tempogram half of ``mel_tempogram512``
(columns 128:512, ``log1p`` of the lag 0..383 autocorrelation) is read. An example the model
classifies is a *clip*: ``config.model.clip_frames`` frames (250 = 10 s at 25 fps); its input
is the clip's mean tempogram resampled onto ``config.model.num_lags`` log-spaced lags
(``models/music_style.py``). Nothing is learnt from the absolute loudness or timbre (those
memorise songs: see the config's table).

Training: per step, ``clips_per_sequence`` random clips of each sequence in the batch; a
per-clip tempo jitter (lags scaled by ``exp(U(-j, j))``, ``config.model.tempo_jitter``) makes
the net see each song at nearby tempi; the loss is class-balanced within the batch (each class
present weighs the same, so waltz, 23 of 35 songs, does not dominate). Adam + weight decay.
With ``config.model.standardise_inputs`` every lag bin is z-scored with the running mean and
standard deviation of all training clips seen (kept in the state, so evaluation and
``predict_clip_logits`` use the training set's statistics); this is what lets a linear head
generalise across songs (see configs/music_style.py).

Evaluation: every clip starting at a multiple of ``clip_stride`` frames that fits in the
sequence; clip accuracy, per-class recall, balanced accuracy (mean recall over the classes
present), the clip confusion matrix, and per-sequence majority vote (``sequence_accuracy``,
``sequence_confusion``). :meth:`MusicStyleTask.predict_clip_logits` is the same on one
processed sequence (the ``launch/evaluate.py --style_model`` interface).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from d2m_jax.data import batch_layout
from d2m_jax.models import music_style as ms
from d2m_jax.train.parallel_utils import pmean, psum
from d2m_jax.tasks.classifier import ClassifierTask
from d2m_jax.train.task import compute_dtype

FEATURE = "mel_tempogram512"
TEMPO_COLS = slice(128, 128 + ms.TEMPOGRAM_LAGS)      # the tempogram half of the feature set
MEL_COLS = slice(0, 128)


class MusicStyleState(flax.struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  params: Any
  opt_state: Any
  # Running sums over every training clip seen (count, sum, sum of squares per lag bin): the
  # input standardisation when ``config.model.standardise_inputs`` (else unused).
  input_count: Any = None
  input_sum: Any = None
  input_sqsum: Any = None


class MusicStyleTask(ClassifierTask):
  name = "music_style"
  train_accuracy_metric = "balanced_accuracy"

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.model = ms.from_config(m, compute_dtype(config))
    self.num_classes = int(m.num_classes)
    self.clip_frames = int(m.clip_frames)
    self.clip_stride = int(m.clip_stride)
    self.clips_per_sequence = int(m.clips_per_sequence)
    self.tempo_jitter = float(m.tempo_jitter)
    self.segment_extra = int(m.get("segment_extra", 250))
    self.standardise_inputs = bool(m.get("standardise_inputs", False))
    self.edges = ms.log_lag_edges(int(m.num_lags), float(m.min_lag), float(m.max_lag)).astype(
        np.float32)
    self.clip_seconds = self.clip_frames / 25.0
    self.tx = optax.adamw(float(config.optim.learning_rate),
                          weight_decay=float(config.optim.weight_decay))

  # ---- state ---------------------------------------------------------------------------------
  def init_state(self, rng, batch, stats=None):
    init_rng, state_rng = jax.random.split(rng)
    K = len(self.edges) - 1
    params = self.model.init(init_rng, jnp.zeros((1, K), jnp.float32))["params"]
    return MusicStyleState(step=jnp.zeros((), jnp.int32), rng=state_rng, params=params,
                           opt_state=self.tx.init(params), input_count=jnp.zeros((), jnp.float32),
                           input_sum=jnp.zeros((K,), jnp.float32),
                           input_sqsum=jnp.zeros((K,), jnp.float32))

  def standardise(self, state, x):
    """(..., K) profiles -> per-lag-bin z-scores with the mean and standard deviation of every
    training clip seen so far (identity when ``standardise_inputs`` is off). The dataset's
    per-bin statistics, not the clip's: the clip's overall level (onset strength) carries no
    style, but which lags are above the usual level does."""
    if not self.standardise_inputs:
      return x
    n = jnp.maximum(state.input_count, 1.0)
    mean = state.input_sum / n
    var = jnp.maximum(state.input_sqsum / n - jnp.square(mean), 0.0)
    return (x - mean) / jnp.sqrt(var + 1e-4)

  # ---- inputs --------------------------------------------------------------------------------
  def _tempogram(self, batch, cols=TEMPO_COLS):
    """Linear tempogram (B, T, 384) from the stored log1p values."""
    return jnp.expm1(batch[FEATURE][..., cols].astype(jnp.float32))

  def _has_audio(self, batch):
    """(B,) 1.0 where the sequence has audio (motion-only sequences have all-zero features)."""
    return jnp.any(batch[FEATURE][..., MEL_COLS] != 0, axis=(1, 2)).astype(jnp.float32)

  def _lengths(self, batch):
    T = batch[FEATURE].shape[1]
    if "length" in batch:
      return batch["length"].astype(jnp.int32)
    return jnp.full((batch[FEATURE].shape[0],), T, jnp.int32)

  def _profiles(self, batch, starts, lag_scale=None, cols=TEMPO_COLS):
    """(B, N, K) log-lag profiles of the clips starting at ``starts`` (B, N)."""
    means = ms.clip_means(self._tempogram(batch, cols), starts, self.clip_frames)  # (B, N, 384)
    edges = jnp.asarray(self.edges)
    if lag_scale is not None:
      edges = edges * lag_scale[..., None]                                    # (B, N, K + 1)
    return ms.log_lag_profile(means, edges)

  def _train_inputs(self, state, batch, axis_name):
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    start_rng, jit_rng, drop_rng = jax.random.split(rng, 3)
    B, T = batch[FEATURE].shape[:2]
    n = self.clips_per_sequence
    seg_rng, start_rng = jax.random.split(start_rng)
    # One random segment of clip_frames + segment_extra frames per sequence, the clips inside
    # it: the per-step work does not grow with the padded song length.
    seg = min(T, self.clip_frames + self.segment_extra)
    lengths = jnp.minimum(self._lengths(batch), T)
    seg_room = jnp.maximum(lengths - seg + 1, 1)
    seg_start = (jax.random.uniform(seg_rng, (B,)) * seg_room).astype(jnp.int32)
    tempo = jax.vmap(lambda f, o: jax.lax.dynamic_slice_in_dim(f, o, seg, axis=0))(
        batch[FEATURE][..., TEMPO_COLS], seg_start)
    room = jnp.maximum(jnp.minimum(lengths - seg_start, seg) - self.clip_frames + 1, 1)
    starts = (jax.random.uniform(start_rng, (B, n)) * room[:, None]).astype(jnp.int32)
    scale = jnp.exp(jax.random.uniform(jit_rng, (B, n), minval=-self.tempo_jitter,
                                       maxval=self.tempo_jitter))
    x = self._profiles({FEATURE: tempo}, starts, scale, cols=slice(None)).reshape(B * n, -1)
    labels = jnp.repeat(batch["style"].astype(jnp.int32), n)
    ok = self._has_audio(batch) * (self._lengths(batch) >= self.clip_frames)
    mask = jnp.repeat(ok, n)
    return x, labels, mask, drop_rng

  def _balanced_weights(self, labels, mask, axis_name):
    """Per-clip loss weights: each class present in the (global) batch weighs the same."""
    counts = psum(jnp.sum(jax.nn.one_hot(labels, self.num_classes) * mask[:, None], 0),
                  axis_name)
    present = jnp.sum(counts > 0)
    w = mask / jnp.maximum(counts[labels], 1.0) / jnp.maximum(present, 1)
    return w

  def _loss(self, params, x, labels, weights, drop_rng):
    """This device's share of the global weighted loss (the weights sum to 1 globally)."""
    logits = self.model.apply({"params": params}, x, deterministic=False,
                              rngs={"dropout": drop_rng})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * weights), logits

  def forward(self, state, batch):
    x, labels, mask, drop_rng = self._train_inputs(state, batch, None)
    w = self._balanced_weights(labels, mask, None)
    return self._loss(state.params, self.standardise(state, x), labels, w, drop_rng)[0]

  def train_step(self, state, batch, axis_name=None):
    x, labels, mask, drop_rng = self._train_inputs(state, batch, axis_name)
    w = self._balanced_weights(labels, mask, axis_name)
    # Accumulate this (global) batch's clips into the input statistics, then standardise with
    # them: a running estimate of the training set's per-bin mean / std.
    state = state.replace(
        input_count=state.input_count + psum(jnp.sum(mask), axis_name),
        input_sum=state.input_sum + psum(mask @ x, axis_name),
        input_sqsum=state.input_sqsum + psum(mask @ jnp.square(x), axis_name))
    (loss, logits), grads = jax.value_and_grad(self._loss, has_aux=True)(
        state.params, self.standardise(state, x), labels, w, drop_rng)
    # Per-device shares of one global weighted mean: the global gradient is their sum.
    grads = jax.tree_util.tree_map(lambda g: psum(g, axis_name), grads)
    loss = psum(loss, axis_name)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    acc = psum(jnp.sum(correct * w), axis_name)                  # balanced clip accuracy
    metrics = {"loss": loss, "balanced_accuracy": acc}
    if axis_name is not None:  # identical on every device already; keep the engine's contract
      metrics = pmean(metrics, axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  # ---- evaluation ----------------------------------------------------------------------------
  def eval_starts(self, num_frames: int) -> np.ndarray:
    """Start frames of the evaluation clips of a sequence padded to ``num_frames``."""
    return np.arange(0, max(num_frames - self.clip_frames, 0) + 1, self.clip_stride)

  def clip_logits(self, state, batch):
    """(B, N, C) logits of every evaluation clip and their (B, N) validity mask."""
    B, T = batch[FEATURE].shape[:2]
    starts = jnp.broadcast_to(jnp.asarray(self.eval_starts(T), jnp.int32)[None], (B, len(
        self.eval_starts(T))))
    x = self.standardise(state, self._profiles(batch, starts))
    logits = self.model.apply({"params": state.params}, x.reshape(-1, x.shape[-1]),
                              deterministic=True).reshape(B, starts.shape[1], -1)
    valid = (starts + self.clip_frames <= self._lengths(batch)[:, None]).astype(jnp.float32)
    valid = valid * self._has_audio(batch)[:, None]
    return logits, valid

  def eval_logits(self, state, batch):
    return self.clip_logits(state, batch)

  def eval_extra(self, logits, labels, valid, axis_name):
    """Per-sequence majority vote over the valid clips: ``sequence_confusion``."""
    C = self.num_classes
    votes = (jax.nn.one_hot(jnp.argmax(logits, -1), C) * valid[..., None]).sum(1)   # (B, C)
    seq_row = (valid.sum(1) > 0).astype(jnp.float32)
    seq_conf = psum(jax.nn.one_hot(labels, C).T @ (jax.nn.one_hot(jnp.argmax(votes, -1), C)
                                                    * seq_row[:, None]), axis_name)
    return {"sequence_confusion": seq_conf}

  def predict_clip_logits(self, state, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-clip logits (N, num_classes) for ONE processed sequence (``seq/<name>.npz`` arrays,
    un-normalised): the evaluation clips of :meth:`eval_step`. N = 0 when the sequence is
    shorter than one clip or has no audio."""
    feat = np.asarray(features[FEATURE], np.float32)
    T = feat.shape[0]
    if T < self.clip_frames or not np.any(feat[:, MEL_COLS] != 0):
      return np.zeros((0, self.num_classes), np.float32)
    logits, _ = self.clip_logits(state, {FEATURE: jnp.asarray(feat)[None]})
    return np.asarray(logits[0])

  # ---- synthetic data ------------------------------------------------------------------------
  def synthetic_batch(self, batch_size, rng):
    pose_dim = int(self.config.data.get("pose_dim", 69)) if hasattr(self.config.data, "get") \
        else 69
    frames = int(self.config.data.get("max_frames", None) or 2 * self.clip_frames)
    b = batch_layout.sequences_batch(batch_size, rng, pose_dim, frames)
    b["length"] = np.maximum(b["length"], self.clip_frames).astype(np.int32)
    return b


def make_task(config) -> MusicStyleTask:
  return MusicStyleTask(config)
