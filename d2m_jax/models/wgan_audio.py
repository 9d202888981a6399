"""Phase 3: music-conditioned sequence GAN on raw 16 kHz audio (spec §1.4).

Per motion frame ``k`` a 0.2 s window (3200 samples, stride 640) of the clip's waveform, zero
padded by 1280 samples on each side, is cut ON DEVICE (:func:`cut_windows`), so window ``k`` is
``waveform[640 k : 640 k + 3200]`` of the padded clip. Each window goes through an audio encoder
(``default`` | ``wavegan`` | ``unet``) to a code; the codes run through ``GRU(code -> latent -
noise, n_cells layers)``; per-frame N(0, 1) noise through ``GRU(noise -> noise, 1 layer)``; the
two are concatenated and decoded per frame by the FrameDecoder.

The critic has a pose branch (``Conv1d(P->128, k25) ReLU -> 2 x TemporalBlock -> Conv1d(128->100,
k=T)``), a raw-audio branch on the 4.8 s clip (``5 x Conv1d(k25, s4, p11) ReLU`` 1->32->...->512,
lengths 19200..75, ``Conv1d(512->100, k75)``) and a fusion MLP ``200 -> 128 -> 1``; the ablated
critic drops the audio branch (``100 -> 128 -> 1``).

Deliberate fix: the original's ``default`` encoder applies 5 stride-2 blocks whatever the window;
with the ``minimal`` ablation's 0.04 s window (640 samples) the length reaches 0 and the model
cannot run. Here ``enc_down`` sets the number of stride-2 blocks (5 by default, 3 for 640-sample
windows) and the last convolution always spans the remaining length.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax.models.wgan_layers import (GRU_INITS, FrameDecoder, TemporalBlock, activation,
                                        batch_norm, conv1d, conv_out_len, linear)
from d2m_jax.nn import GRU

HOP = 640          # 16 kHz / 25 fps
CLIP_PAD = 1280    # zero padding on each side of the clip in the batch's ``waveform``


# ----------------------------------------------------------------------------------------------
# Windows, cut on device.

def window_offset(window: int, hop: int = HOP, pad: int = CLIP_PAD) -> int:
  """Start of frame 0's window in the padded waveform (windows are centred on the frame)."""
  off = pad - (window - hop) // 2
  if off < 0:
    raise ValueError(f"audio window of {window} samples needs more than {pad} samples of padding")
  return off


def cut_windows(waveform, num_frames: int, window: int = 3200, hop: int = HOP,
                pad: int = CLIP_PAD):
  """``(B, L)`` padded waveform -> ``(B, num_frames, window)``, window ``k`` starting at
  ``offset + hop * k``.

  When ``window`` is a multiple of ``hop`` (0.2 s and 0.04 s) this is slicing and reshapes only
  (the window is ``window // hop`` consecutive hop-sized chunks); otherwise a gather.
  """
  off = window_offset(window, hop, pad)
  B, L = waveform.shape
  need = off + hop * (num_frames - 1) + window
  if need > L:
    raise ValueError(f"waveform of {L} samples is too short for {num_frames} windows of "
                     f"{window} (needs {need})")
  if window % hop == 0:
    m = window // hop
    seg = jax.lax.slice_in_dim(waveform, off, off + hop * (num_frames + m - 1), axis=1)
    seg = seg.reshape(B, num_frames + m - 1, hop)
    return jnp.concatenate([seg[:, i:i + num_frames] for i in range(m)], axis=-1)
  idx = off + hop * np.arange(num_frames)[:, None] + np.arange(window)[None, :]
  return waveform[:, idx]


def clip_audio(waveform, num_frames: int, hop: int = HOP, pad: int = CLIP_PAD):
  """The unpadded clip ``(B, num_frames * hop)`` that the critic's audio branch reads."""
  return jax.lax.slice_in_dim(waveform, pad, pad + hop * num_frames, axis=1)


# ----------------------------------------------------------------------------------------------
# Audio encoders: (N, window) -> (N, code).

class DefaultEncoder(nn.Module):
  """``Conv1d(1->32, k250, s50, p124) BN ReLU -> enc_down x [Conv1d(c->2c, k4, s2, p1) BN ReLU]
  -> Conv1d(->code, k=remaining length)`` -> activation. 3200 samples: lengths 64, 32..2, 1."""
  code: int = 250
  channels: int = 32
  n_down: int = 5
  activ: str = "id"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = x[..., None]
    h = conv1d(h, self.channels, 250, 50, 124, self.dtype, "conv0", self.conv_impl)
    h = jax.nn.relu(batch_norm(h, train, self.axis_name, "bn0"))
    c = self.channels
    for i in range(self.n_down):
      c *= 2
      h = conv1d(h, c, 4, 2, 1, self.dtype, f"down{i}", self.conv_impl)
      h = jax.nn.relu(batch_norm(h, train, self.axis_name, f"bn_down{i}"))
    if h.shape[1] < 1:
      raise ValueError("audio window too short for the encoder; lower model.enc_down")
    h = conv1d(h, self.code, h.shape[1], dtype=self.dtype, name="conv_out", impl=self.conv_impl)
    return activation(self.activ)(h[:, 0].astype(jnp.float32))


