"""Geometric ("manual") features for FID_g / Div_g: Müller-style boolean relations.

Source: AIST++ API ``aist_plusplus/features/manual.py`` as described in
../shared/specs/metrics.md §1.3 (32 boolean relational features per frame, after Müller et al.,
"Efficient content-based retrieval of motion capture data", 2005: plane, normal-plane, move,
normal-move, angle and fast relations; thresholds scaled by humerus length ``hl``, shoulder
width ``sw`` and hip width ``hw``), averaged over frames into a 32-d vector, then compared with
the same GT-normalised Fréchet distance as FID_k.

The relation list below follows the AIST++ list as recalled from its public code (not re-read
line by line for this port; written from the definitions, not copied). Relations:

* ``plane(a, b, c, j, t)``: signed distance of j from the plane through a, b, c > t;
* ``nplane(a, b, c, j, t)``: signed distance of j from the plane with normal b - a through c > t;
* ``move(a, b, c, j, t)``: velocity of j relative to c, along direction b - a, > t (per second);
* ``nmove(a, b, c, j, t)``: velocity of j relative to a, along the normal of plane (a, b, c), > t;
* ``angle(a, b, c, d, [lo, hi])``: angle between b - a and d - c within [lo, hi] degrees;
* ``fast(j, t)``: speed of j > t (per second).

Mapping to mocap23 (documented choice; see README "Evaluation"):

* real joints: root = pelvis (2); shoulders 3 / 12, elbows 4 / 13, wrists 5 / 14, hips 7 / 16,
  knees 8 / 17, ankles 9 / 18, toes 11 / 20. Side A is called "r", side B "l" (the data cannot tell
  left from right; the relations come in mirrored pairs, so a swap only permutes dimensions,
  which the per-dimension normalised Fréchet distance does not see).
* virtual joints (no SMPL counterpart in the data): neck = mid(3, 12); belly and chest = 1/3 and
  2/3 of the way from the pelvis to the neck; floor ``y_min`` = lowest joint height over the
  clip (the motion is root-relative, so "foot above floor" means above the clip's lowest point).
* ``hl``, ``sw``, ``hw`` are constants measured on the real mocap data (cm): 31, 30, 21. Velocity
  thresholds are in units per SECOND (so the frame rate only sets the finite-difference step).
* Not mapped: the 2D OpenPose skeletons (planes and normals need depth): ``geometric_features``
  raises for 2D input and evaluation reports FID_g as n/a there.
"""
from __future__ import annotations

import numpy as np

MOCAP23_BODY_SCALE = dict(hl=31.0, sw=30.0, hw=21.0)  # cm, measured on the real data

_R = dict(rshoulder=3, relbow=4, rwrist=5, rhip=7, rknee=8, rankle=9, rtoes=11,
          lshoulder=12, lelbow=13, lwrist=14, lhip=16, lknee=17, lankle=18, ltoes=20, root=2)


def _named_points(p: np.ndarray) -> dict:
  """(T, 23, 3) -> dict name -> (T, 3), including the virtual joints."""
  T = p.shape[0]
  pts = {k: p[:, v] for k, v in _R.items()}
  neck = 0.5 * (p[:, 3] + p[:, 12])
  pts["neck"] = neck
  pts["belly"] = p[:, 2] + (neck - p[:, 2]) / 3.0
  pts["chest"] = p[:, 2] + 2.0 * (neck - p[:, 2]) / 3.0
  pts["zero"] = np.zeros((T, 3))
  pts["y_unit"] = np.tile([0.0, 1.0, 0.0], (T, 1))
  pts["minus_y_unit"] = np.tile([0.0, -1.0, 0.0], (T, 1))
  pts["y_min"] = np.tile([0.0, p[..., 1].min(), 0.0], (T, 1))
  return pts


def _unit(v):
  n = np.linalg.norm(v, axis=-1, keepdims=True)
  return v / np.where(n > 1e-9, n, 1.0)


def _vel(x, fps):
  """Backward-difference velocity per second at frames 1..T-1."""
  return (x[1:] - x[:-1]) * fps


