"""Generation calibration kept with the checkpoint: facing-normalised mean pose, unit motion
percentiles (d2m_jax/data/examples.py, skeleton.py), and how generation reads them."""
import numpy as np

from d2m_jax.data import examples, skeleton
from d2m_jax.models import d2m_inference as inf


def _dancer(rng):
  """A mocap23 pose facing +x-ish (hip/shoulder axis along +x), y up, root-relative."""
  j = skeleton.MOCAP23_JOINTS
  pose = rng.normal(scale=5.0, size=(23, 3))
  for name, x in (("hip_A", -10.0), ("hip_B", 10.0), ("shoulder_A", -14.0), ("shoulder_B", 14.0)):
    pose[j.index(name)] = [x, 100.0 if "shoulder" in name else 0.0, 0.0]
  return pose


def _yaw(pose, deg):
  a = np.deg2rad(deg)
  c, s = np.cos(a), np.sin(a)
  x, y, z = pose[..., 0], pose[..., 1], pose[..., 2]
  return np.stack([c * x + s * z, y, -s * x + c * z], -1)


def test_facing_normalised_mean_keeps_the_skeleton():
  rng = np.random.default_rng(0)
  base = _dancer(rng)
  poses = np.stack([_yaw(base, d) for d in rng.uniform(-180, 180, 200)])
  j = skeleton.MOCAP23_JOINTS
  width = lambda p: np.linalg.norm(p[j.index("shoulder_B")] - p[j.index("shoulder_A")])
  plain = poses.mean(0)
  normed = skeleton.facing_normalised(poses, "mocap23").mean(0)
  assert width(plain) < 0.3 * width(base)          # facings over the circle: collapsed
  np.testing.assert_allclose(normed, base, atol=1e-9)   # every copy rotated back exactly
  # 2-D skeletons are returned unchanged
  p2 = rng.normal(size=(5, 14, 2))
  np.testing.assert_array_equal(skeleton.facing_normalised(p2, "coco14"), p2)


def test_generation_stats_against_a_hand_computation():
  rng = np.random.default_rng(1)
  T = 300
  base = _dancer(rng)
  yaw = np.linspace(0, 720, T)
  pose = np.stack([_yaw(base, d) for d in yaw]) + rng.normal(scale=0.5, size=(T, 23, 3))
  beats = np.arange(4, T, 14)
  seq = dict(pose=pose.astype(np.float32), root=np.zeros((T, 3), np.float32), style=3,
             has_audio=1, beats=beats, skeleton="mocap23", d2m28=np.zeros((T, 28), np.float32))
  mu, sd = pose.reshape(T, -1).mean(0), pose.reshape(T, -1).std(0)
  st = examples.generation_stats([seq], mu, sd)
  ref_init = skeleton.facing_normalised(pose, "mocap23").reshape(T, -1).mean(0)
  np.testing.assert_allclose(st["pose_init"], ref_init, rtol=1e-5, atol=1e-4)
  motions = []
  for i in examples.steady_starts(beats):
    for u in range(3):
      t = examples.unit_times(beats[i + 4 * u:i + 4 * u + 5])
      x = (examples.interp_rows(pose.reshape(T, -1), t) - mu) / sd
      motions.append(np.abs(np.diff(x, axis=0)).mean())
  np.testing.assert_allclose(st["unit_motion_pct"], np.percentile(motions, np.arange(101)),
                             rtol=1e-5)


def test_generation_reads_threshold_and_first_frame_from_the_stats():
  class M(dict):
    __getattr__ = dict.__getitem__
  stats = dict(pose_mean=np.array([1.0, 2.0]), pose_std=np.array([2.0, 4.0]),
               pose_init=np.array([3.0, 0.0]), unit_motion_pct=np.arange(101) / 100.0)
  m = M(gen_static_thr=0.0577, gen_static_percentile=10.0, gen_init_pose="facing_mean")
  thr, src = inf.static_threshold(m, stats)
  assert thr == 0.1 and "p10" in src
  np.testing.assert_allclose(inf.initial_pose(m, stats), [1.0, -0.5])
  m.update(gen_static_percentile=0.0, gen_init_pose="mean")
  assert inf.static_threshold(m, stats) == (0.0577, "gen_static_thr")
  np.testing.assert_array_equal(inf.initial_pose(m, stats), [0.0, 0.0])
  # a checkpoint without percentiles (older data) falls back to the fixed threshold
  m.update(gen_static_percentile=10.0)
  assert inf.static_threshold(m, dict(stats, unit_motion_pct=np.zeros(101)))[0] == 0.0577
