"""Phase 3 task: music-conditioned sequence GAN on raw audio (spec §1.4),
``config.task = "wgan_audio"``.

Per iteration: ``n_critic`` (8) critic updates ``D(fake, a) - D(real, a) + gamma * GP`` with the
two-sided penalty on both inputs (pose interpolate and real audio), then one generator update
``-D(fake, a) + beta * L1(real, fake) + eta * TV(fake)``; Adam 2e-4. The 0.2 s windows are cut
from the batch's padded clip waveform ``(B, 79360)`` inside the jitted step
(:func:`d2m_jax.models.wgan_audio.cut_windows`); the critic's audio branch reads the unpadded
4.8 s clip. Batches: 'windows', ``data.batch_size = n_critic * 7``, sliced per critic update.

Every ablation of the original is :func:`audio_config` with one name (``configs/wgan_audio*.py``).
Generation (:meth:`WGANAudioTask.generate`) runs a song of any length window after window with
both GRUs carried across windows.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from d2m_jax.models.wgan_audio import (CLIP_PAD, HOP, AudioSeqCritic, AudioSeqGenerator,
                                       clip_audio, cut_windows)
from d2m_jax.models.wgan_layers import resolve_conv_impl
from d2m_jax.models.wgan_losses import gradient_penalty, interpolate, total_variation
from d2m_jax.tasks.wgan_common import (WINDOW_FRAMES, GANTask, apply_generator,
                                       minmax_denormalise, minmax_normalise)
from d2m_jax.train.defaults import base_config

ABLATIONS = ("default", "l1_enhanced", "tv", "noise_enhanced", "tanh", "unet", "wavegan",
             "ablated", "minimal")
COORDS = {69: 3, 28: 2, 30: 2}  # pose dim -> coordinates per joint (mocap23, coco14, body15)


def audio_config(ablation: str = "default") -> ml_collections.ConfigDict:
  """The phase-3 config (``phase3/configs/default.yaml``) with one of the original's ablations."""
  if ablation not in ABLATIONS:
    raise ValueError(f"unknown ablation {ablation!r}; expected one of {ABLATIONS}")
  c = base_config()
  c.task = "wgan_audio"
  c.num_train_steps = 50000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 2000
  c.data.kind = "windows"
  c.data.require_audio = True
  m = c.model
  m.ablation = ablation
  m.n_critic = 8
  m.per_update_batch = 7
  m.window = 3200           # samples per frame window (0.2 s at 16 kHz)
  m.encoder = "default"     # 'default' | 'wavegan' | 'unet'
  m.enc_code = 250          # encoder output ("input_vector_size")
  m.enc_channels = 32
  m.enc_down = 5            # stride-2 blocks of the default encoder
  m.latent = 250            # audio GRU width + noise size
  m.noise = 10
  m.n_cells = 3
  m.size = 256
  m.nblocks_gen = 2
  m.activ = "id"            # encoder and critic-branch output activation
  m.channels = 128
  m.init_kernel = 25
  m.nblocks_critic = 2      # the original passes none, so its default 2 applies
  m.critic_code = 100
  m.audio_channels = 32
  m.audio_layers = 5
  m.critic_hidden = 128
  m.ablated = False         # critic without the audio branch
  m.gamma = 10.0
  m.beta = 1.0              # L1 weight
  m.eta = 0.0               # TV weight
  m.parity_residual_bug = False
  m.slice_batch = True
  # Convolutions: 'im2col' (patches + matmul; much faster GP double backward on XLA:CPU),
  # 'xla' (lax.conv, cuDNN on GPU) or 'auto' (im2col on CPU, xla elsewhere). Same parameters.
  m.conv_impl = "auto"
  m.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  m.pose_dim = 69
  c.optim.lr = 2e-4               # generator and critic (config.optim.generator / .critic)
  if ablation == "l1_enhanced":
    m.beta = 20.0
  elif ablation == "tv":
    m.eta = 50.0
  elif ablation == "noise_enhanced":
    m.noise = 100
  elif ablation == "tanh":
    m.activ = "tanh"
  elif ablation in ("unet", "wavegan"):
    m.encoder = ablation
  elif ablation == "ablated":
    m.ablated = True
  elif ablation == "minimal":
    m.window = 640          # 0.04 s
    m.enc_down = 3          # 640 samples: lengths 13, 6, 3, 1 (the original's 5 cannot run)
    m.enc_code = 50
    m.latent = 50
    m.n_cells = 2
    m.size = 128
    m.n_critic = 5
    m.critic_code = 50
  c.data.batch_size = m.n_critic * m.per_update_batch
  c.data.eval_batch_size = m.n_critic * m.per_update_batch
  return c