def geometric_features(positions: np.ndarray, fps: float = 25.0, *, body_scale=None,
                       return_per_frame: bool = False) -> np.ndarray:
  """(T, 23, 3) mocap23 positions (y up) -> (32,) mean boolean relation vector (float64)."""
  p = np.asarray(positions, np.float64)
  if p.ndim != 3 or p.shape[-1] != 3 or p.shape[1] != 23:
    raise ValueError(f"geometric features are defined for 3D mocap23 (T, 23, 3); got {p.shape}")
  if p.shape[0] < 2:
    raise ValueError("geometric features need at least 2 frames")
  s = dict(MOCAP23_BODY_SCALE if body_scale is None else body_scale)
  hl, sw, hw = s["hl"], s["sw"], s["hw"]
  P = _named_points(p)
  cur = {k: v[1:] for k, v in P.items()}  # relations are evaluated at frames 1..T-1

  def plane(a, b, c, j, t):
    n = _unit(np.cross(cur[b] - cur[a], cur[c] - cur[a]))
    return np.sum((cur[j] - cur[a]) * n, -1) > t

  def nplane(a, b, c, j, t):
    n = _unit(cur[b] - cur[a])
    return np.sum((cur[j] - cur[c]) * n, -1) > t

  def move(a, b, c, j, t):
    v = _vel(P[j] - P[c], fps)
    return np.sum(v * _unit(cur[b] - cur[a]), -1) > t

  def nmove(a, b, c, j, t):
    v = _vel(P[j] - P[a], fps)
    n = _unit(np.cross(cur[b] - cur[a], cur[c] - cur[a]))
    return np.sum(v * n, -1) > t

  def angle(a, b, c, d, rng):
    u, w = _unit(cur[b] - cur[a]), _unit(cur[d] - cur[c])
    ang = np.degrees(np.arccos(np.clip(np.sum(u * w, -1), -1.0, 1.0)))
    return (ang >= rng[0]) & (ang <= rng[1])

  def fast(j, t):
    return np.linalg.norm(_vel(P[j], fps), axis=-1) > t

  feats = [
      nmove("neck", "rhip", "lhip", "rwrist", 1.8 * hl),
      nmove("neck", "lhip", "rhip", "lwrist", 1.8 * hl),
      nplane("chest", "neck", "neck", "rwrist", 0.2 * hl),
      nplane("chest", "neck", "neck", "lwrist", 0.2 * hl),
      move("belly", "chest", "chest", "rwrist", 1.8 * hl),
      move("belly", "chest", "chest", "lwrist", 1.8 * hl),
      angle("relbow", "rshoulder", "relbow", "rwrist", (0, 110)),
      angle("lelbow", "lshoulder", "lelbow", "lwrist", (0, 110)),
      nplane("lshoulder", "rshoulder", "lwrist", "rwrist", 2.5 * sw),
      move("lwrist", "rwrist", "rwrist", "lwrist", 1.4 * hl),
      move("rwrist", "root", "lwrist", "root", 1.4 * hl),
      move("lwrist", "root", "rwrist", "root", 1.4 * hl),
      fast("rwrist", 2.5 * hl),
      fast("lwrist", 2.5 * hl),
      plane("root", "lhip", "ltoes", "rankle", 0.38 * hl),
      plane("root", "rhip", "rtoes", "lankle", 0.38 * hl),
      nplane("zero", "y_unit", "y_min", "rankle", 1.2 * hl),
      nplane("zero", "y_unit", "y_min", "lankle", 1.2 * hl),
      nplane("lhip", "rhip", "lankle", "rankle", 2.1 * hw),
      angle("rknee", "rhip", "rknee", "rankle", (0, 110)),
      angle("lknee", "lhip", "lknee", "lankle", (0, 110)),
      fast("rankle", 2.5 * hl),
      fast("lankle", 2.5 * hl),
      angle("neck", "root", "rshoulder", "relbow", (25, 180)),
      angle("neck", "root", "lshoulder", "lelbow", (25, 180)),
      angle("neck", "root", "rhip", "rknee", (50, 180)),
      angle("neck", "root", "lhip", "lknee", (50, 180)),
      plane("rankle", "neck", "lankle", "root", 0.5 * hl),
      angle("neck", "root", "zero", "y_unit", (70, 110)),
      nplane("zero", "minus_y_unit", "y_min", "rwrist", -1.2 * hl),
      nplane("zero", "minus_y_unit", "y_min", "lwrist", -1.2 * hl),
      fast("root", 2.3 * hl),
  ]
  per_frame = np.stack(feats, axis=-1).astype(np.float64)  # (T-1, 32)
  return per_frame if return_per_frame else per_frame.mean(axis=0)
