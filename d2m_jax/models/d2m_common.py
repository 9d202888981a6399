"""Pieces shared by the two Dancing2Music tasks: stats, augmentation, gradient norms.

(Their per-module optimisers are ``d2m_jax.train.optim.ModuleOptimizers``.)
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


AUDIO_FEATURE = "d2m28"


def grad_norm(tree) -> jax.Array:
  return optax.global_norm(tree).astype(jnp.float32)


def model_stats(stats: Optional[Mapping[str, Any]], pose_size: int,
                aud_dim: int = 28) -> Dict[str, jax.Array]:
  """The normalisation statistics kept in the state (identity when ``stats`` is None).

  jnp only, so that ``init_state`` traces under ``jax.jit`` (the engine jits it).
  """
  out = {"pose_mean": jnp.zeros(pose_size), "pose_std": jnp.ones(pose_size),
         "aud_mean": jnp.zeros(aud_dim), "aud_std": jnp.ones(aud_dim)}
  if stats is not None:
    for src, dst in (("pose_mean", "pose_mean"), ("pose_std", "pose_std"),
                     (f"{AUDIO_FEATURE}_mean", "aud_mean"), (f"{AUDIO_FEATURE}_std", "aud_std")):
      if src in stats:
        out[dst] = jnp.asarray(stats[src], jnp.float32)
  if tuple(out["pose_mean"].shape) != (pose_size,):
    raise ValueError(f"stats pose_mean has shape {tuple(out['pose_mean'].shape)}, but "
                     f"config.model.pose_size={pose_size}")
  # generation calibration (d2m_jax.data.examples.generation_stats), kept with the checkpoint:
  # the facing-normalised mean pose and percentiles 0..100 of the train units' motion
  out["pose_init"] = out["pose_mean"]
  out["unit_motion_pct"] = jnp.zeros((101,))
  if stats is not None:
    for k in ("pose_init", "unit_motion_pct"):
      if k in stats and tuple(np.shape(stats[k])) == tuple(out[k].shape):
        out[k] = jnp.asarray(stats[k], jnp.float32)
  out["pose_std"] = jnp.maximum(out["pose_std"], 1e-6)
  out["aud_std"] = jnp.maximum(out["aud_std"], 1e-6)
  return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def joint_dims(model_cfg) -> int:
  """Coordinates per joint: ``model.joint_dims`` or 3 for the 69-d mocap pose, else 2."""
  c = model_cfg.get("joint_dims", None)
  if c:
    return int(c)
  return 3 if model_cfg.pose_size == 69 else 2


def jitter_units(key, units: jax.Array, model_cfg) -> jax.Array:
  """One random global augmentation per unit, in data units (before normalisation).

  ``units`` (N, T, P). Kinds (``model.jitter``):

  * ``"translate"`` -- the original's (2D OpenPose, pixels): every joint shifted by
    (U(-jitter_x, jitter_x), U(-jitter_y, jitter_y)).
  * ``"yaw"`` -- for root-relative 3D poses (y up): a rotation about the vertical axis by
    U(-jitter_yaw_deg, jitter_yaw_deg). A translation would move the root off the origin, which
    never happens in root-relative data (it would teach invariance to a nuisance absent from the
    data); the facing direction, by contrast, varies between and within sequences, so the
    movement code is taught to ignore it and the initial pose to carry it.
  * ``"auto"`` -- ``"yaw"`` for 3 coordinates per joint, ``"translate"`` for 2; ``"none"``.
  """
  kind = model_cfg.jitter
  C = joint_dims(model_cfg)
  if kind == "auto":
    kind = "yaw" if C == 3 else "translate"
  if kind == "none":
    return units
  N, T, P = units.shape
  J = P // C
  x = units.reshape(N, T, J, C)
  if kind == "translate":
    half = jnp.asarray([model_cfg.jitter_x, model_cfg.jitter_y] + [0.0] * (C - 2), jnp.float32)
    shift = jax.random.uniform(key, (N, 1, 1, C), minval=-1.0, maxval=1.0) * half
    x = x + shift
  elif kind == "yaw":
    if C != 3:
      raise ValueError(f"model.jitter='yaw' needs 3D joints, got {C} coordinates per joint")
    a = jax.random.uniform(key, (N, 1, 1), minval=-1.0, maxval=1.0) * math.radians(
        model_cfg.jitter_yaw_deg)
    cos, sin = jnp.cos(a), jnp.sin(a)
    px, py, pz = x[..., 0], x[..., 1], x[..., 2]
    x = jnp.stack([cos * px + sin * pz, py, -sin * px + cos * pz], axis=-1)
  else:
    raise ValueError(f"model.jitter={kind!r}: expected auto|translate|yaw|none")
  return x.reshape(N, T, P)


def synthetic_units_batch(batch_size: int, rng: np.random.Generator, pose_size: int,
                          unit_length: int = 32) -> Dict[str, np.ndarray]:
  """A kind-"units" batch with the pipeline's keys, shapes and dtypes (random smooth poses)."""
  B = batch_size
  base = rng.normal(size=(B, 1, 1, pose_size)) * 10.0
  steps = rng.normal(size=(B, 3, unit_length, pose_size)).cumsum(axis=2)
  return {
      "units": (base + steps).astype(np.float32),
      "aud": rng.normal(size=(B, 3 * unit_length, 28)).astype(np.float32),
      "aud_raw": rng.normal(size=(B, 2 * unit_length, 28)).astype(np.float32),
      "style": rng.integers(0, 4, size=(B,)).astype(np.int32),
  }
