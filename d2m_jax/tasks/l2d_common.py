"""Helpers shared by the learn2dance and Kakashi tasks: contract-exact synthetic batches, the 2-D
pose normalisation, and :class:`L2DGANTask`, what the learn2dance GANs plug into the package's
one GAN step.

No TensorFlow / librosa imports here (the data pipeline is imported lazily, only to read data).
"""
from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax.data import batch_layout
from d2m_jax.models.learn2dance import project_to_2d
from d2m_jax.tasks.wgan_common import GANTask

WINDOW_FRAMES = batch_layout.WINDOW_FRAMES
WAVEFORM_SAMPLES = batch_layout.WAVE_SAMPLES
FEATURE_DIMS = batch_layout.FRAME_FEATURE_DIMS
SEQUENCE_FEATURE_DIMS = batch_layout.SEQUENCE_FEATURE_DIMS


def synthetic_batch(config, batch_size: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """A random batch with the pipeline's keys/shapes/dtypes for ``config.data.kind``."""
  kind = config.data.kind
  P = config.model.joints * config.model.coords
  if kind == "windows":
    return batch_layout.windows_batch(batch_size, rng, P, pose_scale=20.0)
  if kind == "sequences":
    return batch_layout.sequences_batch(batch_size, rng, P, int(config.data.max_frames),
                                        pose_scale=20.0)
  raise ValueError(f"config.data.kind={kind!r}: these tasks read 'windows' or 'sequences'")


def pose2d_stats(stats: Optional[dict], joints: int, coords: int):
  """(mean (P2,), scale ()) for the 2-D poses: per-coordinate mean, one global scale (the mean
  per-coordinate std), so distances keep their geometry. Identity-ish without stats."""
  P2 = joints * 2
  if stats is None or "pose_mean" not in stats:
    return np.zeros((P2,), np.float32), np.float32(1.0)
  # jnp: init_state runs under jit/eval_shape with the stats as (traced) arguments
  mean = project_to_2d(jnp.asarray(stats["pose_mean"], jnp.float32), joints, coords)
  std = project_to_2d(jnp.asarray(stats["pose_std"], jnp.float32), joints, coords)
  return mean.astype(jnp.float32), jnp.maximum(jnp.mean(std), 1e-6)


def feature_stats(stats: Optional[dict], name: str, dim: int):
  """(mean, std) of a frame-feature set, or (0, 1) when no stats are given."""
  if stats is None or f"{name}_mean" not in stats:
    return np.zeros((dim,), np.float32), np.ones((dim,), np.float32)
  # jnp: init_state runs under jit/eval_shape with the stats as (traced) arguments
  return (jnp.asarray(stats[f"{name}_mean"], jnp.float32),
          jnp.maximum(jnp.asarray(stats[f"{name}_std"], jnp.float32), 1e-6))


def to_output_joints(poses2d: np.ndarray, joints: int, coords: int) -> np.ndarray:
  """(..., T, J*2) front-view 2-D poses -> (..., T, J, coords) for ``generate``: OpenPose stays
  2-D; for the 3-D mocap skeleton the depth is set to 0 (the plane the front view was taken in),
  so the dance fits the dataset's skeleton and renderer."""
  p = np.asarray(poses2d, np.float32).reshape(poses2d.shape[:-1] + (joints, 2))
  if coords == 3:
    p = np.concatenate([p, np.zeros(p.shape[:-1] + (1,), np.float32)], -1)
  return p


class L2DGANTask(GANTask):
  """The learn2dance GANs on the one GAN step, as their originals: one critic and one generator
  update on the same fake sample, keys from one flat split of ``fold_in(rng, step)`` (and the
  device index) into ``num_keys`` whose roles ``key_roles`` gives, one critic dropout key for
  real, fake and interpolate, the critic's fakes leave the generator's BatchNorm statistics
  alone, no EMA, the logged ``loss`` is the critic's."""
  opt_fields = ("g_opt", "d_opt")
  critic_updates_bn_stats = False

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.J, self.C = int(m.joints), int(m.coords)
    self.P2 = self.J * 2
    self.gamma = float(m.get("gp_weight", 0.0))

  def synthetic_batch(self, batch_size, rng):
    return synthetic_batch(self.config, batch_size, rng)

  def step_keys(self, state, axis_name=None):
    key = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    prep, critic, gen = self.key_roles(*jax.random.split(key, self.num_keys))
    return prep, jax.tree.map(lambda k: k[None], critic), gen

  def _critic(self):
    return self.D

  def step_metrics(self, cm, gm):
    names = {"d_loss": "loss", "w_dist": "wdist"}
    metrics = {names.get(k, k): v[-1] for k, v in cm.items() if k != "grad_norm"}
    return dict(metrics, g_loss=gm["g_loss"])
