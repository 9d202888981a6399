"""Readers for raw dance data: Music-to-Dance mocap folders, OpenPose JSON folders, npz arrays.

Every reader returns a :class:`Sequence` (motion at a known fps, optional audio, metadata) or
raises :class:`~d2m_jax.data.errors.DataError` naming the file and the problem.

Mocap re-timing rules (``../shared/data/music_to_dance/README.md``, "Defects"):

* v2 skeletons (``<root>/v2_*/DANCE_*/skeletons.json``) are used where present; they are at
  25 fps and frame k matches audio time ``(start + k) / 25`` s.
* v1 skeletons (``DANCE_*/skeletons.json``) were resampled to a round-ish frame count, for every
  dance type. They are linearly re-timed along time to the v2 frame count listed in the README
  (``V2_LENGTHS``), or to ``end - start`` for sequences the README has no v2 count for.
* Audio is cut to ``[start / 25, end / 25]`` s. Audio that ends more than ``AUDIO_SLACK_S``
  before the dance does is an error; a shortfall within the slack is zero-padded.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any

import numpy as np

from d2m_jax.data import audio as audio_lib
from d2m_jax.data import skeleton
from d2m_jax.data.errors import DataError

AUDIO_NAMES = ("audio.mp3", "audio.wav", "audio.flac", "audio.ogg")
AUDIO_SLACK_S = 0.5
# v2 frame counts of the v1-only sequences (from the shared dataset README's table).
V2_LENGTHS = {
    "DANCE_C_2": 1890, "DANCE_C_4": 1892, "DANCE_C_6": 1889, "DANCE_C_7": 2082,
    "DANCE_C_9": 1620, "DANCE_R_4": 2819, "DANCE_R_5": 2816, "DANCE_R_7": 2755,
    "DANCE_R_8": 2178, "DANCE_R_9": 2410,
}
SEQ_DIR_RE = re.compile(r"^DANCE_([CRTW])_(\d+)$")


@dataclasses.dataclass
class Sequence:
  """One dance sequence.

  pose: (T, J, C) float32, root-relative joints; root: (T, 3) float32 root trajectory (zeros for
  2-D sources); style: int index; wave/sr: the audio cut to the dance (frame k <-> time k / fps)
  or None (motion-only); confidences: (T, J) for OpenPose; meta: notes (re-timing, fills...).
  """
  name: str
  pose: np.ndarray
  root: np.ndarray
  style: int
  fps: float
  skeleton: str
  wave: np.ndarray | None = None
  sr: int | None = None
  confidences: np.ndarray | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_frames(self) -> int:
    return int(self.pose.shape[0])

  @property
  def has_audio(self) -> bool:
    return self.wave is not None


def _load_json(path: str) -> Any:
  if not os.path.exists(path):
    raise DataError(path, "file not found")
  if os.path.getsize(path) == 0:
    raise DataError(path, "empty JSON file")
  try:
    with open(path, "rb") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(path, f"invalid JSON ({e})") from None


def retime(x: np.ndarray, length: int) -> np.ndarray:
  """Linear interpolation along axis 0 to ``length`` frames, first and last frames kept."""
  n = x.shape[0]
  if n == length:
    return x
  src = np.linspace(0.0, n - 1, length)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, n - 1)
  w = (src - i0).reshape((-1,) + (1,) * (x.ndim - 1))
  return ((1.0 - w) * x[i0] + w * x[i1]).astype(x.dtype)


def read_mocap_skeletons(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a ``skeletons.json``: (joints (N, 23, 3), center (N, 3)) float32, validated."""
  d = _load_json(path)
  if not isinstance(d, dict):
    raise DataError(path, "expected a JSON object with keys 'skeletons' and 'center'")
  missing = [k for k in ("skeletons", "center") if k not in d]
  if missing:
    raise DataError(path, f"missing key(s) {missing} (expected 'length', 'center', 'skeletons')")
  try:
    sk = np.asarray(d["skeletons"], np.float64)
    ce = np.asarray(d["center"], np.float64)
  except (ValueError, TypeError):
    raise DataError(path, "ragged or non-numeric 'skeletons'/'center' arrays") from None
  nj = len(skeleton.MOCAP23_JOINTS)
  if sk.ndim != 3 or sk.shape[1:] != (nj, 3):
    raise DataError(path, f"'skeletons' has shape {sk.shape}, expected (N, {nj}, 3)")
  if ce.shape != (sk.shape[0], 3):
    raise DataError(path, f"'center' has shape {ce.shape}, expected ({sk.shape[0]}, 3)")
  if sk.shape[0] < 2:
    raise DataError(path, f"only {sk.shape[0]} frame(s)")
  if "length" in d and int(d["length"]) != sk.shape[0]:
    raise DataError(path, f"'length' is {d['length']} but 'skeletons' has {sk.shape[0]} frames")
  if not (np.all(np.isfinite(sk)) and np.all(np.isfinite(ce))):
    raise DataError(path, "NaN or infinite joint positions")
  return sk.astype(np.float32), ce.astype(np.float32)


