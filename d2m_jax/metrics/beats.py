"""Kinematic (motion) beats and the Beat Align Score (BAS).

Source: ../shared/specs/metrics.md §1.3. FACT's paper defines

    BA = 1/|B_k| sum_{t_k in B_k} exp(-min_{t_m in B_m} |t_k - t_m|^2 / (2 sigma^2)),

with sigma = 3 frames at 60 fps, kinematic beats B_k = local minima of the (smoothed) joint-speed
envelope, music beats B_m from ``librosa.beat.beat_track``. Two conventions exist:

* ``convention="motion"`` (**our default**, FACT's paper and the EDGE/POPDG
  ``eval/calculate_beat_scores.py`` lineage): the average runs over MOTION beats, each scored by
  its nearest music beat ("are the dancer's stops on the beat?").
* ``convention="music"`` (Bailando ``utils/beat_align_score.py``, inherited by Lodge, Danceba):
  the average runs over MUSIC beats, each scored by its nearest motion beat ("is every beat hit?").

The numbers are not interchangeable; evaluation tables name the convention.

Frame-rate handling: every width is specified in seconds of the original 60 fps definition and
converted to frames of the evaluated motion (25 fps here): sigma = 3/60 s = 0.05 s = 1.25 frames
at 25 fps; the speed-envelope smoothing sigma 5/60 s (Bailando ``gaussian_filter(., 5)`` at 60 fps)
= 2.08 frames. (The dataset README's sanity figures used sigma = 3 frames AT 25 fps, i.e. 0.12 s:
pass ``sigma_frames=3`` to reproduce those.)
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.ndimage
import scipy.signal


def speed_envelope(positions: np.ndarray) -> np.ndarray:
  """(T, J, C) -> (T-1,) mean joint speed (units per frame) between consecutive frames."""
  p = np.asarray(positions, np.float64)
  return np.linalg.norm(p[1:] - p[:-1], axis=-1).mean(axis=-1)


def motion_beats(positions: np.ndarray, fps: float = 25.0, *,
                 smooth_seconds: Optional[float] = 5.0 / 60.0, order: int = 1) -> np.ndarray:
  """Kinematic beats: frame indices of the local minima of the smoothed joint-speed envelope.

  ``smooth_seconds`` is the Gaussian smoothing width (None or 0: none); ``order`` is
  ``scipy.signal.argrelextrema``'s neighbourhood (Bailando: 1; the POPDG lineage uses 10 at 60 fps).
  Envelope sample t is the speed between frames t and t+1; its index is returned as the frame.
  """
  env = speed_envelope(positions)
  if smooth_seconds:
    env = scipy.ndimage.gaussian_filter1d(env, smooth_seconds * fps, mode="nearest")
  return scipy.signal.argrelextrema(env, np.less, order=order)[0]


def beat_align_score(motion_beat_frames, music_beat_frames, *, fps: float = 25.0,
                     sigma_frames: Optional[float] = None, convention: str = "motion") -> float:
  """Beat Align Score of two beat lists (frame indices at ``fps``).

  ``sigma_frames`` defaults to 3 frames at 60 fps expressed at ``fps`` (0.05 s). Returns 0.0 when
  the set averaged over is empty or the other set is empty (no beat can be aligned).
  """
  mb = np.asarray(motion_beat_frames, np.float64).reshape(-1)
  ab = np.asarray(music_beat_frames, np.float64).reshape(-1)
  sigma = 3.0 * fps / 60.0 if sigma_frames is None else float(sigma_frames)
  if convention == "motion":
    over, other = mb, ab
  elif convention == "music":
    over, other = ab, mb
  else:
    raise ValueError(f"convention must be 'motion' or 'music', got {convention!r}")
  if over.size == 0 or other.size == 0:
    return 0.0
  dmin = np.min(np.abs(over[:, None] - other[None, :]), axis=1)
  return float(np.mean(np.exp(-dmin ** 2 / (2.0 * sigma ** 2))))


def dance_beat_align_score(positions: np.ndarray, music_beat_frames, *, fps: float = 25.0,
                           convention: str = "motion", sigma_frames: Optional[float] = None
                           ) -> float:
  """BAS of one dance (T, J, C) against the music beat frames of its song."""
  return beat_align_score(motion_beats(positions, fps), music_beat_frames, fps=fps,
                          sigma_frames=sigma_frames, convention=convention)
