"""Dancing2Music stage 2: the music-to-movement GAN ("composition", spec §2.4).

Loads ``initp_enc``, ``movement_enc`` and ``stdp_dec`` (and the normalisation stats) from the
decomposition checkpoint in ``config.model.decomp_workdir``; ``initp_enc``/``movement_enc``
are frozen (evaluated outside the differentiated function, so no backward is spent on them:
the original computed and discarded ``movement_enc`` gradients), ``stdp_dec`` is fine-tuned at
``optim.stdp_dec.lr`` (0.1 x lr). Trained: ``dance_enc``, ``dance_dec``, ``audstyle_enc``,
``dance_reg`` (Dance2Style) and the two latent discriminators ``dis_movement``/``dis_dance``
(conditioned on the mean audio feature). Every module has its own Adam with global-norm
clipping at 0.5, as in the original.

One jitted step holds all updates of one iteration:

1. D: BCE(Dm(real codes)=1) + BCE(Dm(fake codes)=0) + BCE(Dz(real z_dance)=1) + BCE(Dz(fake)=0);
2. G: KL(dance_dec codes) + KL(z_dance) + L1 code reconstruction + 10 L1 pose reconstruction
   (+ ``optim.lambda_stdpseq_velocity`` x its frame-difference L1: not in the original, default 0)
   + non-saturating GAN terms against the *updated* discriminators; steps dance_enc,
   dance_dec, audstyle_enc and stdp_dec. The generator forward runs once (``jax.vjp``): the D
   phase and the G loss reuse its outputs;
3. style: MSE(Dance2Style(z_dance), style) + MSE(Dance2Style(z_dance_fake), style); steps
   dance_enc, audstyle_enc, dance_reg.

``config.model.update_mode``:

* ``"recompute"`` (default): phase 3's forward is **recomputed after the phase-2 update** with
  the updated dance_enc/audstyle_enc (same noise). The original's phase 3 back-propagated old
  activations through weights that phase 2 had already changed in place; that only "worked" on
  PyTorch <= 1.4 and fails on later versions (spec §2.4), so it cannot be reproduced exactly;
  recomputing is the clean reading of it. (stdp_dec gets no gradient in phase 3 and is not
  stepped there; the original's zero-gradient Adam step on it is not reproduced.)
* ``"merged"``: WeiyuDu's update -- the D step, then ONE step on the phase-2 + phase-3 loss over
  dance_enc, dance_dec, audstyle_enc, stdp_dec and dance_reg (their variant also stepped
  movement_enc at lr 2e-5; here it stays frozen).

Deliberate fixes of the original (documented in the README):

* every style is sampled (the NVlabs loader overwrote ``randint(0,2)`` by ``randint(0,1)`` and
  never sampled hip-hop): the units pipeline samples all styles and nothing here filters them;
* the composition audio is the audio **of the sampled units** (``aud``: the units' d2m28,
  time-normalised like them, for the discriminators' mean-audio condition; ``aud_raw``: real-
  time d2m28 from the first unit's first frame, for the style extractor), not ``aud[:30]`` of
  the clip whichever units were drawn;
* the style extractor sees the input length it was trained on (``style_input_frames``, read
  from the style checkpoint's config when given), not 30 frames for a 59-frame model.

Style extractor: the frozen extractor of the style-classifier task, from
``config.model.style_workdir`` (``d2m_jax.models.style.get_style``). **Fallback** when no
style checkpoint is given: the original's small ``AudioClassifier_rnn`` architecture
(:class:`StyleGRU`), randomly initialised from ``config.seed`` and frozen: a fixed random
recurrent feature of the music. The stage then still trains and generation is still a
deterministic function of the music, but the "style" carries no learned genre information;
it is meant for tests, benchmarks and smoke runs.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from d2m_jax.models import d2m_common as common
from d2m_jax.models import d2m_motion
from d2m_jax.models.d2m_comp import (AudstyleEnc, Dance2Style, DanceAudDis2, DanceDec, DanceEnc,
                                     StyleGRU)
from d2m_jax.models.d2m_layers import (bce_with_logits, kl_divergence, kl_with_free_bits,
                                       l1_loss, mse_loss, reparameterize, velocity_l1)
from d2m_jax.tasks import d2m_decomposition as decomp
from d2m_jax.train import optim
from d2m_jax.train.parallel_utils import pmean
from d2m_jax.train.task import Task, compute_dtype

G_MODULES = ("dance_enc", "dance_dec", "audstyle_enc", "stdp_dec")
D_MODULES = ("dis_movement", "dis_dance")
STYLE_PHASE_MODULES = ("dance_enc", "audstyle_enc", "dance_reg")
MERGED_MODULES = G_MODULES + ("dance_reg",)
DECOMP_MODEL_FIELDS = ("pose_size", "joint_dims", "z_init", "z_mov", "hidden", "init_hidden",
                       "unit_length", "beat_phase_input")


class CompState(struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  params: Dict[str, Any]       # trained modules
  opt_state: Dict[str, Any]
  frozen: Dict[str, Any]       # initp_enc, movement_enc, style extractor
  stats: Dict[str, jax.Array]


class StyleExtractor:
  """The frozen music-style extractor: ``apply(sparams, aud (B, T, 28) in data units) -> (B, S)``.

  ``sparams = {"params", "mean", "std"}`` lives in ``state.frozen["style"]`` (so composition
  checkpoints are self-contained): the extractor's own parameters and the d2m28 statistics it
  was trained with.
  """

  def __init__(self, config, restored=None):
    m = config.model
    self.workdir = m.get("style_workdir", None) or None
    self.input_frames = int(m.style_input_frames)
    self.style_dim = int(m.style_dim)
    self._restored = None
    if self.workdir:
      from d2m_jax.models import style as style_models  # pylint: disable=import-outside-toplevel
      self._get_style = style_models.get_style
    if self.workdir and restored is not None:
      # Rebuilt from a composition checkpoint (self-contained): the weights are in it and the
      # input length in config.model.style_input_frames (written at training time).
      self._restored = restored
      cfg_path = os.path.join(self.workdir, "config.json")
      if not m.get("style_input_frames_recorded", False) and os.path.exists(cfg_path):
        from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
        # a workdir trained before style_input_frames was recorded: read it where it still is
        self.input_frames = int(checkpoint.load_config(self.workdir).model.num_frames)
    elif self.workdir:
      from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
      self.workdir = os.path.abspath(self.workdir)
      style_cfg = checkpoint.load_config(self.workdir)
      self.input_frames = int(style_cfg.model.num_frames)  # the length it was trained on
      with config.unlocked():  # recorded in config.json: generation needs no style workdir
        m.style_workdir = self.workdir
        m.style_input_frames = self.input_frames
        m.style_input_frames_recorded = True
      # its weights are restored on first use (restored()), not here
    else:
      self.module = StyleGRU(self.style_dim, rnn_impl=m.get("rnn_impl", "auto"))

  def restored(self):
    """The style workdir's parameters and d2m28 stats, restored on first use (generation from a
    composition workdir's state never needs them)."""
    if self._restored is None:
      def load():
        from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel
        state, _, _ = restore_workdir(self.workdir)
        return jax.device_get({"params": state.params, "mean": state.feat_mean,
                               "std": state.feat_std})
      self._restored = restore_eagerly(load)
    return self._restored

  def init(self, rng, stats):
    """Frozen style parameters: restored from ``style_workdir`` or the random fallback."""
    if self.workdir:
      return jax.tree.map(jnp.asarray, self.restored())
    aud = jnp.zeros((1, self.input_frames, 28))
    return {"params": self.module.init(rng, aud)["params"], "mean": stats["aud_mean"],
            "std": stats["aud_std"]}

  def apply(self, sparams, aud):
    if self.workdir:
      return self._get_style(sparams["params"], aud, (sparams["mean"], sparams["std"]))
    style, _ = self.module.apply({"params": sparams["params"]},
                                 (aud - sparams["mean"]) / sparams["std"])
    return jax.lax.stop_gradient(style)


