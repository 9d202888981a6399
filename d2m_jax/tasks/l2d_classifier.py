"""Task ``l2d_classifier``: learn2dance's discriminative model (song code -> next pose-clip
cluster); model in ``d2m_jax.models.learn2dance``.

Data: kind ``"sequences"`` (first ``max_frames`` = 1000 frames = 40 one-second clips) with the
``mel_tempogram512`` frame features (log1p mel + tempogram, standardised with the train stats).
Labels are computed on device: the poses are projected to 2-D, cut into 25-frame clips and
assigned to the nearest of the k = 128 centroids held in the state (fitted at start-up by
``d2m_jax.tasks.l2d_kmeans.fit_clusters`` or loaded from ``config.model.clusters_path``); clips
beyond a sequence's length are masked out.

Deliberate fixes of the original (``discriminative_modeling/train.py``):

1. Gradients: the original never called ``zero_grad``, so every SGD step applied the SUM of all
   gradients since the start of training. Here each step uses only its own batch's gradient
   (a functional ``value_and_grad`` cannot accumulate by accident).
2. Teacher forcing: the original fed ``pose[:, j-1] if i > 0 else None`` with ``i`` the *batch*
   index, so the first batch never saw a previous cluster and step 0 of every later batch read
   label 39 (index -1). Here step 0 gets "no previous cluster" (zero embedding) and step j > 0
   gets the true label j-1, for every batch (``teacher_forcing_inputs``).

Loss: cross-entropy summed over the (valid) steps, averaged over songs (the original's summed
per-step ``CrossEntropyLoss``). Generation: song -> code -> at each second pick uniformly among
the top-5 clusters and feed the pick back (the original's ``eval.py``) -> the chosen centroids'
clips concatenated -> (num_frames, J, 2) 2-D dance (depth 0 appended for the mocap skeleton).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from d2m_jax.models import kmeans as kmeans_lib
from d2m_jax.models.learn2dance import (CLIP_FRAMES, DanceClassifier, pose_clips, project_to_2d,
                                        sample_clusters, teacher_forcing_inputs)
from d2m_jax.tasks import l2d_common as common
from d2m_jax.train.parallel_utils import pmean
from d2m_jax.train.task import Task, compute_dtype

FEATURE = "mel_tempogram512"


class ClassifierState(flax.struct.PyTreeNode):
  step: Any
  rng: Any
  params: Any
  opt_state: Any
  centroids: Any      # (k, 25 * J * 2) 2-D clips in data units
  feat_mean: Any
  feat_std: Any


class L2DClassifierTask(Task):
  name = "l2d_classifier"
  generation_features = (FEATURE,)

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.J, self.C = int(m.joints), int(m.coords)
    self.k = int(m.num_clusters)
    dtype = compute_dtype(config)
    self.model = DanceClassifier(self.k, m.hidden, dtype=dtype, rnn_impl=m.get("rnn_impl", "auto"))
    self.tx = common.make_optimizer(config.optim)
    self._centroids = None   # set by prepare_host()

  def synthetic_batch(self, batch_size, rng):
    return common.synthetic_batch(self.config, batch_size, rng)

  # -- clusters -----------------------------------------------------------------------------
  def prepare_host(self, batch, stats=None):
    """Fits (or loads) the k-means centroids on the host before the state is built: from
    ``model.clusters_path``, else the train split (real training: ``stats`` given), else the
    batch's own clips (benchmarks, unit tests). ``init_state`` then only places them."""
    self._centroids = self._fit_centroids(batch, stats)

  def _fit_centroids(self, batch, stats):
    from d2m_jax.tasks import l2d_kmeans
    D = CLIP_FRAMES * self.J * 2
    path = self.config.model.get("clusters_path")
    if path:
      with np.load(path) as z:
        c = np.asarray(z["centroids"], np.float32)
      if c.shape != (self.k, D):
        raise ValueError(f"{path}: centroids {c.shape}, expected {(self.k, D)} "
                         f"(k={self.k}, {CLIP_FRAMES} frames x {self.J} joints x 2)")
      return c
    if stats is not None:   # real training: fit on the train split
      try:
        return l2d_kmeans.fit_clusters(self.config, log=logging.info).centroids
      except Exception as e:  # noqa: BLE001 - e.g. benchmarks with synthetic stats and no data
        logging.warning("l2d_classifier: cannot read the train split (%s: %s)",
                        type(e).__name__, e)
    # No data (benchmarks, unit tests): fit on the batch's own clips.
    logging.warning("l2d_classifier: no stats/clusters_path: fitting clusters on one batch")
    pts, w = l2d_kmeans.clip_points(np.asarray(batch["pose"]), batch.get("length"), self.J,
                                    self.C)
    k = min(self.k, int(np.sum(w > 0)))
    res = kmeans_lib.kmeans(pts, k, weights=w, n_init=1)
    return np.resize(res.centroids, (self.k, D)).astype(np.float32)

  # -- Task API -----------------------------------------------------------------------------
  def init_state(self, rng, batch, stats=None):
    mean, std = common.feature_stats(stats, FEATURE, 512)
    # Centroids from prepare_host(); a shape-only build (restore: they come from the checkpoint)
    # has none yet and uses zeros of the right shape.
    centroids = self._centroids
    if centroids is None:
      centroids = np.zeros((self.k, CLIP_FRAMES * self.J * 2), np.float32)
    k_init, k_state = jax.random.split(rng)
    params = self.model.init(k_init, jnp.zeros((1, 2, 512)), jnp.zeros((1, 2), jnp.int32))["params"]
    return ClassifierState(step=jnp.int32(0), rng=k_state, params=params,
                           opt_state=self.tx.init(params), centroids=jnp.asarray(centroids),
                           feat_mean=jnp.asarray(mean), feat_std=jnp.asarray(std))

  def labels(self, state, batch):
    """(B, n) cluster ids of the batch's 1-s clips and their (B, n) validity mask."""
    p2 = project_to_2d(batch["pose"], self.J, self.C)
    clips, valid = pose_clips(p2, batch.get("length"))
    return kmeans_lib.assign(clips, state.centroids), valid

  def _loss(self, params, state, batch):
    labels, valid = self.labels(state, batch)
    feats = (batch[FEATURE] - state.feat_mean) / state.feat_std
    logits = self.model.apply({"params": params}, feats, teacher_forcing_inputs(labels),
                              batch.get("length"))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    n_songs = jnp.maximum(jnp.sum(jnp.max(valid, 1)), 1.0)
    loss = jnp.sum(ce * valid) / n_songs
    acc = jnp.sum((jnp.argmax(logits, -1) == labels) * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    return loss, {"accuracy": acc, "ce_per_step": jnp.sum(ce * valid) / jnp.maximum(
        jnp.sum(valid), 1.0)}

  def train_step(self, state, batch, axis_name: Optional[str] = None):
    (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(state.params, state, batch)
    grads = pmean(grads, axis_name)   # this batch's gradient only (fix 1)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = pmean(dict(loss=loss, **aux), axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(self, state, batch, axis_name: Optional[str] = None):
    loss, aux = self._loss(state.params, state, batch)
    return pmean(dict(loss=loss, **aux), axis_name)

  # -- generation ---------------------------------------------------------------------------
  @functools.partial(jax.jit, static_argnums=(0, 4, 5))
  def _sample(self, params, feats, rng, num_samples, steps):
    code = self.model.apply({"params": params}, feats, method=DanceClassifier.encode)
    code = jnp.repeat(code, num_samples, 0)
    return sample_clusters(self.model, {"params": params}, code, steps, rng,
                           int(self.config.model.get("top_k", 5)))

  def generate(self, state, feats, beats, num_frames, rng, num_samples=1):
    """Song features -> sampled cluster sequence -> (num_samples, num_frames, J, 2) dance."""
    del beats
    f = np.asarray(feats[FEATURE], np.float32)
    f = (f - np.asarray(state.feat_mean)) / np.asarray(state.feat_std)
    steps = -(-num_frames // CLIP_FRAMES)
    ids = self._sample(state.params, jnp.asarray(f[None]), rng, num_samples, steps)
    clips = np.asarray(state.centroids)[np.asarray(ids)]          # (S, steps, 25*J*2)
    poses = clips.reshape(num_samples, steps * CLIP_FRAMES, self.J * 2)[:, :num_frames]
    self.last_cluster_ids = np.asarray(ids)
    return common.to_output_joints(poses, self.J, self.C)   # mocap: front view, depth 0


def make_task(config):
  return L2DClassifierTask(config)
