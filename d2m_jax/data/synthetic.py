"""The embedded default dataset: procedural ballroom music and beat-synchronous 23-joint dances.

Four styles with their usual tempi and distinct timbres:

* cha-cha (C): 4/4, ~120 BPM; cowbell on every beat, "cha-cha-cha" on 4-and-1, piano chords;
  dance: Cuban hip sway every 2 beats, quick side steps, swinging open arm.
* rumba (R): 4/4, ~104 BPM; soft pad chords, conga on 2 and 4-and, shaker;
  dance: slow 4-beat hip sway, flowing arm circles, slow turns.
* tango (T): 4/4, ~128 BPM; staccato accordion chords with accents, strong bass;
  dance: low knees, sharp (snapped) walking steps, abrupt 90-degree turns, head snaps.
* waltz (W): 3/4, ~90 BPM; oom-pah-pah (bass on 1, string chords on 2 and 3, with vibrato);
  dance: rise and fall over each bar, closed arm hold, continuous rotation along a circle.

``generate_dataset`` writes the Music-to-Dance on-disk layout, so the real-data reader ingests
it unchanged: ``DANCE_<S>_<n>/{audio.wav, config.json}`` and
``v2_synthetic/DANCE_<S>_<n>/skeletons.json`` (25 fps, frame k <-> audio time (start + k) / 25).
Deterministic given the seed.
"""
from __future__ import annotations

import json
import os

import numpy as np

from d2m_jax import files
from d2m_jax.data import skeleton

SR = 22050
GENERATOR_VERSION = 2      # 2: movements pause on the beats (warped beat phase)
FPS = skeleton.MOCAP_FPS
# style: (bpm, beats per bar)
STYLE_TEMPO = {"C": (120.0, 4), "R": (104.0, 4), "T": (128.0, 4), "W": (90.0, 3)}

# Rest pose, cm, y up, relative to the root (the pelvis centre ~95 cm above the floor).
REST_POSE = np.array([
    [0, 70, 5], [0, 64, -5], [0, 0, 0],
    [18, 48, 0], [22, 22, 0], [24, -2, 4], [25, -10, 5],
    [10, -5, 0], [11, -48, 2], [11, -85, 0], [11, -90, -5], [11, -91, 14],
    [-18, 48, 0], [-22, 22, 0], [-24, -2, 4], [-25, -10, 5],
    [-10, -5, 0], [-11, -48, 2], [-11, -85, 0], [-11, -90, -5], [-11, -91, 14],
    [-26, -12, 8], [26, -12, 8]], np.float64)
ROOT_HEIGHT = 95.0
ARM_A, ARM_B = (4, 5, 6, 22), (13, 14, 15, 21)
FOOT_A, FOOT_B = (9, 10, 11), (18, 19, 20)


# ---------------------------------------------------------------------------------- music ---

def _midi_hz(m):
  return 440.0 * 2.0 ** ((np.asarray(m, np.float64) - 69.0) / 12.0)


def _add(buf, t0, sig):
  i = int(round(t0 * SR))
  if i >= buf.size or i < 0:
    return
  n = min(sig.size, buf.size - i)
  buf[i:i + n] += sig[:n]


def _tone(freqs, dur, harmonics, attack=0.005, decay=None, vibrato=0.0):
  t = np.arange(int(dur * SR)) / SR
  env = np.minimum(t / attack, 1.0)
  env *= np.exp(-t / decay) if decay else np.clip((dur - t) / 0.05, 0, 1)
  out = np.zeros_like(t)
  for f in np.atleast_1d(freqs):
    ph = 2 * np.pi * f * t + (vibrato * np.sin(2 * np.pi * 5.5 * t) if vibrato else 0.0)
    for k, a in enumerate(harmonics, start=1):
      out += a * np.sin(k * ph)
  return out * env / max(1, np.size(freqs))


def _noise_burst(rng, dur, decay, lowpass=None):
  n = rng.standard_normal(int(dur * SR))
  if lowpass:
    n = np.convolve(n, np.ones(lowpass) / lowpass, mode="same")
  t = np.arange(n.size) / SR
  return n * np.exp(-t / decay)


def _thump(f0, f1, dur, decay):
  t = np.arange(int(dur * SR)) / SR
  f = f1 + (f0 - f1) * np.exp(-t / 0.03)
  return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / decay)