def restore_eagerly(load):
  """``load()`` (an orbax restore) run in a fresh thread. JAX's trace state is per thread, so the
  restore runs eagerly even when asked for while the engine traces ``init_state`` under
  ``jax.jit`` (traced, it would hand back tracers)."""
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(load).result()


def _load_decomposition(workdir: str):
  """(params, stats) of a decomposition workdir's latest checkpoint, as host arrays."""
  import os  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
    raise FileNotFoundError(f"config.model.decomp_workdir={workdir!r}: no checkpoints/ there "
                            "(train configs/d2m_decomposition.py first)")
  from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel
  state, _, _ = restore_workdir(workdir)
  return jax.device_get((state.params, state.stats))


class CompositionTask(Task):
  name = "d2m_composition"

  def __init__(self, config, frozen=None):
    """``frozen``: the stage-1 and style weights taken from a composition checkpoint
    (:func:`make_task_for_restore`); None: from ``decomp_workdir``/``style_workdir``."""
    super().__init__(config)
    m = config.model
    self.decomp_workdir = m.get("decomp_workdir", None) or None
    if self.decomp_workdir and frozen is None:
      self.decomp_workdir = os.path.abspath(self.decomp_workdir)
      with config.unlocked():  # absolute in config.json: a resume works from any directory
        m.decomp_workdir = self.decomp_workdir
      from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
      dcfg = checkpoint.load_config(self.decomp_workdir).model
      with config.unlocked():
        for f in DECOMP_MODEL_FIELDS:
          if f in dcfg:
            config.model[f] = dcfg[f]
    self.m = config.model
    self.fps = float(self.m.get("fps", 25.0))   # motion fps (read by d2m_jax.generate)
    self.dtype = compute_dtype(config)
    self.stage1 = decomp.build_modules(self.m, self.dtype)
    dt = self.dtype
    rnn_impl = m.get("rnn_impl", "auto")
    self.nets = {
        "dance_enc": DanceEnc(m.z_dance, m.dance_hidden, dtype=dt, rnn_impl=rnn_impl),
        "dance_dec": DanceDec(m.z_mov, 3, m.dance_hidden, dtype=dt, rnn_impl=rnn_impl),
        "audstyle_enc": AudstyleEnc(m.z_dance, dtype=dt),
        "dance_reg": Dance2Style(m.style_dim, dtype=dt),
        "dis_movement": DanceAudDis2(dtype=dt),
        "dis_dance": DanceAudDis2(dtype=dt),
        "stdp_dec": self.stage1["stdp_dec"],
    }
    self.style = StyleExtractor(config, None if frozen is None else frozen["style"])
    # A composition checkpoint is self-contained: rebuilt from one (``frozen``), the stage-1
    # weights come from it; otherwise the stage-1 and style workdirs are restored on first use
    # (init_state), so building the task for generation restores nothing but its own state.
    self._pretrained = None
    if frozen is not None and self.decomp_workdir:
      self._pretrained = frozen["decomp"]
    # optim.finetune_stdp_dec (default True, the paper): fine-tune the stage-1 decoder at its
    # own lr (optim.stdp_dec.lr, 0.1 x lr); False keeps it frozen at its stage-1 weights.
    self.finetune_stdp_dec = bool(config.optim.get("finetune_stdp_dec", True))
    self.optimizers = optim.ModuleOptimizers.from_config(config, self.nets)
    if m.update_mode not in ("recompute", "merged"):
      raise ValueError(f"config.model.update_mode={m.update_mode!r}: expected 'recompute' or 'merged'")

  # ------------------------------------------------------------------ state
  def init_state(self, rng, batch, stats=None):
    decomp.check_units_batch(batch, self.m)
    m = self.m
    rng, k_stage1, k_style, *keys = jax.random.split(rng, 3 + len(self.nets))
    stage1 = decomp.init_module_params(self.stage1, m, k_stage1)
    model_stats = common.model_stats(stats, m.pose_size)
    if self.decomp_workdir:
      # Under the engine's jax.jit(init_state) these are constants.
      if self._pretrained is None:
        self._pretrained = restore_eagerly(lambda: _load_decomposition(self.decomp_workdir))
      dparams, dstats = self._pretrained
      stage1 = jax.tree.map(jnp.asarray, {k: dparams[k] for k in ("initp_enc", "movement_enc",
                                                                   "stdp_dec")})
      model_stats = {k: jnp.asarray(v, jnp.float32) for k, v in dict(dstats).items()}
    else:
      logging.warning("d2m_composition: config.model.decomp_workdir is not set: the stage-1 "
                      "networks are RANDOMLY initialised (tests/benchmarks only)")
    dummies = {
        "dance_enc": (jnp.zeros((1, 3, 2 * m.z_mov)),),
        "dance_dec": (jnp.zeros((1, m.z_dance)),),
        "audstyle_enc": (jnp.zeros((1, m.style_dim)), jnp.zeros((1, m.noise_dim))),
        "dance_reg": (jnp.zeros((1, m.z_dance)),),
        "dis_movement": (jnp.zeros((1, 3, 2 * m.z_mov)), jnp.zeros((1, 28))),
        "dis_dance": (jnp.zeros((1, 1, 2 * m.z_dance)), jnp.zeros((1, 28))),
    }
    params = {k: self.nets[k].init(key, *dummies[k])["params"]
              for key, k in zip(keys, dummies)}
    params["stdp_dec"] = stage1["stdp_dec"]
    frozen = {"initp_enc": stage1["initp_enc"], "movement_enc": stage1["movement_enc"],
              "style": self.style.init(k_style, model_stats)}
    return CompState(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
                     opt_state=self.optimizers.init(params), frozen=frozen, stats=model_stats)

  def synthetic_batch(self, batch_size, rng):
    """B examples = B clips of 3 units (3B units through the networks)."""
    return common.synthetic_units_batch(batch_size, rng, self.m.pose_size, self.m.unit_length)

  # ------------------------------------------------------------------ pieces
  def _apply(self, name, params, *args):
    return self.nets[name].apply({"params": params[name]}, *args)

  def _frozen_inputs(self, state, batch, key):
    """Everything computed by the frozen networks (no gradient)."""
    m, st = self.m, state.stats
    units = (batch["units"] - st["pose_mean"]) / st["pose_std"]
    B = units.shape[0]
    flat = units.reshape((3 * B,) + units.shape[2:])
    aud = (batch["aud"] - st["aud_mean"]) / st["aud_std"]
    aud_raw = batch["aud_raw"]
    L = self.style.input_frames
    if aud_raw.shape[1] < L:
      raise ValueError(f"batch['aud_raw'] has {aud_raw.shape[1]} frames; the style extractor "
                       f"needs style_input_frames={L}")
    style = self.style.apply(state.frozen["style"], aud_raw[:, :L])
    mu_i, lv_i = self.stage1["initp_enc"].apply({"params": state.frozen["initp_enc"]}, flat[:, 0])
    z_init = reparameterize(key, mu_i, lv_i)
    mu_m, lv_m = self.stage1["movement_enc"].apply({"params": state.frozen["movement_enc"]}, flat)
    out = {"units": flat, "aud_mean": jnp.mean(aud, axis=1), "style": style, "z_init": z_init,
           "mu_m": mu_m.reshape(B, 3, -1), "lv_m": lv_m.reshape(B, 3, -1)}
    return jax.tree.map(jax.lax.stop_gradient, out)

  def _dance_latents(self, params, fin, keys):
    """Sampled z_dance of the real path and the fake (music) path, with their (mu, logvar)."""
    codes = jnp.concatenate([fin["mu_m"], fin["lv_m"]], axis=-1)
    mu_d, lv_d = self._apply("dance_enc", params, codes)
    z_dance = reparameterize(keys["z_dance"], mu_d, lv_d)
    noise = jax.random.normal(keys["noise"], (codes.shape[0], self.m.noise_dim))
    mu_df, lv_df = self._apply("audstyle_enc", params, fin["style"], noise)
    z_dance_f = reparameterize(keys["z_dance_f"], mu_df, lv_df)
    return dict(mu_d=mu_d, lv_d=lv_d, z_dance=z_dance, mu_df=mu_df, lv_df=lv_df,
                z_dance_f=z_dance_f)

  def _g_forward(self, gparams, fin, keys):
    out = self._dance_latents(gparams, fin, keys)
    B = out["z_dance"].shape[0]
    mu, lv = self._apply("dance_dec", gparams, jnp.concatenate([out["z_dance"], out["z_dance_f"]]))
    out.update(mu_r=mu[:B], lv_r=lv[:B], mu_f=mu[B:], lv_f=lv[B:])
    z_mov_r = reparameterize(keys["z_mov"], out["mu_r"], out["lv_r"]).reshape(3 * B, -1)
    out["recon"] = self._apply("stdp_dec", gparams, fin["z_init"], z_mov_r)
    return out

  @staticmethod
  def _dis_inputs(out):
    real_m = jnp.concatenate([out["mu_r"], out["lv_r"]], axis=-1)
    fake_m = jnp.concatenate([out["mu_f"], out["lv_f"]], axis=-1)
    real_z = jnp.concatenate([out["mu_d"], out["lv_d"]], axis=-1)[:, None]
    fake_z = jnp.concatenate([out["mu_df"], out["lv_df"]], axis=-1)[:, None]
    return real_m, fake_m, real_z, fake_z

  def d_loss(self, dparams, out, aud_mean):
    real_m, fake_m, real_z, fake_z = self._dis_inputs(out)
    Dm = lambda x: self._apply("dis_movement", dparams, x, aud_mean)
    Dz = lambda x: self._apply("dis_dance", dparams, x, aud_mean)
    loss = (bce_with_logits(Dm(real_m), 1.0) + bce_with_logits(Dm(fake_m), 0.0)
            + bce_with_logits(Dz(real_z), 1.0) + bce_with_logits(Dz(fake_z), 0.0))
    return self.config.optim.lambda_gan * loss

  def g_loss(self, out, dparams, fin):
    """Phase-2 loss and its terms."""
    o = self.config.optim
    _, fake_m, _, fake_z = self._dis_inputs(out)
    zm = out["mu_r"].shape[-1]
    t = {
        "kl_movement": kl_divergence(out["mu_r"].reshape(-1, zm), out["lv_r"].reshape(-1, zm)),
        "kl_dance": kl_divergence(out["mu_d"], out["lv_d"]),
        "zmovement_recon": l1_loss(out["mu_r"], fin["mu_m"]) + l1_loss(out["lv_r"], fin["lv_m"]),
        "stdpseq_recon": l1_loss(out["recon"], fin["units"]),
        "gan_g": (bce_with_logits(self._apply("dis_movement", dparams, fake_m, fin["aud_mean"]), 1.0)
                  + bce_with_logits(self._apply("dis_dance", dparams, fake_z, fin["aud_mean"]), 1.0)),
        # the fake path's KLs are only logged, as in the original
        "kl_dance_fake": kl_divergence(out["mu_df"], out["lv_df"]),
    }
    free_bits = float(o.get("kl_free_bits", 0.0))
    if free_bits:   # floor on the loss only; the logged terms stay the plain KLs
      kl_m = kl_with_free_bits(out["mu_r"], out["lv_r"], free_bits)
      kl_d = kl_with_free_bits(out["mu_d"], out["lv_d"], free_bits)
    else:
      kl_m, kl_d = t["kl_movement"], t["kl_dance"]
    loss = (o.lambda_kl * kl_m + o.lambda_kl_dance * kl_d
            + o.lambda_zmovements_recon * t["zmovement_recon"]
            + o.lambda_stdpseq_recon * t["stdpseq_recon"] + o.lambda_gan * t["gan_g"])
    lambda_vel = float(o.get("lambda_stdpseq_velocity", 0.0))   # not in the original
    if lambda_vel:
      t["stdpseq_velocity"] = velocity_l1(out["recon"], fin["units"])
      loss = loss + lambda_vel * t["stdpseq_velocity"]
    return loss, t

  def style_loss(self, reg_params, z_dance, z_dance_f, style):
    reg = lambda z: self.nets["dance_reg"].apply({"params": reg_params}, z)
    return self.config.optim.lambda_style * (mse_loss(reg(z_dance), style)
                                             + mse_loss(reg(z_dance_f), style))

  # ------------------------------------------------------------------ steps
  def _stepped(self, names):
    """The modules a phase updates (stdp_dec only when ``optim.finetune_stdp_dec``)."""
    return tuple(n for n in names if n != "stdp_dec" or self.finetune_stdp_dec)

  def _keys(self, state):
    key = jax.random.fold_in(state.rng, state.step)
    names = ("init", "z_dance", "noise", "z_dance_f", "z_mov")
    return dict(zip(names, jax.random.split(key, len(names))))

  def train_step(self, state, batch, axis_name=None):
    keys = self._keys(state)
    fin = self._frozen_inputs(state, batch, keys["init"])
    params, opt_state = state.params, state.opt_state
    gparams = {k: params[k] for k in G_MODULES}
    out, g_vjp = jax.vjp(lambda gp: self._g_forward(gp, fin, keys), gparams)

    # Phase 1: discriminators on detached codes.
    d_loss, d_grads = jax.value_and_grad(self.d_loss)(
        {k: params[k] for k in D_MODULES}, jax.lax.stop_gradient(out), fin["aud_mean"])
    d_grads = pmean(d_grads, axis_name)
    params, opt_state = self.optimizers.apply(params, opt_state, d_grads, D_MODULES)
    dparams = {k: params[k] for k in D_MODULES}

    merged = self.m.update_mode == "merged"

    def gen_objective(out_, reg_params):
      loss, terms = self.g_loss(out_, dparams, fin)
      if merged:
        s = self.style_loss(reg_params, out_["z_dance"], out_["z_dance_f"], fin["style"])
        terms["style"] = s
        loss = loss + s
      return loss, terms

    (g_loss, terms), (d_out, reg_grad) = jax.value_and_grad(gen_objective, argnums=(0, 1),
                                                            has_aux=True)(out, params["dance_reg"])
    g_grads = dict(g_vjp(d_out)[0])
    if merged:
      g_grads["dance_reg"] = reg_grad
      g_grads = pmean(g_grads, axis_name)
      params, opt_state = self.optimizers.apply(params, opt_state, g_grads,
                                                self._stepped(MERGED_MODULES))
      style_loss = terms.pop("style")
    else:
      g_grads = pmean(g_grads, axis_name)
      params, opt_state = self.optimizers.apply(params, opt_state, g_grads,
                                                self._stepped(G_MODULES))

      # Phase 3, recomputed with the updated dance_enc / audstyle_enc (same noise).
      def phase3(p3):
        lat = self._dance_latents(p3, fin, keys)
        return self.style_loss(p3["dance_reg"], lat["z_dance"], lat["z_dance_f"], fin["style"])
      style_loss, s_grads = jax.value_and_grad(phase3)({k: params[k] for k in STYLE_PHASE_MODULES})
      s_grads = pmean(s_grads, axis_name)
      params, opt_state = self.optimizers.apply(params, opt_state, s_grads, STYLE_PHASE_MODULES)

    metrics = dict(terms, d_loss=d_loss, g_loss=g_loss, style_loss=style_loss,
                   loss=d_loss + g_loss + style_loss)
    metrics = pmean({k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}, axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def forward(self, state, batch):
    """The step's losses without gradients or updates (for ``benchmarks/train_step.py``)."""
    keys = self._keys(state)
    fin = self._frozen_inputs(state, batch, keys["init"])
    out = self._g_forward(state.params, fin, keys)
    d = self.d_loss(state.params, out, fin["aud_mean"])
    g, _ = self.g_loss(out, state.params, fin)
    s = self.style_loss(state.params["dance_reg"], out["z_dance"], out["z_dance_f"], fin["style"])
    return d + g + s

  def eval_step(self, state, batch, axis_name=None):
    keys = self._keys(state.replace(step=jnp.asarray(0x7FFFFFFF, jnp.int32)))
    fin = self._frozen_inputs(state, batch, keys["init"])
    out = self._g_forward(state.params, fin, keys)
    d = self.d_loss(state.params, out, fin["aud_mean"])
    g, terms = self.g_loss(out, state.params, fin)
    s = self.style_loss(state.params["dance_reg"], out["z_dance"], out["z_dance_f"], fin["style"])
    metrics = dict(terms, d_loss=d, g_loss=g, style_loss=s, loss=d + g + s)
    return pmean({k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}, axis_name)

  # ------------------------------------------------------------------ generation
  generation_features = ("d2m28",)
  GENERATION_PARAMS = ("audstyle_enc", "dance_dec", "stdp_dec")
  GENERATION_FROZEN = ("initp_enc", "style")

  def generation_state(self, state):
    """The parts of the state :meth:`generate` reads (``d2m_jax.generator_export`` saves only
    these): the music-path generator, the frozen pose encoder and style extractor, the stats."""
    return {"params": {k: state.params[k] for k in self.GENERATION_PARAMS},
            "frozen": {k: state.frozen[k] for k in self.GENERATION_FROZEN},
            "stats": state.stats}

  def motion_rows(self, state, batch, rng):
    """Normalised units of every row of ``d2m_motion.ROWS`` (real, VAE reconstruction and
    prior, dance path, music path) for the ``motion_ratio`` evaluator."""
    return d2m_motion.decoded_units(self, state, batch, rng)

  def generate(self, state, feats, beats, num_frames, rng, num_samples=1):
    """Music -> dances (num_samples, num_frames, J, C) in data units; see d2m_inference."""
    from d2m_jax.models import d2m_inference  # pylint: disable=import-outside-toplevel
    return d2m_inference.generate(self, state, feats, beats, num_frames, rng, num_samples)


def make_task_for_restore(config, workdir: str, step=None) -> CompositionTask:
  """The task of a trained composition workdir, built from that workdir alone: the frozen
  stage-1 networks, the style extractor and the stats come from its own (verified) checkpoint,
  so generation works from any directory and after the workdir was moved or copied, without
  ``decomp_workdir``/``style_workdir``."""
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  tree = checkpoint.restore_tree(workdir, step)
  frozen = {"style": tree["frozen"]["style"],
            "decomp": ({"initp_enc": tree["frozen"]["initp_enc"],
                        "movement_enc": tree["frozen"]["movement_enc"],
                        "stdp_dec": tree["params"]["stdp_dec"]}, tree["stats"])}
  return CompositionTask(config, frozen=frozen)


def make_task(config) -> CompositionTask:
  return CompositionTask(config)
