"""The data contract's batch layouts as code: sizes, and random batches with exactly the keys,
shapes and dtypes the input pipeline yields (``Task.synthetic_batch``, for benchmarks and unit
tests). Pure numpy: importing it pulls in neither TensorFlow nor librosa.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

WINDOW_FRAMES = 120            # 4.8 s at 25 fps
WAVE_PAD = 1280                # zeros on each side of the 4.8 s clip at 16 kHz
WAVE_SAMPLES = 76800 + 2 * WAVE_PAD   # 79,360: frame k's 0.2 s window is [640k, 640k + 3200)
FRAME_FEATURE_DIMS = {"d2m28": 28, "fact35": 35, "mfcc20": 20}
SEQUENCE_FEATURE_DIMS = dict(FRAME_FEATURE_DIMS, mel_tempogram512=512)
NUM_STYLES = 4


def _common(rng, B, T, pose_dim, pose_scale, dims) -> Dict[str, np.ndarray]:
  f32 = np.float32
  batch = {"pose": (pose_scale * rng.standard_normal((B, T, pose_dim))).astype(f32),
           "root": rng.standard_normal((B, T, 3)).astype(f32),
           "style": rng.integers(0, NUM_STYLES, (B,)).astype(np.int32),
           "beat": (rng.random((B, T)) < 0.08).astype(f32)}
  for name, d in dims.items():
    batch[name] = rng.standard_normal((B, T, d)).astype(f32)
  return batch


def windows_batch(batch_size: int, rng: np.random.Generator, pose_dim: int = 69, *,
                  waveform: bool = True, pose_scale: float = 1.0) -> Dict[str, np.ndarray]:
  """A kind 'windows' batch; ``waveform=False`` is the pipeline's 'windows_nowave'."""
  batch = _common(rng, batch_size, WINDOW_FRAMES, pose_dim, pose_scale, FRAME_FEATURE_DIMS)
  if waveform:
    wave = np.zeros((batch_size, WAVE_SAMPLES), np.float32)
    wave[:, WAVE_PAD:-WAVE_PAD] = 0.1 * rng.standard_normal((batch_size, WAVE_SAMPLES - 2 * WAVE_PAD))
    batch["waveform"] = wave
  return batch


def sequences_batch(batch_size: int, rng: np.random.Generator, pose_dim: int, max_frames: int,
                    *, pose_scale: float = 1.0) -> Dict[str, np.ndarray]:
  """A kind 'sequences' batch padded to ``max_frames`` with ``length`` per row."""
  T = int(max_frames)
  batch = _common(rng, batch_size, T, pose_dim, pose_scale, SEQUENCE_FEATURE_DIMS)
  batch["length"] = rng.integers(T // 2, T + 1, (batch_size,)).astype(np.int32)
  return batch