def find_audio(folder: str) -> str | None:
  for n in AUDIO_NAMES:
    p = os.path.join(folder, n)
    if os.path.exists(p):
      return p
  return None


def style_of(name: str) -> int:
  m = SEQ_DIR_RE.match(name)
  if not m:
    raise DataError(name, "folder name is not DANCE_<C|R|T|W>_<n>")
  return skeleton.STYLES.index(m.group(1))


def _read_span(seq_dir: str) -> tuple[int, int]:
  """(start, end) motion frames of the dance in its song, from ``config.json``."""
  cfg_path = os.path.join(seq_dir, "config.json")
  if not os.path.exists(cfg_path):
    raise DataError(cfg_path, "missing config.json (needs start_position/end_position)")
  cfg = _load_json(cfg_path)
  if not isinstance(cfg, dict) or not all(k in cfg for k in ("start_position", "end_position")):
    raise DataError(cfg_path, "config.json needs keys 'start_position' and 'end_position'")
  try:
    start, end = int(cfg["start_position"]), int(cfg["end_position"])
  except (TypeError, ValueError):
    raise DataError(cfg_path, "start_position/end_position are not integers") from None
  if not 0 <= start < end:
    raise DataError(cfg_path, f"bad span start={start} end={end}")
  return start, end


def has_mocap_skeleton(seq_dir: str) -> bool:
  """Whether a ``DANCE_*`` folder has a skeleton (v1 in it, or a ``v2_*`` copy beside it)."""
  seq_dir = os.path.normpath(seq_dir)
  name, root_dir = os.path.basename(seq_dir), os.path.dirname(seq_dir)
  return (os.path.exists(os.path.join(seq_dir, "skeletons.json")) or
          bool(glob.glob(os.path.join(root_dir, "v2_*", name, "skeletons.json"))))


