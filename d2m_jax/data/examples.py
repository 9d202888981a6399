"""Training examples cut from processed sequences, splits by sequence, normalisation statistics.

A processed sequence is a dict (see ``d2m_jax.data.ingest.process_sequence``): ``pose (T, J, C)``,
``root (T, 3)``, ``style``, ``has_audio``, ``beats`` (motion-frame indices), the frame features
``d2m28/fact35/mfcc20/mel_tempogram512 (T, D)`` and ``waveform16k`` (int16, ``T * 16000 / fps``).

Example kinds (``KINDS``):

* ``windows``: 120 frames (4.8 s at 25 fps) every ``stride`` frames; the 16 kHz clip of the
  window zero-padded by 1280 samples on each side (``WAVE_LEN = 79360``, stored as int16), so the
  0.2 s audio window of frame k is ``waveform[640 k : 640 k + 3200]``.
* ``units``: Dancing2Music 3-unit sequences: each unit spans 4 music beats (one octave per
  song: ``d2m_jax.data.tempo``; every beat interval of the example within ``STEADY_TOLERANCE`` of
  the song's median) time-normalised to 32 frames with the beats on frames 3, 11, 19, 27 (piecewise-linear time warp through the beats,
  extrapolated with the first/last beat interval at the ends); ``aud`` is d2m28 warped the same
  way, ``aud_raw`` 64 real-time d2m28 rows from the first unit's first frame.
* ``sequences``: whole sequences (padded in the pipeline).
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np

from d2m_jax.data import skeleton as skeleton_lib
from d2m_jax.data.features import FRAME_FEATURES

KINDS = ("windows", "windows_nowave", "units", "sequences")
WINDOW = 120
WAVE_PER_FRAME = 640          # 16 kHz / 25 fps
WAVE_PAD = 1280
WAVE_LEN = WINDOW * WAVE_PER_FRAME + 2 * WAVE_PAD      # 79360
UNIT = 32
UNIT_BEATS = np.array([3.0, 11.0, 19.0, 27.0, 35.0])   # beats 0..3 of a unit (+ the next one)
UNITS_PER_EXAMPLE = 3
AUD_RAW = 64
STEADY_TOLERANCE = 1.25       # a unit's beat intervals within [1/1.25, 1.25] x the song's median
WINDOW_FEATURES = ("d2m28", "fact35", "mfcc20")
SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------------------------ splits ---

def _stable_hash(name: str, seed: int) -> int:
  return int(hashlib.md5(f"{seed}:{name}".encode()).hexdigest()[:12], 16)


def assign_splits(names: list[str], styles: list[int], *, seed: int = 0,
                  fraction: float = 0.1) -> dict[str, str]:
  """Sequence name -> split. Per style, sequences are ordered by a seeded hash of their name;
  ``max(1, round(fraction * n))`` go to validation and as many to test when the style has at
  least 3 sequences, the rest to train. Depends only on names (and seed): no sequence can be in
  two splits, and adding a sequence moves no other sequence out of its split's ordering.
  """
  out = {}
  for s in sorted(set(styles)):
    group = sorted((n for n, st in zip(names, styles) if st == s),
                   key=lambda n: _stable_hash(n, seed))
    k = max(1, int(round(fraction * len(group)))) if len(group) >= 3 else 0
    for i, n in enumerate(group):
      out[n] = "validation" if i < k else "test" if i < 2 * k else "train"
  return out


# --------------------------------------------------------------------------------- examples ---

def _flat_pose(seq) -> np.ndarray:
  p = np.asarray(seq["pose"], np.float32)
  return p.reshape(p.shape[0], -1)


def beat_indicator(beats: np.ndarray, n: int) -> np.ndarray:
  x = np.zeros((n,), np.float32)
  b = np.asarray(beats, np.int64)
  x[b[(b >= 0) & (b < n)]] = 1.0
  return x


def windows(seq, *, stride: int = 30, with_wave: bool = True) -> Iterator[dict]:
  """120-frame windows every ``stride`` frames (see the module docstring). The 16 kHz clip
  layout assumes 25 fps (640 samples per frame)."""
  if with_wave and abs(float(seq.get("fps", 25.0)) - 25.0) > 1e-6:
    raise ValueError(f"raw-audio windows need 25 fps, got {seq['fps']}")
  pose = _flat_pose(seq)
  t = pose.shape[0]
  beat = beat_indicator(seq["beats"], t)
  wav = np.asarray(seq["waveform16k"], np.int16)
  for s in range(0, t - WINDOW + 1, stride):
    ex = dict(pose=pose[s:s + WINDOW], root=np.asarray(seq["root"][s:s + WINDOW], np.float32),
              style=np.int32(seq["style"]), has_audio=np.int32(seq["has_audio"]),
              beat=beat[s:s + WINDOW], start=np.int32(s))
    for f in WINDOW_FEATURES:
      ex[f] = np.asarray(seq[f][s:s + WINDOW], np.float32)
    if with_wave:
      w = np.zeros((WAVE_LEN,), np.int16)
      clip = wav[s * WAVE_PER_FRAME:(s + WINDOW) * WAVE_PER_FRAME]
      w[WAVE_PAD:WAVE_PAD + clip.shape[0]] = clip
      ex["waveform"] = w
    yield ex


def unit_times(beats: np.ndarray) -> np.ndarray:
  """Source frame times (fractional) of the 32 frames of a unit given its 5 beat frames."""
  f = np.arange(UNIT, dtype=np.float64)
  k = np.clip(((f - 3.0) // 8.0).astype(np.int64), 0, 3)
  y0, y1 = beats[k].astype(np.float64), beats[k + 1].astype(np.float64)
  return y0 + (f - UNIT_BEATS[k]) / 8.0 * (y1 - y0)


def interp_rows(x: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Linear interpolation of rows of x (T, D) at fractional times t (clipped to [0, T-1])."""
  t = np.clip(t, 0.0, x.shape[0] - 1.0)
  i0 = np.floor(t).astype(np.int64)
  i1 = np.minimum(i0 + 1, x.shape[0] - 1)
  w = (t - i0)[:, None]
  return ((1.0 - w) * x[i0] + w * x[i1]).astype(np.float32)


