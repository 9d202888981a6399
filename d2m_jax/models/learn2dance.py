"""learn2dance (ardapekis/learn2dance), discriminative model: pose-clip clusters + next-cluster
classifier conditioned on a song code. Spec: ``../shared/specs/wgan_learn2dance_kakashi.md`` §2.

Input poses (:func:`project_to_2d`):

* OpenPose ``(T, 15, 2)`` input (the original's, already root-relative after subtracting MidHip,
  y up): used as is.
* Mocap ``(T, 23, 3)`` (cm, y up, root-relative): **orthographic front view**, i.e. the camera
  looks along -z and the 2-D pose is the (x, y) of every joint; all 23 joints are kept (46-d
  vector). This is the projection a front-facing camera at infinity would see and the one
  write-up 1 draws its stick figures with; depth is dropped.

Clips (:func:`pose_clips`): the original cut 30-fps OpenPose tracks into 30-frame (1 s) clips. At
the 25-fps motion rate used here a clip is **25 frames = 1 s** (``CLIP_FRAMES``), so a cluster is
still "one second of dance"; 40 clips = 1000 frames = 40 s, the original's 40 labels per song.

Model (:class:`DanceClassifier`):

* ``MusicEncoder``: per-step Linear(512 -> 256) -> LSTM(256, 2 layers, bidirectional) over the
  log mel + tempogram frames -> song code = final hidden state of the last layer's forward
  direction (the original's ``h_n[2]``), 256-d.
* ``ClusterDecoder``: previous cluster -> Embedding(k, 256) (zeros when there is none), concat
  with the song code (512) -> Linear(512 -> 256) -> ReLU -> Linear(256 -> k) logits. The same
  song code is used for every step (the original has no time alignment; kept).

Deliberate fixes of the original's training (docstring of ``d2m_jax.tasks.l2d_classifier``):
gradients are not accumulated across batches (the original never called ``zero_grad``), and the
teacher-forcing input of step j is label j-1 for every example (the original indexed the previous
cluster with the *batch* index, so its first batch never saw one and step 0 wrapped to label 39).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.nn import LSTM, TorchDense

CLIP_FRAMES = 25          # 1 s at the 25-fps motion rate
NUM_CLUSTERS = 128


def project_to_2d(pose, joints: int, coords: int):
  """(..., J*C) root-relative poses -> (..., J*2) front-view 2-D poses (x, y).

  ``coords == 2`` (OpenPose) is the identity; ``coords == 3`` drops the depth axis z
  (orthographic camera looking along -z, y up).
  """
  if coords == 2:
    return pose
  if coords != 3:
    raise ValueError(f"project_to_2d: coords must be 2 or 3, got {coords}")
  p = pose.reshape(pose.shape[:-1] + (joints, 3))[..., :2]
  return p.reshape(pose.shape[:-1] + (joints * 2,))


def pose_clips(pose2d, length=None, clip_frames: int = CLIP_FRAMES):
  """Cuts (B, T, P2) poses into (B, T // clip, clip*P2) clips and a (B, n) validity mask.

  A clip is valid when it lies fully inside ``length`` (frames actually present; None = all).
  """
  B, T, P2 = pose2d.shape
  n = T // clip_frames
  clips = pose2d[:, :n * clip_frames].reshape(B, n, clip_frames * P2)
  if length is None:
    valid = jnp.ones((B, n), jnp.float32)
  else:
    ends = (jnp.arange(n) + 1) * clip_frames
    valid = (ends[None, :] <= length[:, None]).astype(jnp.float32)
  return clips, valid


class MusicEncoder(nn.Module):
  """Per-step Linear(D -> 256) -> 2-layer bidirectional LSTM(256) -> (B, 256) song code."""
  hidden: int = 256
  num_layers: int = 2
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  @nn.compact
  def __call__(self, feats, length=None):
    x = TorchDense(self.hidden, dtype=self.dtype, name="in_proj")(feats)
    if length is not None:  # zero the padded tail so it does not feed the backward direction
      mask = jnp.arange(feats.shape[1])[None, :] < length[:, None]
      x = x * mask[..., None].astype(x.dtype)
    _, (h_n, _) = LSTM(self.hidden, num_layers=self.num_layers, bidirectional=True,
                       dtype=self.dtype, impl=self.rnn_impl, name="lstm")(x)
    # PyTorch h_n layout (L*2, B, H): index 2 = last layer, forward direction.
    return h_n[2 * (self.num_layers - 1)]


class ClusterDecoder(nn.Module):
  """(song code, previous cluster or -1) -> next-cluster logits."""
  num_clusters: int = NUM_CLUSTERS
  hidden: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, code, prev):
    emb = nn.Embed(self.num_clusters, code.shape[-1], name="prev_embed",
                   embedding_init=nn.initializers.normal(1.0))(jnp.maximum(prev, 0))
    emb = jnp.where((prev >= 0)[..., None], emb, 0.0)
    code = jnp.broadcast_to(code[..., None, :], emb.shape) if emb.ndim == code.ndim + 1 else code
    h = jnp.concatenate([code, emb], -1)
    h = nn.relu(TorchDense(self.hidden, dtype=self.dtype, name="fc1")(h))
    return TorchDense(self.num_clusters, dtype=self.dtype, name="fc2")(h).astype(jnp.float32)


class DanceClassifier(nn.Module):
  """Song features (B, T, 512) + teacher-forced previous clusters (B, n) -> logits (B, n, k)."""
  num_clusters: int = NUM_CLUSTERS
  hidden: int = 256
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  def setup(self):
    self.encoder = MusicEncoder(self.hidden, dtype=self.dtype, rnn_impl=self.rnn_impl)
    self.decoder = ClusterDecoder(self.num_clusters, self.hidden, dtype=self.dtype)

  def __call__(self, feats, prev, length=None):
    return self.decoder(self.encoder(feats, length), prev)

  def encode(self, feats, length=None):
    return self.encoder(feats, length)

  def decode(self, code, prev):
    return self.decoder(code, prev)


def teacher_forcing_inputs(labels):
  """Previous-cluster inputs for steps 0..n-1: -1 (none) at step 0, then labels[:, j-1].

  This is the fixed indexing (the original used the batch index instead of the step index).
  """
  none = jnp.full(labels.shape[:-1] + (1,), -1, labels.dtype)
  return jnp.concatenate([none, labels[..., :-1]], -1)


def sample_clusters(model, params, code, num_steps: int, rng, top_k: int = 5):
  """The original's generation: at each step choose uniformly among the top-k logits and feed
  the choice back. code (S, 256) -> (S, num_steps) int32 cluster ids."""
  S = code.shape[0]

  def step(prev, key):
    logits = model.apply(params, code, prev, method=DanceClassifier.decode)
    _, top = jax.lax.top_k(logits, top_k)
    pick = jax.random.randint(key, (S,), 0, top_k)
    nxt = jnp.take_along_axis(top, pick[:, None], -1)[:, 0].astype(jnp.int32)
    return nxt, nxt

  _, seq = jax.lax.scan(step, jnp.full((S,), -1, jnp.int32), jax.random.split(rng, num_steps))
  return seq.T