class WaveGANEncoder(nn.Module):
  """``4 x [Conv1d(k25, s4) BN ReLU]`` (1->32->64->128->256; lengths 794, 193, 43, 5) ->
  ``Conv1d(256->code, k=5)`` -> activation."""
  code: int = 250
  channels: int = 32
  n_layers: int = 4
  activ: str = "id"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = x[..., None]
    c = self.channels
    for i in range(self.n_layers):
      h = conv1d(h, c, 25, 4, 0, self.dtype, f"conv{i}", self.conv_impl)
      h = jax.nn.relu(batch_norm(h, train, self.axis_name, f"bn{i}"))
      c *= 2
    h = conv1d(h, self.code, h.shape[1], dtype=self.dtype, name="conv_out", impl=self.conv_impl)
    return activation(self.activ)(h[:, 0].astype(jnp.float32))


def _lrelu(x):
  return jax.nn.leaky_relu(x, 0.2)


def upsample_linear2(x):
  """Linear x2 upsampling along time (PyTorch ``Upsample(mode='linear')``, half-pixel)."""
  B, T, C = x.shape
  return jax.image.resize(x.astype(jnp.float32), (B, 2 * T, C), "linear")


class UNetEncoder(nn.Module):
  """``Conv1d(1->32, k160, s4, p79)`` (800) BN LReLU, 2 x ``Conv1d(k4, s2, p1)`` (->64->128;
  400, 200) BN LReLU, a U-block at 128 channels (conv blocks k3 at 200, 100, 50, 25 with
  max-pool 2 between; 3 x [linear upsample x2, concat skip -> 256, conv block 256->128]) and
  ``Conv1d(128->code, k=200)`` -> activation."""
  code: int = 250
  channels: int = 32
  depth: int = 3
  activ: str = "id"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  conv_impl: str = "xla"

  def _block(self, h, c, train, name):
    h = conv1d(h, c, 3, 1, 1, self.dtype, name, self.conv_impl)
    return _lrelu(batch_norm(h, train, self.axis_name, f"{name}_bn"))

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = x[..., None]
    c = self.channels
    h = conv1d(h, c, 160, 4, 79, self.dtype, "conv0", self.conv_impl)
    h = _lrelu(batch_norm(h, train, self.axis_name, "bn0"))
    for i in range(2):
      c *= 2
      h = conv1d(h, c, 4, 2, 1, self.dtype, f"down{i}", self.conv_impl)
      h = _lrelu(batch_norm(h, train, self.axis_name, f"bn_down{i}"))
    skips = []
    for i in range(self.depth + 1):
      if i:
        h = nn.max_pool(h, (2,), strides=(2,))
      h = self._block(h, c, train, f"enc{i}")
      skips.append(h)
    for i in range(self.depth):
      skip = skips[self.depth - 1 - i]
      up = upsample_linear2(h)[:, :skip.shape[1]]
      h = self._block(jnp.concatenate([up, skip.astype(jnp.float32)], -1), c, train, f"dec{i}")
    h = conv1d(h, self.code, h.shape[1], dtype=self.dtype, name="conv_out", impl=self.conv_impl)
    return activation(self.activ)(h[:, 0].astype(jnp.float32))


ENCODERS = {"default": DefaultEncoder, "wavegan": WaveGANEncoder, "unet": UNetEncoder}


def make_encoder(name: str, **kw):
  if name not in ENCODERS:
    raise ValueError(f"unknown audio encoder {name!r}; expected one of {sorted(ENCODERS)}")
  if name != "default":
    kw.pop("n_down", None)
  return ENCODERS[name](**kw)


# ----------------------------------------------------------------------------------------------
# Generator and critic.