class WGANAudioTask(GANTask):
  name = "wgan_audio"
  generation_features = ("waveform16k",)
  generation_uses_beats = False   # generate() reads the waveform only

  def __init__(self, config):
    super().__init__(config)
    self.penalty_wrt = (0,) if config.model.ablated else (0, 1)
    self._conv_impl = resolve_conv_impl(config.model.get("conv_impl", "auto"))

  def _gen(self, axis_name=None, pose_dim=69):
    m = self.config.model
    return AudioSeqGenerator(m.encoder, m.enc_code, m.latent, m.noise, m.size, pose_dim,
                             m.nblocks_gen, m.n_cells, m.activ, m.enc_channels, m.enc_down,
                             m.parity_residual_bug, self.dtype, axis_name, self._conv_impl,
                             rnn_impl=m.get("rnn_impl", "auto"))

  def _critic(self):
    m = self.config.model
    return AudioSeqCritic(m.channels, m.critic_code, m.init_kernel, m.nblocks_critic,
                          m.audio_channels, m.audio_layers, m.critic_hidden, m.activ, m.ablated,
                          self.dtype, self._conv_impl)

  def init_models(self, rng, P):
    T, m = WINDOW_FRAMES, self.config.model
    k1, k2 = jax.random.split(rng)
    g_vars = self._gen(None, P).init(k1, jnp.zeros((1, T, m.window)), jnp.zeros((1, T, m.noise)),
                                     train=False)
    d_params = self._critic().init(k2, jnp.zeros((1, T, P)), jnp.zeros((1, T * HOP)))["params"]
    return dict(g_vars), d_params

  def prepare(self, state, batch, rng):
    pose = minmax_normalise(jnp.asarray(batch["pose"], jnp.float32), state.stats)
    wave = jnp.asarray(batch["waveform"], jnp.float32)
    return self.split_slices(pose), {"waveform": self.split_slices(wave)}

  def sample_fake(self, state, g_params, cond, rng, axis_name, num, train=True):
    k_z, k_d = jax.random.split(rng)
    P = g_params["decoder"]["fc_out"]["kernel"].shape[-1]
    windows = cut_windows(cond["waveform"], WINDOW_FRAMES, self.config.model.window)
    z = jax.random.normal(k_z, (num, WINDOW_FRAMES, self.config.model.noise))
    (poses, _), bs = apply_generator(self._gen(axis_name, P), g_params, state.g_batch_stats,
                                     (windows, z), k_d, train)
    return poses, bs

  def _clip(self, cond):
    return clip_audio(cond["waveform"], WINDOW_FRAMES)

  def critic_scores(self, d_params, x, cond, rng):
    return self._critic().apply({"params": d_params}, x, self._clip(cond))

  def critic_pair(self, d_params, real, fake, cond, rng):
    """Both scores with the audio branch run once (the clip is the same for real and fake)."""
    critic, v = self._critic(), {"params": d_params}
    acode = None
    if not self.config.model.ablated:
      acode = critic.apply(v, self._clip(cond), method=AudioSeqCritic.audio_code)
    score = functools.partial(critic.apply, v, acode=acode, method=AudioSeqCritic.score)
    return score(real), score(fake)

  def penalty(self, d_params, real, fake, cond, rng):
    """``(|grad_pose| - 1)^2 + (|grad_audio| - 1)^2`` at the pose interpolate and real audio."""
    alpha = jax.random.uniform(rng, (real.shape[0],))
    x_hat = interpolate(real, fake, alpha)
    critic = self._critic()
    fn = lambda x, a: critic.apply({"params": d_params}, x, a)
    return gradient_penalty(fn, [x_hat, self._clip(cond)], wrt=self.penalty_wrt)

  def gen_regulariser(self, fake, real, cond):
    m = self.config.model
    l1 = jnp.mean(jnp.abs(fake - real))
    tv = total_variation(fake, time_axis=1)
    return m.beta * l1 + m.eta * tv, {"l1": l1, "tv": tv}

  def eval_extra(self, real, fake, cond):
    return {"l1": jnp.mean(jnp.abs(fake - real))}  # the original's validation metric

  # -- generation -------------------------------------------------------------------------------
  @functools.partial(jax.jit, static_argnums=(0,))
  def _generate_chunk(self, g_vars, wave, noise, h):
    """One 120-frame window of a song: ``wave`` (1, 79360) padded clip, ``noise`` (S, T, n)."""
    P = g_vars["params"]["decoder"]["fc_out"]["kernel"].shape[-1]
    gen = self._gen(None, P)
    windows = cut_windows(wave, WINDOW_FRAMES, self.config.model.window)
    codes = gen.apply(g_vars, windows, train=False, method=AudioSeqGenerator.encode)
    codes = jnp.broadcast_to(codes, (noise.shape[0],) + codes.shape[1:])
    return gen.apply(g_vars, codes, noise, h, train=False, method=AudioSeqGenerator.decode)

  def generate(self, state, feats, beats, num_frames: int, rng, num_samples: int = 1):
    """Dances for a song of any length: (num_samples, num_frames, J, C) in data units.

    The song is cut into 4.8 s windows run one after the other with the audio and noise GRUs'
    states carried over, so the result equals one pass over the whole song (the encoder sees
    each frame's own 0.2 s window, with the song's real neighbouring audio at window borders).
    """
    if "waveform16k" not in feats:
      raise ValueError("wgan_audio.generate needs feats['waveform16k'] (mono 16 kHz)")
    wave = np.asarray(feats["waveform16k"], np.float32).reshape(-1)
    m, T = self.config.model, WINDOW_FRAMES
    n_chunks = max(1, math.ceil(num_frames / T))
    padded = np.zeros(n_chunks * T * HOP + 2 * CLIP_PAD, np.float32)
    n = min(len(wave), len(padded) - CLIP_PAD)
    padded[CLIP_PAD:CLIP_PAD + n] = wave[:n]
    g_vars = {"params": self.sampling_params(state), "batch_stats": state.g_batch_stats}
    H = m.latent - m.noise
    h = (jnp.zeros((m.n_cells, num_samples, H)), jnp.zeros((1, num_samples, m.noise)))
    rng = jax.random.key(rng) if isinstance(rng, (int, np.integer)) else rng
    outs = []
    for c in range(n_chunks):
      start = c * T * HOP
      chunk = jnp.asarray(padded[start:start + T * HOP + 2 * CLIP_PAD])[None]
      noise = jax.random.normal(jax.random.fold_in(rng, c), (num_samples, T, m.noise))
      poses, h = self._generate_chunk(g_vars, chunk, noise, h)
      outs.append(np.asarray(minmax_denormalise(poses, state.stats)))
    out = np.concatenate(outs, axis=1)[:, :num_frames]
    P = out.shape[-1]
    C = COORDS.get(P, int(m.get("coord_dim", 3)))
    return out.reshape(num_samples, num_frames, P // C, C).astype(np.float32)

  def sample(self, state, rng, waveform):
    """Poses for a batch of padded clip waveforms (B, 79360), data units (B, 120, P)."""
    fake, _ = self.sample_fake(state, self.sampling_params(state),
                               {"waveform": jnp.asarray(waveform)}, rng, None,
                               waveform.shape[0], train=False)
    return np.asarray(minmax_denormalise(fake, state.stats))


def make_task(config):
  return WGANAudioTask(config)
