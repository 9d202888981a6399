"""Kinetic features for FID_k / Div_k.

Source: AIST++ API ``aist_plusplus/features/kinetic.py`` (from fairmotion), as described in
../shared/specs/metrics.md §1.3: per joint three scalars, averaged over frames ``i = 1..T-1``:

1. average horizontal kinetic energy ``mean_i |v_h(i)|^2``,
2. average vertical kinetic energy ``mean_i v_up(i)^2``,
3. average energy expenditure ``mean_i |a(i)|`` (mean acceleration magnitude),

where ``v(i)`` is the mean of the finite-difference velocities ``(p[k] - p[k-1]) / dt`` over
``k in [i - w, i + w]`` (frames that exist) and ``a(i)`` the mean of the second differences
``(p[k+1] - 2 p[k] + p[k-1]) / dt^2`` over the same window. The field uses SMPL-24 joints,
metres, 60 fps (``dt = 1/60``) and ``w = 2``, giving a 72-d vector.

Our adaptation (documented choice, see README "Evaluation"):

* **Joints.** All joints of the skeleton, in their table order: mocap23 gives a 69-d vector
  (23 x 3), the 2D OpenPose skeletons give 14 x 3 = 42 or 15 x 3 = 45 (horizontal = x,
  vertical = y; there is no depth). The numbers are therefore NOT comparable with AIST++ values;
  they are comparable between models evaluated here under the same protocol.
* **Units.** Positions are divided by ``units_per_metre`` (100 for the mocap data, which is in cm)
  so energies are in m^2/s^2 like the original. FID is invariant to this (features are z-scored
  with the ground-truth statistics) but the raw features stay readable.
* **Frame rate.** ``dt = 1/fps`` with the data's own fps (25), and the window is scaled to the
  same duration: ``w = max(1, round(2 * fps / 60))`` = 1 frame at 25 fps (+-40 ms; the original's
  +-2 frames at 60 fps are +-33 ms). No resampling: interpolation would add no information and
  a linear one would corrupt accelerations.
* **Acceleration.** The plain central second difference averaged over the window, as the
  definition reads (``convention="ours"``, the default).
* Positions are root-relative (the contract's generators output no root trajectory); pass
  ``root`` to evaluate global motion instead.

Two conventions for the energy expenditure (``convention``; the two kinetic energies are the
same in both):

* ``"ours"`` (default, physically correct): ``a(k) = (p[k+1] - 2 p[k] + p[k-1]) / dt^2``.
* ``"aist"``: the formula the AIST++ API's ``calc_average_acceleration``
  (``aist_plusplus/features/utils.py``, commit 74fac6d "support motion features", 2021) actually
  evaluates, and with it every published FID_k / Div_k built on that code (FACT, Bailando, EDGE,
  ...). Its previous velocity is written ``p[k] - p[k-1] / frame_time``: by operator precedence
  only the second term is divided, so

      v2(k) = (p[k+1] - p[k]) / dt
      v1(k) = p[k] - p[k-1] / dt                      (not (p[k] - p[k-1]) / dt)
      a(k)  = (v2(k) - v1(k)) / dt
            = (p[k+1] - 2 p[k] + p[k-1]) / dt^2  +  p[k] (1 - dt) / dt^2

  with the same window (``k`` in ``[max(1, i - w), min(T - 2, i + w)]``), the norm of the
  window mean, averaged over ``i = 1..T-1``. It depends on absolute positions (not only on their
  differences), so it changes with the units and the coordinate origin (root-relative here);
  it is reported next to ours only so that numbers can be set beside papers'. (A later
  revision of that file, 0bd0cdd, has the parentheses right; the published numbers used the
  slipped formula.)
"""
from __future__ import annotations

from typing import Optional

import numpy as np

CONVENTIONS = ("ours", "aist")

def _window_mean(x: np.ndarray, lo: int, hi: int, w: int) -> np.ndarray:
  """For each i in [1, T-1]: mean of x[k] for k in [max(lo, i-w), min(hi, i+w)] (x indexed by k).

  ``x`` has rows for k = 0..T-1 (rows outside [lo, hi] are ignored). Returns (T-1, ...).
  """
  T = x.shape[0]
  valid = np.zeros(T, bool)
  valid[lo:hi + 1] = True
  xv = np.where(valid.reshape((T,) + (1,) * (x.ndim - 1)), x, 0.0)
  csum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(xv, axis=0)], axis=0)
  ccount = np.concatenate([[0], np.cumsum(valid)])
  i = np.arange(1, T)
  a = np.clip(i - w, 0, T)
  b = np.clip(i + w + 1, 0, T)
  total = csum[b] - csum[a]
  count = (ccount[b] - ccount[a]).astype(np.float64)
  count = np.maximum(count, 1.0)  # empty windows (very short clips) contribute zero
  return total / count.reshape((-1,) + (1,) * (x.ndim - 1))


def kinetic_features(positions: np.ndarray, fps: float = 25.0, *, up_axis: int = 1,
                     units_per_metre: float = 100.0, sliding_window: Optional[int] = None,
                     root: Optional[np.ndarray] = None,
                     convention: str = "ours") -> np.ndarray:
  """(T, J, C) joint positions -> (3 * J,) kinetic feature vector, float64.

  Layout: joint-major, ``[KE_h(j), KE_v(j), EE(j)]`` for j = 0..J-1 (as the original).
  ``convention``: ``"ours"`` or ``"aist"`` (energy expenditure only; module docstring).
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"unknown kinetic convention {convention!r}; known: {CONVENTIONS}")
  p = np.asarray(positions, np.float64)
  if p.ndim != 3 or p.shape[0] < 3:
    raise ValueError(f"need (T>=3, J, C) positions, got shape {p.shape}")
  if root is not None:
    p = p + np.asarray(root, np.float64)[:, None, :]
  p = p / units_per_metre
  T, J, C = p.shape
  dt = 1.0 / fps
  w = sliding_window if sliding_window is not None else max(1, int(round(2 * fps / 60.0)))
  d = np.zeros_like(p)
  d[1:] = (p[1:] - p[:-1]) / dt                      # velocity ending at frame k, k >= 1
  acc = np.zeros_like(p)
  if convention == "aist":  # v1 = p[k] - p[k-1] / dt (upstream precedence)
    acc[1:-1] = ((p[2:] - p[1:-1]) / dt - (p[1:-1] - p[:-2] / dt)) / dt
  else:
    acc[1:-1] = (p[2:] - 2 * p[1:-1] + p[:-2]) / dt**2  # acceleration at frame k, 1 <= k <= T-2
  v = _window_mean(d, 1, T - 1, w)                    # (T-1, J, C)
  a = _window_mean(acc, 1, T - 2, w)
  horiz = [c for c in range(C) if c != up_axis]
  ke_h = np.mean(np.sum(v[..., horiz] ** 2, axis=-1), axis=0)
  ke_v = np.mean(v[..., up_axis] ** 2, axis=0)
  ee = np.mean(np.linalg.norm(a, axis=-1), axis=0)
  return np.stack([ke_h, ke_v, ee], axis=-1).reshape(-1)