def synth_music(style: str, bpm: float, seconds: float, offset: float, key: int,
                rng: np.random.Generator) -> np.ndarray:
  """A ballroom-like track: beat k (k >= 0) sounds at ``offset + k * 60 / bpm`` s."""
  _, bar = STYLE_TEMPO[style]
  spb = 60.0 / bpm
  buf = np.zeros(int(seconds * SR))
  prog = [0, 5, 7, 0, 9, 5, 7, 0]                                    # I IV V I vi IV V I
  n_beats = int((seconds - offset) / spb) + 1
  for b in range(n_beats):
    t = offset + b * spb
    pos = b % bar
    root = key + prog[(b // bar) % len(prog)]
    triad = _midi_hz([root + 12, root + 16, root + 19])
    bass = _midi_hz(root - 12)
    if style == "W":
      if pos == 0:
        _add(buf, t, 0.5 * _tone(bass, 0.9 * spb, [1, 0.5, 0.2], decay=0.5))
      else:
        _add(buf, t, 0.25 * _tone(triad, 0.8 * spb, [1, .5, .33, .25, .2], attack=0.04,
                                  vibrato=0.02))
      _add(buf, t, (0.12 if pos == 0 else 0.05) * _noise_burst(rng, 0.05, 0.01))
    elif style == "C":
      cow = _tone([560.0, 845.0], 0.12, [1.0, 0.3], decay=0.04)
      _add(buf, t, (0.4 if pos == 0 else 0.3) * cow)
      _add(buf, t, 0.6 * _thump(150.0, 60.0, 0.2, 0.07))                 # kick on every beat
      if pos in (0, 2):
        _add(buf, t, 0.45 * _tone(bass, 0.4 * spb, [1, 0.3], decay=0.2))
      _add(buf, t + 0.5 * spb, 0.08 * _tone(triad, 0.4 * spb, [1, .4, .2, .1], decay=0.12))
      if pos == 3:                                                       # cha-cha on 4-and
        _add(buf, t + 0.5 * spb, 0.12 * cow)
    elif style == "R":
      if pos == 0:
        _add(buf, t, 0.2 * _tone(triad, bar * spb, [1, 0.3], attack=0.3))
        _add(buf, t, 0.4 * _tone(bass, 2 * spb, [1, 0.2], attack=0.01, decay=0.8))
      _add(buf, t, 0.5 * _thump(120.0, 55.0, 0.25, 0.09))                # soft kick, every beat
      if pos in (1, 3):
        _add(buf, t, 0.45 * _thump(260.0, 160.0, 0.25, 0.08))            # conga on 2 and 4
      if pos == 3:
        _add(buf, t + 0.5 * spb, 0.15 * _thump(330.0, 200.0, 0.2, 0.06))
      _add(buf, t + 0.5 * spb, 0.02 * _noise_burst(rng, 0.08, 0.02))
    elif style == "T":
      accent = 1.0 if pos == 0 else 0.6
      _add(buf, t, 0.28 * accent * _tone(triad, 0.18 * spb, [1, 0, .33, 0, .2, 0, .14], decay=0.06))
      _add(buf, t, 0.5 * accent * _tone(bass, 0.25 * spb, [1, 0.5, 0.25], decay=0.08))
      if pos == 3:
        _add(buf, t + 0.5 * spb, 0.25 * _tone(triad, 0.15 * spb, [1, 0, .33, 0, .2], decay=0.05))
  buf += 0.002 * rng.standard_normal(buf.size)
  return (0.8 * buf / (np.max(np.abs(buf)) + 1e-9)).astype(np.float32)


# --------------------------------------------------------------------------------- motion ---

def _rot_y(theta):
  c, s = np.cos(theta), np.sin(theta)
  m = np.zeros(theta.shape + (3, 3))
  m[..., 0, 0], m[..., 0, 2], m[..., 1, 1], m[..., 2, 0], m[..., 2, 2] = c, s, 1, -s, c
  return m


def _snap(x, sharp=6.0):
  """Periodic 0 -> 1 staircase with steep steps at integers (tango's staccato timing)."""
  f = x - np.floor(x)
  return np.floor(x) + 1.0 / (1.0 + np.exp(-sharp * 2 * (f - 0.5))) if sharp else x


def synth_motion(style: str, beat_phase: np.ndarray, bar: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(joints (T, 23, 3) root-relative, root (T, 3)) for beat phases b(t) (beats since beat 0)."""
  # Warped beat phase: b - sin(2 pi b) / (2 pi) has zero slope at every beat, so every
  # movement below (all functions of b) pauses on the beats: kinematic beats = music beats.
  b = beat_phase - np.sin(2 * np.pi * beat_phase) / (2 * np.pi)
  t_n = b.size
  m = b / bar
  amp = rng.uniform(0.8, 1.2)
  j = np.broadcast_to(REST_POSE, (t_n, 23, 3)).copy()
  bob = np.zeros(t_n)
  heading = np.zeros(t_n) + rng.uniform(0, 2 * np.pi)
  step_a = np.zeros((t_n, 3))
  step_b = np.zeros((t_n, 3))
  arm_a = np.zeros((t_n, 3))
  arm_b = np.zeros((t_n, 3))
  pelvis_x = np.zeros(t_n)
  head = np.zeros((t_n, 3))
  if style == "W":
    bob = amp * 7.0 * np.cos(2 * np.pi * m)                  # low on beat 1, rise on 2-3
    step_a[:, 2] = amp * 25.0 * np.sin(2 * np.pi * m)
    step_b[:, 2] = amp * 25.0 * np.sin(2 * np.pi * m + np.pi)
    step_a[:, 0] = 8.0 * np.sin(2 * np.pi * m + np.pi / 2)
    arm_a[:] = [10.0, 40.0, 15.0]                             # closed hold, arms up
    arm_b[:] = [-5.0, 30.0, 20.0]
    heading += 2 * np.pi * m / 4.0                           # one turn per 4 bars
    radius, speed = 150.0, 2 * np.pi / (4.0 * bar)
    ang = speed * b
    root_xz = np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1)
  elif style == "C":
    pelvis_x = amp * 7.0 * np.sin(np.pi * b)
    quick = np.sin(np.pi * b) * np.abs(np.sin(np.pi * b)) ** 0.3
    step_a[:, 0] = amp * 18.0 * quick
    step_b[:, 0] = amp * 18.0 * quick
    step_a[:, 2] = 10.0 * np.sin(np.pi * b / 2)
    step_b[:, 2] = -10.0 * np.sin(np.pi * b / 2)
    bob = 2.5 * np.abs(np.sin(np.pi * b))
    arm_a = np.stack([18.0 + 12.0 * np.sin(np.pi * b), 30.0 + 8.0 * np.cos(np.pi * b),
                      5.0 * np.ones(t_n)], 1)
    arm_b = np.stack([-6.0 * np.ones(t_n), 25.0 * np.ones(t_n), 15.0 * np.ones(t_n)], 1)
    heading += np.deg2rad(20.0) * np.sin(np.pi * b / 2)
    root_xz = np.stack([20.0 * np.sin(np.pi * b / 4), 5.0 * np.sin(np.pi * b / 8)], 1)
  elif style == "R":
    pelvis_x = amp * 10.0 * np.sin(np.pi * b / 2)
    step_a[:, 2] = amp * 20.0 * np.sin(np.pi * b / 2)
    step_b[:, 2] = -amp * 20.0 * np.sin(np.pi * b / 2)
    step_a[:, 0] = 6.0 * np.cos(np.pi * b / 2)
    bob = 3.0 * np.sin(np.pi * b / 2) ** 2
    phase = 2 * np.pi * b / 4
    arm_a = np.stack([25.0 + 20.0 * np.cos(phase), 35.0 + 25.0 * np.sin(phase),
                      10.0 * np.ones(t_n)], 1)
    arm_b = np.stack([-10.0 * np.ones(t_n), 10.0 + 10.0 * np.sin(phase + 1.0),
                      10.0 * np.ones(t_n)], 1)
    heading += np.deg2rad(45.0) * np.sin(2 * np.pi * b / 16)
    root_xz = np.stack([30.0 * np.sin(2 * np.pi * b / 8), 30.0 * np.cos(2 * np.pi * b / 8)], 1)
  elif style == "T":
    s = _snap(b)
    bob = -8.0 * np.ones(t_n) + 1.5 * np.cos(2 * np.pi * s)
    step = np.sin(np.pi * s)
    step_a[:, 2] = amp * 30.0 * step
    step_b[:, 2] = -amp * 30.0 * step
    arm_a[:] = [15.0, 38.0, 18.0]
    arm_b[:] = [-8.0, 30.0, 22.0]
    turns = _snap(b / (2 * bar), 10.0)
    heading += np.pi / 2 * turns
    head[:, 0] = 6.0 * np.sign(np.sin(np.pi * _snap(b / bar, 10.0) + 0.3))
    walk = np.where(((b // bar) % 2) == 0, 1.0, 0.0)          # walk one bar, hold one bar
    dt_beats = np.gradient(b)
    v = 25.0 * walk * dt_beats                                 # cm per frame along heading
    root_xz = np.stack([np.cumsum(v * np.cos(heading)), np.cumsum(v * np.sin(heading))], 1)
  else:
    raise ValueError(style)
  # Legs: feet follow the steps; knees bend with bob (lower pelvis -> bent knees).
  for idx, step in ((FOOT_A, step_a), (FOOT_B, step_b)):
    j[:, idx, :] += step[:, None, :] - np.array([0.0, bob.mean(), 0.0])
  for hip, knee, ankle in ((7, 8, 9), (16, 17, 18)):
    j[:, hip, 0] += pelvis_x
    j[:, knee] = 0.5 * (j[:, hip] + j[:, ankle])
    j[:, knee, 2] += 6.0 + np.maximum(0.0, 5.0 - bob)
  j[:, 2, 0] += pelvis_x
  for idx, arm in ((ARM_A, arm_a), (ARM_B, arm_b)):
    for k, ji in enumerate(idx):
      j[:, ji, :] += arm * (0.4 + 0.2 * k)
  j[:, (0, 1), :] += head[:, None, :]
  j[:, :, 1] -= (bob - bob.mean())[:, None] * 0.0
  j += np.cumsum(rng.normal(0, 0.05, (t_n, 23, 3)), axis=0) * 0.2   # small smooth drift
  joints = np.einsum("tij,tkj->tki", _rot_y(heading), j)
  root = np.stack([root_xz[:, 0], ROOT_HEIGHT + bob, root_xz[:, 1]], 1)
  return joints.astype(np.float32), root.astype(np.float32)


# -------------------------------------------------------------------------------- dataset ---

def generate_sequence(style: str, index: int, seconds: float, seed: int):
  """One sequence: (audio (N,) float32 at SR, start, end, joints, root, bpm, first beat (s))."""
  rng = np.random.default_rng([seed, skeleton.STYLES.index(style), index])
  bpm0, bar = STYLE_TEMPO[style]
  bpm = bpm0 * rng.uniform(0.96, 1.04)
  offset = rng.uniform(0.1, 0.6)                   # first beat of the music (s)
  start = int(rng.integers(0, 40))                 # dance starts at frame `start` of the audio
  n = int(round(seconds * FPS))
  end = start + n
  audio_s = end / FPS + 1.0
  key = int(rng.integers(45, 57))
  music = synth_music(style, bpm, audio_s, offset, key, rng)
  t = (start + np.arange(n)) / FPS
  beat_phase = (t - offset) * bpm / 60.0
  joints, root = synth_motion(style, beat_phase, bar, rng)
  return music, start, end, joints, root, bpm, offset


def generate_dataset(out_dir: str, *, sequences_per_style: int = 6, seconds: float = 30.0,
                     seed: int = 0, styles=skeleton.STYLES) -> list[str]:
  """Writes the procedural dataset in the Music-to-Dance layout; returns the sequence names."""
  import soundfile as sf
  os.makedirs(out_dir, exist_ok=True)
  names = []
  for style in styles:
    for i in range(1, sequences_per_style + 1):
      name = f"DANCE_{style}_{i}"
      seq_dir = os.path.join(out_dir, name)
      v2_dir = os.path.join(out_dir, "v2_synthetic", name)
      os.makedirs(seq_dir, exist_ok=True)
      os.makedirs(v2_dir, exist_ok=True)
      music, start, end, joints, root, bpm, first_beat = generate_sequence(style, i, seconds,
                                                                            seed)
      with files.atomic_path(os.path.join(seq_dir, "audio.wav")) as tmp:
        sf.write(tmp, music, SR, subtype="PCM_16")
      cfg = {"start_position": start, "end_position": end, "bpm": round(bpm, 4),
             "first_beat_s": round(first_beat, 5)}
      files.write_text(os.path.join(seq_dir, "config.json"), json.dumps(cfg))
      sk = {"length": int(joints.shape[0]),
            "center": np.round(root, 2).tolist(),
            "skeletons": np.round(joints, 2).tolist()}
      files.write_text(os.path.join(v2_dir, "skeletons.json"),
                       json.dumps(sk, separators=(",", ":")))
      names.append(name)
  files.write_text(os.path.join(out_dir, "SYNTHETIC.json"), json.dumps(
      {"sequences_per_style": sequences_per_style, "seconds": seconds, "seed": seed,
       "styles": list(styles), "version": GENERATOR_VERSION}))
  return names