def steady_starts(beats: np.ndarray, stride: int = 2) -> list[int]:
  """Beat indices where a 3-unit example may start: its 12 beat intervals all lie within
  ``STEADY_TOLERANCE`` of the song's median interval (a skipped or doubled beat would make a
  unit span 3 or 5 beats' worth of motion), and its first unit's lead-in starts in the dance."""
  beats = np.asarray(beats, np.int64)
  need = 4 * UNITS_PER_EXAMPLE + 1
  if beats.shape[0] < need:
    return []
  d = np.diff(beats).astype(np.float64)
  med = float(np.median(d))
  ok = (d >= med / STEADY_TOLERANCE) & (d <= med * STEADY_TOLERANCE)
  out = []
  for i in range(0, beats.shape[0] - need + 1, stride):
    if ok[i:i + need - 1].all() and unit_times(beats[i:i + 5])[0] >= 0:
      out.append(i)
  return out


def units(seq, *, stride: int = 2) -> Iterator[dict]:
  """Dancing2Music 3-unit sequences starting every ``stride`` beats (at steady beats only:
  :func:`steady_starts`)."""
  beats = np.asarray(seq["beats"], np.int64)
  pose = _flat_pose(seq)
  aud = np.asarray(seq["d2m28"], np.float32)
  for i in steady_starts(beats, stride):
    ts = [unit_times(beats[i + 4 * u:i + 4 * u + 5]) for u in range(UNITS_PER_EXAMPLE)]
    t_all = np.concatenate(ts)
    if t_all[0] < 0:
      continue                      # the first unit's lead-in would start before the dance
    s0 = int(round(t_all[0]))
    raw = aud[s0:s0 + AUD_RAW]
    if raw.shape[0] < AUD_RAW:
      raw = np.concatenate([raw, np.repeat(raw[-1:], AUD_RAW - raw.shape[0], 0)], 0)
    yield dict(units=interp_rows(pose, t_all).reshape(UNITS_PER_EXAMPLE, UNIT, -1),
               aud=interp_rows(aud, t_all), aud_raw=raw, style=np.int32(seq["style"]),
               has_audio=np.int32(seq["has_audio"]), start=np.int32(s0))