class AudioSeqGenerator(nn.Module):
  """Audio windows ``(B, T, W)`` + noise ``(B, T, noise)`` -> poses ``(B, T, P)``.

  ``state`` (and the returned state) is ``(h_audio (n_cells, B, latent - noise),
  h_noise (1, B, noise))``, so a long song is generated window after window with the GRUs
  carried across windows.
  """
  encoder: str = "default"
  code: int = 250
  latent: int = 250
  noise: int = 10
  size: int = 256
  out: int = 69
  nblocks: int = 2
  n_cells: int = 3
  activ: str = "id"
  enc_channels: int = 32
  enc_down: int = 5
  parity_bug: bool = False
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  conv_impl: str = "xla"      # 'xla' | 'im2col' | 'auto' (d2m_jax.models.wgan_layers.conv1d)
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  def setup(self):
    if self.latent <= self.noise:
      raise ValueError(f"latent ({self.latent}) must exceed noise ({self.noise})")
    self.enc = make_encoder(self.encoder, code=self.code, channels=self.enc_channels,
                            n_down=self.enc_down, activ=self.activ, dtype=self.dtype,
                            axis_name=self.axis_name, conv_impl=self.conv_impl)
    self.audio_rnn = GRU(self.latent - self.noise, self.n_cells, dtype=self.dtype,
                         impl=self.rnn_impl, **GRU_INITS)
    self.noise_rnn = GRU(self.noise, 1, dtype=self.dtype, impl=self.rnn_impl, **GRU_INITS)
    self.decoder = FrameDecoder(self.size, self.out, self.nblocks, self.parity_bug, self.dtype,
                                self.axis_name)

  def encode(self, windows, train: bool = True):
    B, T, W = windows.shape
    return self.enc(windows.reshape(B * T, W), train).reshape(B, T, self.code)

  def decode(self, codes, noise, state=None, train: bool = True):
    h_a0, h_n0 = (None, None) if state is None else state
    a, h_a = self.audio_rnn(codes, h_a0)
    n, h_n = self.noise_rnn(noise, h_n0)
    poses = self.decoder(jnp.concatenate([a, n], axis=-1), train)
    return poses, (h_a, h_n)

  def __call__(self, windows, noise, state=None, train: bool = True):
    return self.decode(self.encode(windows, train), noise, state, train)


class StickBranch(nn.Module):
  channels: int = 128
  code: int = 100
  init_kernel: int = 25
  nblocks: int = 2
  activ: str = "id"
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    h = jax.nn.relu(conv1d(x, self.channels, self.init_kernel, 1, (self.init_kernel - 1) // 2,
                           self.dtype, "conv_in", self.conv_impl))
    for i in range(self.nblocks):
      h = TemporalBlock(self.channels, dtype=self.dtype, conv_impl=self.conv_impl,
                        name=f"block{i}")(h)
    h = conv1d(h, self.code, x.shape[1], dtype=self.dtype, name="conv_out", impl=self.conv_impl)
    return activation(self.activ)(h[:, 0].astype(jnp.float32))


class AudioBranch(nn.Module):
  channels: int = 32
  n_layers: int = 5
  code: int = 100
  activ: str = "id"
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, clip):
    h = clip[..., None]
    c = self.channels
    for i in range(self.n_layers):
      h = jax.nn.relu(conv1d(h, c, 25, 4, 11, self.dtype, f"conv{i}", self.conv_impl))
      c *= 2
    h = conv1d(h, self.code, h.shape[1], dtype=self.dtype, name="conv_out", impl=self.conv_impl)
    return activation(self.activ)(h[:, 0].astype(jnp.float32))


class FusionHead(nn.Module):
  hidden: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    h = jax.nn.relu(linear(h, self.hidden, self.dtype, "fc1"))
    return linear(h, 1, self.dtype, "fc2").astype(jnp.float32)[:, 0]


class AudioSeqCritic(nn.Module):
  """Two-branch critic ``D(pose (B, T, P), clip (B, T * 640))`` -> ``(B,)``."""
  channels: int = 128
  code: int = 100
  init_kernel: int = 25
  nblocks: int = 2
  audio_channels: int = 32
  audio_layers: int = 5
  hidden: int = 128
  activ: str = "id"
  ablated: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "xla"      # 'xla' | 'im2col' | 'auto' (d2m_jax.models.wgan_layers.conv1d)

  def setup(self):
    self.stick = StickBranch(self.channels, self.code, self.init_kernel, self.nblocks,
                             self.activ, self.dtype, self.conv_impl)
    if not self.ablated:
      self.audio = AudioBranch(self.audio_channels, self.audio_layers, self.code, self.activ,
                               self.dtype, self.conv_impl)
    self.head = FusionHead(self.hidden, self.dtype)

  def audio_code(self, clip):
    return self.audio(clip)

  def score(self, pose, acode=None):
    s = self.stick(pose)
    if not self.ablated:
      s = jnp.concatenate([s, acode], axis=-1)
    return self.head(s)

  def __call__(self, pose, clip):
    return self.score(pose, None if self.ablated else self.audio(clip))


def encoder_output_lengths(name: str, window: int = 3200, enc_down: int = 5):
  """The encoder's time lengths per layer (spec arithmetic), for docs and tests."""
  if name == "default":
    ls = [conv_out_len(window, 250, 50, 124)]
    for _ in range(enc_down):
      ls.append(conv_out_len(ls[-1], 4, 2, 1))
  elif name == "wavegan":
    ls = [window]
    for _ in range(4):
      ls.append(conv_out_len(ls[-1], 25, 4))
    ls = ls[1:]
  else:
    ls = [conv_out_len(window, 160, 4, 79)]
    for _ in range(2):
      ls.append(conv_out_len(ls[-1], 4, 2, 1))
  return ls
