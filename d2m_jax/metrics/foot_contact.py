"""Physical Foot Contact score (PFC).

Source: EDGE ``eval/eval_pfc.py`` as described in ../shared/specs/metrics.md §1.3: with joints at
30 fps, z up, the root acceleration by finite differences, its vertical component clamped to >= 0,
its norm divided by the sequence maximum (a_t); horizontal speeds of the left ankle/toe and right
ankle/toe; per frame ``min(v_LA, v_LT) * min(v_RA, v_RT) * a_t``; mean over frames, mean over
samples, times 1e4. Lower is better (a foot that slides while the body accelerates is penalised).

Adaptation to mocap23 (y up, cm, 25 fps):

* root = the pelvis joint (index 2) in GLOBAL coordinates, so the root trajectory is required:
  PFC of root-relative motion is meaningless (no body acceleration), and evaluation reports
  "n/a" for models that output no root.
* feet: ankle A = 9, toe A = 11, ankle B = 18, toe B = 20 (which side is left is unknown; the
  score is symmetric in the sides).
* units: metres; speeds are expressed per 1/30 s (per-frame displacement x fps / 30) so the
  magnitude matches the original's per-frame values at 30 fps. The root acceleration is
  normalised by its maximum, so its units cancel.
"""
from __future__ import annotations

import numpy as np

MOCAP23_FEET = (9, 11, 18, 20)  # ankle A, toe A, ankle B, toe B
MOCAP23_ROOT_JOINT = 2


def physical_foot_contact(positions: np.ndarray, root: np.ndarray, fps: float = 25.0, *,
                          up_axis: int = 1, units_per_metre: float = 100.0,
                          feet=MOCAP23_FEET, root_joint: int = MOCAP23_ROOT_JOINT) -> float:
  """PFC (x 1e4) of one dance: positions (T, J, 3) root-relative plus root (T, 3)."""
  p = (np.asarray(positions, np.float64) + np.asarray(root, np.float64)[:, None, :])
  p = p / units_per_metre
  if p.shape[0] < 3:
    raise ValueError(f"PFC needs at least 3 frames, got {p.shape[0]}")
  scale = fps / 30.0
  r = p[:, root_joint]
  root_v = (r[1:] - r[:-1]) * scale
  root_a = (root_v[1:] - root_v[:-1]) * scale
  root_a[:, up_axis] = np.maximum(root_a[:, up_axis], 0.0)
  a = np.linalg.norm(root_a, axis=-1)
  a = a / a.max() if a.max() > 0 else a
  horiz = [c for c in range(p.shape[-1]) if c != up_axis]
  f = p[:, list(feet)][..., horiz]
  fv = np.linalg.norm(f[2:] - f[1:-1], axis=-1) * scale  # (T-2, 4), aligned with root_a
  cost = np.minimum(fv[:, 0], fv[:, 1]) * np.minimum(fv[:, 2], fv[:, 3]) * a
  return float(cost.mean() * 1e4)