def num_windows(frames: int, stride: int) -> int:
  return max(0, (frames - WINDOW) // stride + 1)


def num_units(beats: np.ndarray, stride: int = 2) -> int:
  """How many examples ``units`` yields for these beats (same rule, no interpolation)."""
  return len(steady_starts(beats, stride))


def sequence_example(seq) -> dict:
  pose = _flat_pose(seq)
  t = pose.shape[0]
  ex = dict(pose=pose, root=np.asarray(seq["root"], np.float32), style=np.int32(seq["style"]),
            has_audio=np.int32(seq["has_audio"]), length=np.int32(t),
            beat=beat_indicator(seq["beats"], t))
  for f in FRAME_FEATURES:
    ex[f] = np.asarray(seq[f], np.float32)
  return ex


# ------------------------------------------------------------------------------------- stats ---

def generation_stats(train_seqs, pose_mean, pose_std) -> dict[str, np.ndarray]:
  """What generation calibrates on the train split (kept in the model state, so in checkpoints):

  * ``pose_init`` (P,): the facing-normalised mean pose (every frame rotated to face +x first;
    the plain mean of root-relative poses whose facings spread over the circle is a collapsed
    skeleton, shoulders 2.4 cm apart on the real data against 28.8 cm real);
  * ``unit_motion_pct`` (101,): percentiles 0..100 of the train units' motion, mean
    |x_{t+1} - x_t| per dimension and frame in z-scored units (the scale of
    ``model.gen_static_thr``), over every unit of every ``units`` example.
  """
  poses = [skeleton_lib.facing_normalised(s["pose"], str(s.get("skeleton", ""))) for s in train_seqs]
  init = np.concatenate([p.reshape(p.shape[0], -1) for p in poses], 0).mean(0)
  motion = []
  for s in train_seqs:
    if not s.get("has_audio", 1) or "d2m28" not in s:
      continue
    for ex in units(s):
      u = (ex["units"] - pose_mean) / pose_std                     # (3, T, P)
      motion.append(np.abs(np.diff(u, axis=1)).mean(axis=(1, 2)))
  motion = np.concatenate(motion) if motion else np.zeros((1,))
  return dict(pose_init=init.astype(np.float32),
              unit_motion_pct=np.percentile(motion, np.arange(101)).astype(np.float32))


def compute_stats(train_seqs) -> dict[str, np.ndarray]:
  """Pose z-score and min-max stats, root and per-feature mean/std, over train frames only
  (and :func:`generation_stats`)."""
  poses = np.concatenate([_flat_pose(s) for s in train_seqs], 0).astype(np.float64)
  roots = np.concatenate([np.asarray(s["root"]) for s in train_seqs], 0).astype(np.float64)

  def std(x):
    sd = x.std(0)
    return np.where(sd < 1e-6, 1.0, sd).astype(np.float32)

  st = dict(pose_mean=poses.mean(0).astype(np.float32), pose_std=std(poses),
            pose_min=poses.min(0).astype(np.float32), pose_max=poses.max(0).astype(np.float32),
            root_mean=roots.mean(0).astype(np.float32), root_std=std(roots))
  with_audio = [s for s in train_seqs if s["has_audio"]] or list(train_seqs)
  st.update(generation_stats(train_seqs, st["pose_mean"], st["pose_std"]))
  for f in FRAME_FEATURES:
    x = np.concatenate([np.asarray(s[f]) for s in with_audio], 0).astype(np.float64)
    st[f"{f}_mean"] = x.mean(0).astype(np.float32)
    st[f"{f}_std"] = std(x)
  return st
