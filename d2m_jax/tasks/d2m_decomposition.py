"""Dancing2Music stage 1: the dance-unit VAE ("decomposition", spec §2.3).

Data (kind ``"units"``): ``units`` (B, 3, 32, P). **All three units of every example are used**
(N = 3B units per step; ``model.units_per_example=1`` draws one random unit per example
instead, the original's one-unit sample, used for like-for-like timing). Each unit is copied
twice and each copy gets an independent global augmentation (:func:`jitter_units`: the
original's pixel translation for 2D poses, a yaw rotation for root-relative 3D poses), then is
z-scored with the dataset stats held in the state.

Per step (one jitted body, one backward, four per-module Adams):

* ``z_init`` of both copies' first frames and of 4 random single frames (``permutation(31)[:4]``)
  from one ``initp_enc`` call; ``z_mov`` of both copies from one ``movement_enc`` call;
* the four decoder calls (two self, two cross reconstructions) as ONE batched ``stdp_dec`` call;
* loss = KL(z_init of the first frames) * w + KL(z_mov) * w + L1(single-pose VAE)
  + L1(self) + L1(cross) + mean|z_mov1 - z_mov2|, with w = lambda_kl * kld_coef(step);
* ``optim.kl_free_bits`` (default 0 = the paper): a free-bits floor in nats per latent
  dimension on both KL terms of the loss (:func:`kl_with_free_bits`);
* optional, not in the original (``optim.lambda_stdp_velocity``, default 0 = the paper): + w_v *
  the frame-difference L1 of the four reconstructions (``velocity_l1``). An L1 on positions
  alone lets the decoder return the conditional median trajectory, which on the real mocap keeps
  about half of the units' frame-to-frame motion (measured 2026-11-28, docs/dancing2music.md);
* Adam(2e-4) per module; global-norm clipping at 0.5 for ``movement_enc`` and ``stdp_dec``
  separately; the init-pose networks are not clipped.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from d2m_jax.models import d2m_common as common
from d2m_jax.models.d2m_decomp import InitPoseDec, InitPoseEnc, MovementEnc, StandardPoseDec
from d2m_jax.models.d2m_layers import (kl_divergence, kl_with_free_bits, kld_coef, l1_loss,
                                       reparameterize, velocity_l1)
from d2m_jax.train import optim
from d2m_jax.train.parallel_utils import pmean
from d2m_jax.train.task import Task, compute_dtype

MODULES = ("initp_enc", "initp_dec", "movement_enc", "stdp_dec")


class DecompState(struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  params: Dict[str, Any]
  opt_state: Dict[str, Any]
  stats: Dict[str, jax.Array]


def build_modules(model_cfg, dtype) -> Dict[str, nn.Module]:
  """The four stage-1 networks for ``config.model``."""
  m = model_cfg
  rnn_impl = m.get("rnn_impl", "auto")
  return {
      "initp_enc": InitPoseEnc(m.z_init, m.init_hidden, dtype=dtype),
      "initp_dec": InitPoseDec(m.pose_size, m.init_hidden, dtype=dtype),
      "movement_enc": MovementEnc(m.z_mov, m.hidden, dtype=dtype, rnn_impl=rnn_impl),
      "stdp_dec": StandardPoseDec(m.pose_size, m.unit_length, m.hidden, dtype=dtype,
                                  rnn_impl=rnn_impl,
                                  beat_phase=bool(m.get("beat_phase_input", False))),
  }


def init_module_params(modules, model_cfg, rng) -> Dict[str, Any]:
  m = model_cfg
  keys = jax.random.split(rng, 4)
  P, T = m.pose_size, m.unit_length
  return {
      "initp_enc": modules["initp_enc"].init(keys[0], jnp.zeros((1, P)))["params"],
      "initp_dec": modules["initp_dec"].init(keys[1], jnp.zeros((1, m.z_init)))["params"],
      "movement_enc": modules["movement_enc"].init(keys[2], jnp.zeros((1, T, P)))["params"],
      "stdp_dec": modules["stdp_dec"].init(keys[3], jnp.zeros((1, m.z_init)),
                                           jnp.zeros((1, m.z_mov)))["params"],
  }


def check_units_batch(batch, model_cfg):
  if "units" not in batch:
    raise ValueError("Dancing2Music needs config.data.kind='units' batches (key 'units'); got "
                     f"keys {sorted(batch)}")
  shape = tuple(batch["units"].shape)
  if len(shape) != 4 or shape[1] != 3 or shape[2] != model_cfg.unit_length or \
     shape[3] != model_cfg.pose_size:
    raise ValueError(f"batch['units'] has shape {shape}; expected (B, 3, {model_cfg.unit_length}, "
                     f"{model_cfg.pose_size}) -- set config.model.pose_size to the data's pose_dim")


class DecompositionTask(Task):
  name = "d2m_decomposition"

  def __init__(self, config):
    super().__init__(config)
    self.m = config.model
    self.dtype = compute_dtype(config)
    self.modules = build_modules(self.m, self.dtype)
    self.optimizers = optim.ModuleOptimizers.from_config(config, MODULES)

  # ------------------------------------------------------------------ state
  def init_state(self, rng, batch, stats=None):
    check_units_batch(batch, self.m)
    rng, init_rng = jax.random.split(rng)
    params = init_module_params(self.modules, self.m, init_rng)
    return DecompState(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
                       opt_state=self.optimizers.init(params),
                       stats=common.model_stats(stats, self.m.pose_size))

  def synthetic_batch(self, batch_size, rng):
    """B examples of 3 units; the step uses 3B units (``units_per_example=3``) or B (``=1``)."""
    return common.synthetic_units_batch(batch_size, rng, self.m.pose_size, self.m.unit_length)

  # ------------------------------------------------------------------ model
  def _pairs(self, key, units, stats):
    """(B, 3, T, P) data-unit poses -> two jittered, normalised copies (N, T, P) each."""
    B = units.shape[0]
    k_sel, k1, k2 = jax.random.split(key, 3)
    if self.m.units_per_example == 1:
      idx = jax.random.randint(k_sel, (B,), 0, 3)
      units = units[jnp.arange(B), idx]
    elif self.m.units_per_example == 3:
      units = units.reshape((-1,) + units.shape[2:])
    else:
      raise ValueError(f"model.units_per_example={self.m.units_per_example}: expected 1 or 3")
    norm = lambda x: (x - stats["pose_mean"]) / stats["pose_std"]
    return (norm(common.jitter_units(k1, units, self.m)),
            norm(common.jitter_units(k2, units, self.m)))

  def losses(self, params, x1, x2, key, step):
    """All loss terms (dict) for normalised unit pairs ``x1, x2`` (N, T, P)."""
    m, o = self.m, self.config.optim
    mods = self.modules
    N, T, _ = x1.shape
    k_perm, k_i, k_m = jax.random.split(key, 3)
    frames = jax.random.permutation(k_perm, T - 1)[:o.num_single_poses]
    singles = jax.lax.stop_gradient(jnp.transpose(x1[:, frames], (1, 0, 2)).reshape(-1, x1.shape[-1]))
    mu_i, lv_i = mods["initp_enc"].apply({"params": params["initp_enc"]},
                                         jnp.concatenate([x1[:, 0], x2[:, 0], singles]))
    z_i = reparameterize(k_i, mu_i, lv_i)
    zi1, zi2, z_single = z_i[:N], z_i[N:2 * N], z_i[2 * N:]
    mu_m, lv_m = mods["movement_enc"].apply({"params": params["movement_enc"]},
                                            jnp.concatenate([x1, x2]))
    z_m = reparameterize(k_m, mu_m, lv_m)
    zm1, zm2 = z_m[:N], z_m[N:]
    dec = mods["stdp_dec"].apply({"params": params["stdp_dec"]},
                                 jnp.concatenate([zi1, zi2, zi1, zi2]),
                                 jnp.concatenate([zm1, zm2, zm2, zm1]))
    rec1, rec2, cross1, cross2 = jnp.split(dec, 4)
    single_rec = mods["initp_dec"].apply({"params": params["initp_dec"]}, z_single)
    coef = kld_coef(step, o.kl_anneal_rate, o.kl_anneal_center)
    terms = {
        "kl_init": kl_divergence(mu_i[:2 * N], lv_i[:2 * N]),
        "kl_movement": kl_divergence(mu_m, lv_m),
        "initp_recon": l1_loss(single_rec, singles),
        "self_recon": l1_loss(rec1, x1) + l1_loss(rec2, x2),
        "cross_recon": l1_loss(cross1, x1) + l1_loss(cross2, x2),
        "dist_z_movement": jnp.mean(jnp.abs(zm1 - zm2)),
    }
    w_kl = o.lambda_kl * coef
    free_bits = float(o.get("kl_free_bits", 0.0))
    if free_bits:   # the floor acts on the loss only; the logged terms stay the plain KLs
      kl_sum = (kl_with_free_bits(mu_i[:2 * N], lv_i[:2 * N], free_bits)
                + kl_with_free_bits(mu_m, lv_m, free_bits))
    else:
      kl_sum = terms["kl_init"] + terms["kl_movement"]
    loss = (w_kl * kl_sum
            + o.lambda_initp_recon * terms["initp_recon"]
            + o.lambda_stdp_recon * (terms["self_recon"] + terms["cross_recon"])
            + o.lambda_dist_z_movement * terms["dist_z_movement"])
    lambda_vel = float(o.get("lambda_stdp_velocity", 0.0))
    if lambda_vel:
      terms["velocity_recon"] = (velocity_l1(rec1, x1) + velocity_l1(rec2, x2)
                                 + velocity_l1(cross1, x1) + velocity_l1(cross2, x2))
      loss = loss + lambda_vel * terms["velocity_recon"]
    terms["kl_coef"] = coef
    return loss, terms

  # ------------------------------------------------------------------ steps
  def train_step(self, state, batch, axis_name=None):
    key = jax.random.fold_in(state.rng, state.step)
    k_pair, k_loss = jax.random.split(key)
    x1, x2 = self._pairs(k_pair, batch["units"], state.stats)
    (loss, terms), grads = jax.value_and_grad(self.losses, has_aux=True)(
        state.params, x1, x2, k_loss, state.step)
    grads = pmean(grads, axis_name)
    params, opt_state = self.optimizers.apply(state.params, state.opt_state, grads, MODULES)
    metrics = dict(terms, loss=loss,
                   grad_norm_movement_enc=common.grad_norm(grads["movement_enc"]),
                   grad_norm_stdp_dec=common.grad_norm(grads["stdp_dec"]))
    metrics = pmean({k: v.astype(jnp.float32) for k, v in metrics.items()}, axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def forward(self, state, batch):
    """The step's loss without gradient or update (for ``benchmarks/train_step.py``)."""
    key = jax.random.fold_in(state.rng, state.step)
    k_pair, k_loss = jax.random.split(key)
    x1, x2 = self._pairs(k_pair, batch["units"], state.stats)
    return self.losses(state.params, x1, x2, k_loss, state.step)[0]

  def eval_step(self, state, batch, axis_name=None):
    key = jax.random.fold_in(state.rng, 0x7FFFFFFF)  # fixed: same noise every evaluation
    k_pair, k_loss = jax.random.split(key)
    x1, x2 = self._pairs(k_pair, batch["units"], state.stats)
    loss, terms = self.losses(state.params, x1, x2, k_loss, state.step)
    metrics = dict(terms, loss=loss)
    return pmean({k: v.astype(jnp.float32) for k, v in metrics.items()}, axis_name)

  def motion_rows(self, state, batch, rng):
    """Normalised units (3B, T, P) for the ``motion_ratio`` evaluator: the real units, the
    VAE's reconstruction (posterior means of both codes) and a decode of a prior sample of the
    movement code (same initial pose)."""
    units = batch["units"]
    x = (units.reshape((-1,) + units.shape[2:]) - state.stats["pose_mean"]) \
        / state.stats["pose_std"]
    p, mods = state.params, self.modules
    mu_i, _ = mods["initp_enc"].apply({"params": p["initp_enc"]}, x[:, 0])
    mu_m, _ = mods["movement_enc"].apply({"params": p["movement_enc"]}, x)
    decode = lambda z_mov: mods["stdp_dec"].apply({"params": p["stdp_dec"]}, mu_i, z_mov)
    return {"real": x, "vae_recon": decode(mu_m),
            "vae_prior": decode(jax.random.normal(rng, mu_m.shape, mu_m.dtype))}


def make_task(config) -> DecompositionTask:
  return DecompositionTask(config)