def read_music_only_sequence(seq_dir: str) -> Sequence:
  """A ``DANCE_<T>_<n>`` folder with audio and config but no skeleton (music style only).

  The span is ``config.json``'s ``[start, end)`` (cut to the audio when that ends earlier);
  ``pose``/``root`` are zeros of that many frames and ``meta["music_only"]`` is True.
  """
  seq_dir = os.path.normpath(seq_dir)
  name = os.path.basename(seq_dir)
  style = style_of(name)
  start, end = _read_span(seq_dir)
  apath = find_audio(seq_dir)
  if apath is None:
    raise DataError(seq_dir, f"no audio ({' / '.join(AUDIO_NAMES)}) and no skeleton")
  fps = skeleton.MOCAP_FPS
  wave, sr = audio_lib.load_audio(apath, offset=start / fps, duration=(end - start) / fps)
  n = min(end - start, int(wave.shape[0] * fps // sr))
  if n < 2:
    raise DataError(apath, f"audio ends before the dance span starts ({start / fps:.2f} s)")
  nj = len(skeleton.MOCAP23_JOINTS)
  meta = {"start": start, "end": end, "audio_file": apath, "music_only": True,
          "audio_seconds": wave.shape[0] / sr}
  return Sequence(name=name, pose=np.zeros((n, nj, 3), np.float32),
                  root=np.zeros((n, 3), np.float32), style=style, fps=fps, skeleton="mocap23",
                  wave=wave[:int(round(n * sr / fps))], sr=sr, meta=meta)


def read_mocap_sequence(seq_dir: str, *, load_audio: bool = True) -> Sequence:
  """Reads one ``DANCE_<T>_<n>`` folder of the Music-to-Dance layout (v2 skeletons preferred)."""
  seq_dir = os.path.normpath(seq_dir)
  name = os.path.basename(seq_dir)
  style = style_of(name) if SEQ_DIR_RE.match(name) else None
  if style is None:
    raise DataError(seq_dir, "folder name is not DANCE_<C|R|T|W>_<n> (style comes from it)")
  root_dir = os.path.dirname(seq_dir)
  start, end = _read_span(seq_dir)
  v2 = sorted(glob.glob(os.path.join(root_dir, "v2_*", name, "skeletons.json")))
  v1 = os.path.join(seq_dir, "skeletons.json")
  meta: dict[str, Any] = {"start": start, "end": end}
  if v2:
    joints, center = read_mocap_skeletons(v2[-1])
    meta.update(version="v2", skeleton_file=v2[-1])
  elif os.path.exists(v1):
    joints, center = read_mocap_skeletons(v1)
    target = V2_LENGTHS.get(name, end - start)
    meta.update(version="v1", skeleton_file=v1, v1_frames=int(joints.shape[0]),
                retimed_to=int(target))
    joints, center = retime(joints, target), retime(center, target)
  else:
    raise DataError(seq_dir, "no skeletons.json (neither v1 in the folder nor v2_*/ copy)")
  fps = skeleton.MOCAP_FPS
  n = joints.shape[0]
  seq = Sequence(name=name, pose=joints, root=center, style=style, fps=fps, skeleton="mocap23",
                 meta=meta)
  apath = find_audio(seq_dir)
  meta["audio_file"] = apath
  if apath is None:
    meta["motion_only"] = True
    return seq
  if not load_audio:
    return seq
  span = (end - start) / fps
  wave, sr = audio_lib.load_audio(apath, offset=start / fps, duration=span)
  got = wave.shape[0] / sr
  if got + AUDIO_SLACK_S < n / fps:
    raise DataError(apath, f"audio shorter than the dance: {got:.2f} s of audio from "
                    f"{start / fps:.2f} s, the dance lasts {n / fps:.2f} s ({n} frames)")
  seq.wave, seq.sr = wave, sr
  meta["audio_seconds"] = got
  return seq


def list_mocap_sequences(root_dir: str) -> list[str]:
  """The ``DANCE_*`` folders under a Music-to-Dance root, sorted by (style, number)."""
  if not os.path.isdir(root_dir):
    raise DataError(root_dir, "raw data folder not found")
  out = []
  for n in os.listdir(root_dir):
    m = SEQ_DIR_RE.match(n)
    if m and os.path.isdir(os.path.join(root_dir, n)):
      out.append((m.group(1), int(m.group(2)), os.path.join(root_dir, n)))
  if not out:
    raise DataError(root_dir, "no DANCE_<C|R|T|W>_<n> folders")
  return [p for _, _, p in sorted(out)]


def unmatched_folders(root_dir: str) -> list[dict]:
  """Folders under a Music-to-Dance root that are neither ``DANCE_<C|R|T|W>_<n>`` sequences nor
  ``v2_*`` skeleton sets: ``[{"name", "path", "problem"}]`` (sorted), so every folder of the
  raw data is accounted for (the ingest lists them as skipped, with this reason)."""
  out = []
  for n in sorted(os.listdir(root_dir)) if os.path.isdir(root_dir) else ():
    path = os.path.join(root_dir, n)
    if not os.path.isdir(path) or SEQ_DIR_RE.match(n) or n.startswith("v2_") or \
        n.startswith("."):
      continue
    problem = "folder name is not DANCE_<C|R|T|W>_<n> (the layout's sequence folders)"
    if SEQ_DIR_RE.match(n.upper()):
      problem += f"; rename it {n.upper()} (names are case-sensitive)"
    out.append({"name": n, "path": path, "problem": problem})
  return out


# ----------------------------------------------------------------------------------- OpenPose ---

OPENPOSE_FORMATS = {25: ("BODY_25", "body15", 15), 18: ("COCO", "coco14", 14)}


def read_openpose_folder(folder: str, *, fps: float = 30.0, conf_threshold: float = 0.25,
                         style: int = 0, negate: bool = False) -> Sequence:
  """Reads a folder of per-frame OpenPose ``*_keypoints.json`` files (sorted by name).

  BODY_25 keeps the first 15 joints ('body15'), COCO-18 the first 14 ('coco14'). Joints with
  confidence below ``conf_threshold`` and frames with nobody take the previous frame's value (as
  learn2dance does); leading gaps take the first valid value. Fills are counted in
  ``meta['filled_joints']`` / ``meta['empty_frames']`` and reported. ``negate`` flips x and y
  (learn2dance's ``pose = -xy``). Returns pixel coordinates (T, J, 2) and confidences (T, J).
  """
  if not os.path.isdir(folder):
    raise DataError(folder, "OpenPose folder not found")
  files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
  if not files:
    raise DataError(folder, "no OpenPose .json files")
  kps, fmt = [], None
  for fn in files:
    path = os.path.join(folder, fn)
    d = _load_json(path)
    if not isinstance(d, dict) or "people" not in d:
      raise DataError(path, "missing key 'people' (not an OpenPose keypoint file)")
    people = d["people"]
    if not people:
      kps.append(None)
      continue
    person = people[0]
    if "pose_keypoints_2d" not in person:
      raise DataError(path, "missing key 'pose_keypoints_2d'")
    try:
      k = np.asarray(person["pose_keypoints_2d"], np.float64)
    except (ValueError, TypeError):
      raise DataError(path, "non-numeric pose_keypoints_2d") from None
    if k.ndim != 1 or k.size % 3 or k.size // 3 not in OPENPOSE_FORMATS:
      raise DataError(path, f"pose_keypoints_2d has {k.size} values; expected 75 (BODY_25) or "
                      "54 (COCO-18)")
    if fmt is None:
      fmt = k.size // 3
    elif k.size // 3 != fmt:
      raise DataError(path, f"{k.size // 3} joints, earlier frames have {fmt}")
    if not np.all(np.isfinite(k)):
      raise DataError(path, "NaN or infinite keypoints")
    kps.append(k.reshape(-1, 3))
  if fmt is None:
    raise DataError(folder, "nobody detected in any frame")
  _, skel_name, nj = OPENPOSE_FORMATS[fmt]
  t = len(kps)
  pose = np.zeros((t, nj, 2), np.float32)
  conf = np.zeros((t, nj), np.float32)
  empty = np.zeros((t,), bool)
  for i, k in enumerate(kps):
    if k is None:
      empty[i] = True
    else:
      pose[i], conf[i] = k[:nj, :2], k[:nj, 2]
  valid = (conf >= conf_threshold) & ~empty[:, None]
  filled = int((~valid).sum())
  for j in range(nj):
    ok = np.flatnonzero(valid[:, j])
    if ok.size == 0:
      continue  # never seen: stays 0, counted as filled
    idx = np.maximum.accumulate(np.where(valid[:, j], np.arange(t), -1))
    idx = np.where(idx < 0, ok[0], idx)          # leading gap: first valid value
    pose[:, j] = pose[idx, j]
  if negate:
    pose = -pose
  meta = dict(format=OPENPOSE_FORMATS[fmt][0], filled_joints=filled, empty_frames=int(empty.sum()),
              fill_fraction=filled / float(t * nj), frames=t)
  seq = Sequence(name=os.path.basename(os.path.normpath(folder)), pose=pose,
                 root=np.zeros((t, 3), np.float32), style=style, fps=fps, skeleton=skel_name,
                 confidences=conf, meta=meta)
  apath = find_audio(folder)
  if apath is not None:
    wave, sr = audio_lib.load_audio(apath)
    if wave.shape[0] / sr + AUDIO_SLACK_S < t / fps:
      raise DataError(apath, f"audio shorter than the dance: {wave.shape[0] / sr:.2f} s < "
                      f"{t / fps:.2f} s")
    seq.wave, seq.sr = wave, sr
  else:
    meta["motion_only"] = True
  return seq


# ---------------------------------------------------------------------------------------- npz ---

def read_npz(path: str, *, fps: float = 25.0, style: int = 0, skeleton_name: str | None = None
             ) -> Sequence:
  """Reads ``(T, J, C)`` poses from an npz (key 'poses', 'pose' or the only array).

  Optional keys: 'confidences' (T, J), 'root' (T, 3), 'fps', 'style'.
  """
  if not os.path.exists(path):
    raise DataError(path, "file not found")
  try:
    z = np.load(path, allow_pickle=False)
  except Exception as e:  # noqa: BLE001 (numpy raises many types for bad files)
    raise DataError(path, f"not a readable npz ({e})") from None
  keys = list(z.keys())
  key = next((k for k in ("poses", "pose") if k in keys), keys[0] if len(keys) == 1 else None)
  if key is None:
    raise DataError(path, f"no 'poses' array (keys: {keys})")
  pose = np.asarray(z[key], np.float32)
  if pose.ndim != 3 or pose.shape[2] not in (2, 3) or pose.shape[0] < 2:
    raise DataError(path, f"'{key}' has shape {pose.shape}, expected (T, J, 2|3)")
  if not np.all(np.isfinite(pose)):
    raise DataError(path, "NaN or infinite poses")
  t = pose.shape[0]
  root = np.asarray(z["root"], np.float32) if "root" in keys else np.zeros((t, 3), np.float32)
  if root.shape != (t, 3):
    raise DataError(path, f"'root' has shape {root.shape}, expected ({t}, 3)")
  conf = np.asarray(z["confidences"], np.float32) if "confidences" in keys else None
  if conf is not None and conf.shape != pose.shape[:2]:
    raise DataError(path, f"'confidences' has shape {conf.shape}, expected {pose.shape[:2]}")
  fps = float(z["fps"]) if "fps" in keys else fps
  style = int(z["style"]) if "style" in keys else style
  if skeleton_name is None:
    skeleton_name = {(23, 3): "mocap23", (14, 2): "coco14", (15, 2): "body15"}.get(
        pose.shape[1:], f"custom{pose.shape[1]}x{pose.shape[2]}")
  return Sequence(name=os.path.splitext(os.path.basename(path))[0], pose=pose, root=root,
                  style=style, fps=fps, skeleton=skeleton_name, confidences=conf,
                  meta={"motion_only": True})
