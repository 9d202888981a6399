"""Skeleton tables: joint orders, bones and style labels of every data source.

Mocap-23 joint names are inferred (the dataset documents none; see its README): "A"/"B" are the
two body sides, which cannot be told apart from the data.
"""
from __future__ import annotations

STYLES = ("C", "R", "T", "W")
STYLE_NAMES = ("cha-cha", "rumba", "tango", "waltz")
MOCAP_FPS = 25.0

MOCAP23_JOINTS = (
    "head_0", "head_1", "pelvis", "shoulder_A", "elbow_A", "wrist_A", "hand_A", "hip_A",
    "knee_A", "ankle_A", "heel_A", "toe_A", "shoulder_B", "elbow_B", "wrist_B", "hand_B",
    "hip_B", "knee_B", "ankle_B", "heel_B", "toe_B", "hand_extra_B", "hand_extra_A")
# Bones between real joints (the authors' drawing also uses mid-points: see MOCAP23_MID_BONES).
MOCAP23_BONES = ((0, 1), (3, 4), (4, 5), (5, 6), (12, 13), (13, 14), (14, 15), (2, 7), (7, 8),
                 (8, 9), (10, 11), (2, 16), (16, 17), (17, 18), (19, 20))
# Bones to mid-points: ((a, b), (c, d)) joins mid(a, b) and mid(c, d); a joint j is (j, j).
MOCAP23_MID_BONES = (((0, 1), (3, 12)), ((3, 3), (3, 12)), ((12, 12), (3, 12)),
                     ((2, 2), (3, 12)), ((9, 9), (10, 11)), ((18, 18), (19, 20)))
MOCAP23_UP_AXIS = 1  # y is up, units are centimetres

# OpenPose COCO-18 (Dancing2Music uses the first 14: eyes and ears dropped).
COCO18_JOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
                 "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
                 "r_eye", "l_eye", "r_ear", "l_ear")
COCO14_BONES = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                (1, 11), (11, 12), (12, 13), (1, 0))

# OpenPose BODY_25 (learn2dance uses the first 15).
BODY25_JOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
                 "l_wrist", "mid_hip", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee",
                 "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear", "l_big_toe", "l_small_toe",
                 "l_heel", "r_big_toe", "r_small_toe", "r_heel")
BODY15_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                (10, 11), (8, 12), (12, 13), (13, 14))

SKELETONS = {
    "mocap23": dict(joints=MOCAP23_JOINTS, bones=MOCAP23_BONES, dims=3),
    "coco14": dict(joints=COCO18_JOINTS[:14], bones=COCO14_BONES, dims=2),
    "body15": dict(joints=BODY25_JOINTS[:15], bones=BODY15_BONES, dims=2),
}


def facing_normalised(pose, skeleton: str):
  """Root-relative 3D poses (T, J, 3), each rotated about the vertical (y) axis so that its
  hip-plus-shoulder axis (joint ``*_B`` minus ``*_A``) points along +x: every frame faces the
  same way. Returns ``pose`` unchanged for 2-D skeletons or ones without hips and shoulders."""
  import numpy as np
  pose = np.asarray(pose, np.float64)
  joints = SKELETONS.get(skeleton, {}).get("joints", ())
  need = ("hip_A", "hip_B", "shoulder_A", "shoulder_B")
  if pose.ndim != 3 or pose.shape[-1] != 3 or not all(j in joints for j in need):
    return pose
  ha, hb, sa, sb = (joints.index(j) for j in need)
  axis = (pose[:, hb] - pose[:, ha]) + (pose[:, sb] - pose[:, sa])          # (T, 3)
  phi = np.arctan2(axis[:, 2], axis[:, 0])[:, None]                          # angle in x-z
  cos, sin = np.cos(phi), np.sin(phi)
  px, py, pz = pose[..., 0], pose[..., 1], pose[..., 2]
  return np.stack([cos * px + sin * pz, py, -sin * px + cos * pz], axis=-1)
