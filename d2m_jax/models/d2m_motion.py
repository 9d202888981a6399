"""Where a Dancing2Music model loses motion: a stage-by-stage motion budget on real units.

A trained composition (with the stage-1 networks it carries) is run on a batch of real dance
units (B, 3, T, P), and each path's decoded units are compared with the real ones in the
normalised pose space the networks work in:

=============  ============================================================================
row            decoded units
=============  ============================================================================
real           the real units themselves (z-scored with the state's stats)
vae_recon      stdp_dec(z_init, posterior mean of movement_enc): the stage-1 reconstruction
vae_prior      stdp_dec(z_init, z_mov ~ N(0, I))
dance_path     dance_enc -> z_dance (sampled) -> dance_dec -> z_mov (sampled) -> stdp_dec
music_path     style(aud_raw), noise -> audstyle_enc -> dance_dec -> stdp_dec: what generation
               decodes (before beat warping)
=============  ============================================================================

z_init is always the real unit's own first pose (sampled from initp_enc), so every row starts
where the real unit starts and only the movement differs. Per row: ``motion`` = mean
``|x[t+1] - x[t]|`` (per frame and pose dimension), ``temporal_std`` = mean over units and
dimensions of the standard deviation over frames, ``batch_std`` = mean standard deviation over
units (diversity), each also as a ratio to the real row. FID_k and Div_k react strongly to this
(kinetic energies are squared velocities): on the real data, real test dances damped to 60% of
their motion still score FID_k 40 (real 32), at 40% 74 (docs/dancing2music.md).
"""
from __future__ import annotations

from typing import Dict

import jax
import numpy as np

from d2m_jax.models.d2m_layers import reparameterize

ROWS = ("real", "vae_recon", "vae_prior", "dance_path", "music_path")


def unit_stats(units) -> Dict[str, float]:
  """motion / temporal_std / batch_std of units (N, T, P) (see the module docstring)."""
  u = np.asarray(units, np.float64)
  return {"motion": float(np.abs(np.diff(u, axis=-2)).mean()),
          "temporal_std": float(u.std(axis=-2).mean()),
          "batch_std": float(u.std(axis=0).mean())}


def decoded_units(task, state, batch, rng) -> Dict[str, jax.Array]:
  """Units (3B, T, P), normalised, of every row of :data:`ROWS` for a units batch.

  The frozen inputs and the two z_dance paths are the composition task's own
  (``_frozen_inputs``, ``_dance_latents``: the normalisation, z_init, the movement codes and the
  style exactly as in training); ``batch`` holds ``units``, ``aud`` and ``aud_raw``.
  """
  k_init, k_prior, k_zm, k_zmf, *k_lat = jax.random.split(rng, 7)
  fin = task._frozen_inputs(state, batch, k_init)  # pylint: disable=protected-access
  lat = task._dance_latents(state.params, fin,  # pylint: disable=protected-access
                            dict(zip(("z_dance", "noise", "z_dance_f"), k_lat)))
  B = fin["mu_m"].shape[0]
  params = state.params
  decode = lambda z_mov: task.nets["stdp_dec"].apply({"params": params["stdp_dec"]},
                                                     fin["z_init"], z_mov.reshape(3 * B, -1))

  def codes_to_units(z_dance, key):
    mu_r, lv_r = task.nets["dance_dec"].apply({"params": params["dance_dec"]}, z_dance)
    return decode(reparameterize(key, mu_r, lv_r))

  return {
      "real": fin["units"],
      "vae_recon": decode(fin["mu_m"]),
      "vae_prior": decode(jax.random.normal(k_prior, fin["mu_m"].shape)),
      "dance_path": codes_to_units(lat["z_dance"], k_zm),
      "music_path": codes_to_units(lat["z_dance_f"], k_zmf),
  }


def motion_budget(task, state, batch, rng) -> Dict[str, Dict[str, float]]:
  """Per row of :data:`ROWS`: :func:`unit_stats` and their ratios to the real row."""
  rows = {k: unit_stats(v) for k, v in decoded_units(task, state, batch, rng).items()}
  real = rows["real"]
  if real["motion"] <= 0.0:
    raise ValueError("motion_budget: the real units do not move (all frames equal)")
  for r in rows.values():
    r.update({f"{k}_ratio": r[k] / real[k] for k in ("motion", "temporal_std", "batch_std")})
  return rows


def markdown_table(rows: Dict[str, Dict[str, float]]) -> str:
  lines = ["| row | motion | ratio | temporal std | ratio | batch std | ratio |",
           "|---|---|---|---|---|---|---|"]
  for name, r in rows.items():
    lines.append(f"| {name} | {r['motion']:.4f} | {r['motion_ratio']:.2f} | "
                 f"{r['temporal_std']:.3f} | {r['temporal_std_ratio']:.2f} | "
                 f"{r['batch_std']:.3f} | {r['batch_std_ratio']:.2f} |")
  return "\n".join(lines)


def joint_speed(poses) -> float:
  """Mean ``|x[t+1] - x[t]|`` over frames, joints and coordinates of root-relative poses
  (..., T, J, C) in data units (cm for the mocap); a list of sequences is pooled by frames."""
  if isinstance(poses, (list, tuple)):
    tot = sum(float(np.abs(np.diff(np.asarray(p, np.float64), axis=-3)).sum()) for p in poses)
    cnt = sum(np.diff(np.asarray(p), axis=-3).size for p in poses)
    return tot / max(cnt, 1)
  return float(np.abs(np.diff(np.asarray(poses, np.float64), axis=-3)).mean())


def dance_motion_ratio(joints, train_poses) -> float:
  """A generated dance's joint speed over its training data's (:func:`joint_speed`): the quick
  start's end figure (1.0 = moves as much as the dances it learnt from)."""
  return joint_speed(joints) / joint_speed(train_poses)
