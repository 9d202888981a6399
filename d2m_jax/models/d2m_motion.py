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
import jax.numpy as jnp
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
  """Units (3B, T, P), normalised, of every row of :data:`ROWS` for a units batch."""
  st, fz, params = state.stats, state.frozen, state.params
  units = (jnp.asarray(batch["units"]) - st["pose_mean"]) / st["pose_std"]
  B = units.shape[0]
  x = units.reshape((3 * B,) + units.shape[2:])
  k_init, k_prior, k_zd, k_zm, k_noise, k_zdf, k_zmf = jax.random.split(rng, 7)
  stage1 = task.stage1
  mu_i, lv_i = stage1["initp_enc"].apply({"params": fz["initp_enc"]}, x[:, 0])
  z_init = reparameterize(k_init, mu_i, lv_i)
  mu_m, lv_m = stage1["movement_enc"].apply({"params": fz["movement_enc"]}, x)
  decode = lambda z_mov: task.nets["stdp_dec"].apply({"params": params["stdp_dec"]}, z_init,
                                                     z_mov)
  net = lambda name, *args: task.nets[name].apply({"params": params[name]}, *args)

  def codes_to_units(z_dance, key):
    mu_r, lv_r = net("dance_dec", z_dance)
    return decode(reparameterize(key, mu_r, lv_r).reshape(3 * B, -1))

  codes = jnp.concatenate([mu_m.reshape(B, 3, -1), lv_m.reshape(B, 3, -1)], axis=-1)
  mu_d, lv_d = net("dance_enc", codes)
  style = task.style.apply(fz["style"], jnp.asarray(batch["aud_raw"])[:, :task.style.input_frames])
  noise = jax.random.normal(k_noise, (B, task.m.noise_dim))
  mu_f, lv_f = net("audstyle_enc", style, noise)
  return {
      "real": x,
      "vae_recon": decode(mu_m),
      "vae_prior": decode(jax.random.normal(k_prior, mu_m.shape)),
      "dance_path": codes_to_units(reparameterize(k_zd, mu_d, lv_d), k_zm),
      "music_path": codes_to_units(reparameterize(k_zdf, mu_f, lv_f), k_zmf),
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
