"""Metrics checked against float64 references and hand computations."""
import numpy as np
import pytest
import scipy.linalg

from d2m_jax import metrics
from d2m_jax.metrics import beats, frechet, kinetic


def _scipy_reference_fd(a, b):
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  cm = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * cm))


def test_frechet_self_is_zero_and_matches_scipy_reference():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 8))
  b = rng.normal(loc=0.5, scale=1.5, size=(300, 8)) @ rng.normal(size=(8, 8))
  assert metrics.frechet_distance(*metrics.feature_stats(a), *metrics.feature_stats(a)) == \
      pytest.approx(0.0, abs=1e-8)
  got = metrics.frechet_distance(*metrics.feature_stats(a), *metrics.feature_stats(b))
  assert got == pytest.approx(_scipy_reference_fd(a, b), rel=1e-10)
  assert got > 1.0


def test_frechet_closed_form_diagonal_gaussians():
  # 1-D case: (m1 - m2)^2 + (s1 - s2)^2 exactly.
  fd = metrics.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]])
  assert fd == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)


def test_frechet_singular_covariance_uses_eps_fallback():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 6))  # rank-2 covariance in 6-d: singular
  fd = metrics.fid(x, x, normalise=False)
  assert np.isfinite(fd) and fd == pytest.approx(0.0, abs=1e-4)


def test_fid_normalises_with_reference_statistics():
  rng = np.random.default_rng(2)
  ref = rng.normal(size=(200, 3)) * [1.0, 10.0, 100.0]
  gen = ref + [0.0, 0.0, 100.0]  # shift by one reference std in dim 2 only
  # identical covariances: only the mean shift counts, in units of the reference's (ddof=0) std
  assert metrics.fid(gen, ref) == pytest.approx((100.0 / ref[:, 2].std()) ** 2, rel=1e-9)


def test_diversity_matches_pairwise_loop():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(7, 5))
  ref = np.mean([np.linalg.norm(f[i] - f[j]) for i in range(7) for j in range(i + 1, 7)])
  assert metrics.diversity(f) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("convention", ["motion", "music"])
def test_beat_align_score_exact_and_offset(convention):
  music = np.arange(10, 400, 12)
  assert metrics.beat_align_score(music, music, convention=convention) == 1.0
  sigma = 3 * 25 / 60  # 3 frames at 60 fps, in 25 fps frames
  for d in (1, 2, 3):
    got = metrics.beat_align_score(music + d, music, fps=25, convention=convention)
    assert got == pytest.approx(np.exp(-d ** 2 / (2 * sigma ** 2)), rel=1e-12)
  a = metrics.beat_align_score(music + 1, music, sigma_frames=3.0)
  b = metrics.beat_align_score(music + 2, music, sigma_frames=3.0)
  assert 1.0 > a > b > 0.0


def test_beat_align_conventions_differ_as_defined():
  music = np.array([10, 20, 30, 40])
  motion = np.array([10])  # one motion beat exactly on a music beat
  assert metrics.beat_align_score(motion, music, convention="motion") == 1.0
  s = 3 * 25 / 60
  want = np.mean([1.0] + [np.exp(-d ** 2 / (2 * s ** 2)) for d in (10, 20, 30)])
  assert metrics.beat_align_score(motion, music, convention="music") == pytest.approx(want)


def test_motion_beats_finds_speed_minima():
  # A joint oscillating sinusoidally stops at the extremes: speed minima every half period.
  fps, period = 25.0, 20
  t = np.arange(200)
  x = np.sin(2 * np.pi * (t + 0.25) / period)  # extremes at t = 4.75 + 10 k: unique minima
  pos = np.zeros((200, 2, 3))
  pos[:, 0, 0] = x
  got = beats.motion_beats(pos, fps)
  # envelope index t = speed between frames t and t+1, smallest around the stop at 4.75 + 10 k
  expected = np.arange(4, 195, 10)
  assert len(got) == len(expected)
  assert np.all(np.abs(got - expected) <= 1)


def test_kinetic_features_constant_velocity_hand_computation():
  fps, T = 25.0, 50
  v = np.array([30.0, -20.0, 40.0])  # cm per frame
  pos = np.zeros((T, 2, 3))
  pos[:, 1] = np.arange(T)[:, None] * v  # joint 1 moves, joint 0 still
  f = metrics.kinetic_features(pos, fps, units_per_metre=100.0)
  vm = v / 100.0 * fps  # m/s
  assert f.shape == (6,)
  np.testing.assert_allclose(f[:3], 0.0, atol=1e-12)
  np.testing.assert_allclose(f[3:], [vm[0] ** 2 + vm[2] ** 2, vm[1] ** 2, 0.0], atol=1e-9)


def test_kinetic_features_constant_acceleration_interior():
  # p = 0.5 a t^2 along y: second difference a exactly; windowed mean acceleration = a where the
  # window is valid, so energy expenditure = a (windows always contain at least one valid frame).
  fps, T = 25.0, 40
  acc = 2.0  # cm / frame^2
  pos = np.zeros((T, 1, 3))
  pos[:, 0, 1] = 0.5 * acc * np.arange(T) ** 2
  f = kinetic.kinetic_features(pos, fps, units_per_metre=100.0)
  assert f[2] == pytest.approx(acc / 100.0 * fps ** 2, rel=1e-9)
  # vertical energy: windowed velocity at frame i (w = 1): mean of (k - 0.5) a for valid k
  vel = []
  for i in range(1, T):
    ks = [k for k in range(i - 1, i + 2) if 1 <= k <= T - 1]
    vel.append(np.mean([(k - 0.5) * acc for k in ks]) / 100.0 * fps)
  assert f[1] == pytest.approx(np.mean(np.square(vel)), rel=1e-9)
  assert f[0] == pytest.approx(0.0, abs=1e-12)


def test_pfc_zero_when_feet_planted_and_positive_when_sliding():
  T = 60
  rng = np.random.default_rng(4)
  root = np.cumsum(rng.normal(size=(T, 3)), axis=0)
  pos = np.zeros((T, 23, 3))
  pos -= root[:, None, :]  # every joint fixed in world space
  pos[:, 2] += root  # ... except the pelvis, which moves with the root
  assert metrics.physical_foot_contact(pos, root) == pytest.approx(0.0, abs=1e-12)
  slide = pos.copy()
  slide[:, [9, 11, 18, 20], 0] += np.arange(T)[:, None] * 5.0
  assert metrics.physical_foot_contact(slide, root) > 0.0


def test_geometric_features_shape_and_simple_relations():
  T = 30
  pos = np.zeros((T, 23, 3))
  pos[:, 3] = [-15, 40, 0]; pos[:, 12] = [15, 40, 0]   # shoulders
  pos[:, 4] = [-15, 10, 0]; pos[:, 13] = [15, 10, 0]   # elbows straight down
  pos[:, 5] = [-15, -20, 0]; pos[:, 14] = [15, -20, 0]  # wrists
  pos[:, 7] = [-10, 0, 0]; pos[:, 16] = [10, 0, 0]      # hips
  pos[:, 8] = [-10, -45, 0]; pos[:, 17] = [10, -45, 0]
  pos[:, 9] = [-10, -90, 0]; pos[:, 18] = [10, -90, 0]
  pos[:, 11] = [-10, -95, 10]; pos[:, 20] = [10, -95, 10]
  f = metrics.geometric_features(pos)
  assert f.shape == (32,)
  assert set(np.unique(f)) <= {0.0, 1.0}
  assert f[12] == 0.0 and f[13] == 0.0  # still wrists are not fast
  assert f[6] == 0.0  # straight arm: elbow angle 180, outside [0, 110]
  moving = pos.copy()
  moving[:, 5] += np.arange(T)[:, None] * [0, 0, 5.0]  # 5 cm/frame = 125 cm/s > 2.5 hl/s
  assert metrics.geometric_features(moving)[12] == 1.0
  with pytest.raises(ValueError, match="mocap23"):
    metrics.geometric_features(np.zeros((10, 14, 2)))


def test_evaluation_protocol_reference_against_itself(tmp_path):
  from d2m_jax.metrics import evaluation as ev
  rng = np.random.default_rng(5)
  seqs, roots = [], []
  for i in range(4):
    T = 3 * ev.CLIP_FRAMES + 10
    pose = np.cumsum(rng.normal(scale=0.5, size=(T, 23, 3)), axis=0).astype(np.float32)
    root = np.cumsum(rng.normal(size=(T, 3)), axis=0).astype(np.float32)
    seqs.append(ev.EvalSequence(f"s{i}", i % 4, pose, root, np.arange(5, T, 12)))
    roots.append(root)
  ref = ev.clip_features([s.pose for s in seqs], seqs, roots=roots)
  assert ref.kinetic.shape == (12, 69) and ref.geometric.shape == (12, 32)
  row = ev.row_metrics(ref, ref)
  assert row["clips"] == 12 and row["FID_k"] == pytest.approx(0.0, abs=1e-6)
  assert row["FID_g"] == pytest.approx(0.0, abs=1e-6) and row["PFC"] is not None
  assert row["FID_k_aist"] == pytest.approx(0.0, abs=1e-6)
  np.testing.assert_allclose(ref.kinetic_aist[0], kinetic.kinetic_features(
      seqs[0].pose[:ev.CLIP_FRAMES], ev.FPS, convention="aist"), rtol=1e-6)
  gen = ev.clip_features([s.pose * 3.0 for s in seqs], seqs)  # no root: PFC n/a
  grow = ev.row_metrics(gen, ref)
  assert grow["FID_k"] > 1.0 and grow["PFC"] is None and grow["FID_k_aist"] > 1.0
  assert grow["Div_k_aist"] > 0.0
  paths = ev.write_outputs(str(tmp_path), dict(rows={"real": row, "gen": grow},
                                               protocol={"clip_frames": ev.CLIP_FRAMES}))
  md = open(paths["markdown"]).read()
  assert "| gen |" in md and "n/a" in md and "FID_k (AIST++ conv.)" in md
  assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "eval.md"]


def test_kinetic_aist_convention_hand_computation():
  # One joint, x = 0, 1, 3, 6 and z = 2 (constant), y = 0; fps = 2 (dt = 0.5), w = 1, metres.
  # AIST++'s slipped acceleration a(k) = ((p[k+1] - p[k]) / dt - (p[k] - p[k-1] / dt)) / dt:
  #   k = 1: x: v2 = (3 - 1) / .5 = 4, v1 = 1 - 0 / .5 = 1  -> a_x = (4 - 1) / .5 = 6
  #          z: v2 = 0,            v1 = 2 - 2 / .5 = -2 -> a_z = (0 + 2) / .5 = 4
  #   k = 2: x: v2 = (6 - 3) / .5 = 6, v1 = 3 - 1 / .5 = 1  -> a_x = 10;  a_z = 4
  # windows (k in [max(1, i-1), min(2, i+1)]): i = 1, 2 -> mean(a1, a2) = (8, 0, 4); i = 3 -> (10, 0, 4)
  # EE = (2 sqrt(80) + sqrt(116)) / 3.  The correct second difference is 4 at k = 1, 2 (z still),
  # so EE = 4.  Velocities (x): 2, 4, 6 at k = 1..3; windows i=1: {1,2} -> 3, i=2: {1,2,3} -> 4,
  # i=3: {2,3} -> 5, so KE_h = (9 + 16 + 25) / 3 and KE_v = 0 in both conventions.
  pos = np.zeros((4, 1, 3))
  pos[:, 0, 0] = [0.0, 1.0, 3.0, 6.0]
  pos[:, 0, 2] = 2.0
  kw = dict(fps=2.0, units_per_metre=1.0, sliding_window=1)
  aist = kinetic.kinetic_features(pos, convention="aist", **kw)
  ours = kinetic.kinetic_features(pos, **kw)
  np.testing.assert_allclose(aist, [50 / 3, 0.0, (2 * np.sqrt(80) + np.sqrt(116)) / 3], rtol=1e-12)
  np.testing.assert_allclose(ours, [50 / 3, 0.0, 4.0], rtol=1e-12)
  with pytest.raises(ValueError, match="convention"):
    kinetic.kinetic_features(pos, convention="fact", **kw)


def test_kinetic_aist_convention_equals_ours_plus_position_term():
  # a_aist(k) = a_ours(k) + p[k] (1 - dt) / dt^2: with dt = 1 the slip vanishes; at 25 fps the
  # aist energy expenditure is dominated by absolute positions.
  rng = np.random.default_rng(6)
  pos = np.cumsum(rng.normal(size=(30, 3, 3)), axis=0)
  kw = dict(units_per_metre=1.0, sliding_window=1)
  np.testing.assert_allclose(kinetic.kinetic_features(pos, 1.0, convention="aist", **kw),
                             kinetic.kinetic_features(pos, 1.0, **kw), rtol=1e-12)
  a = kinetic.kinetic_features(pos, 25.0, convention="aist", **kw).reshape(3, 3)
  o = kinetic.kinetic_features(pos, 25.0, **kw).reshape(3, 3)
  np.testing.assert_allclose(a[:, :2], o[:, :2], rtol=1e-12)
  assert np.all(a[:, 2] != o[:, 2])


def test_trace_sqrt_product_matches_scipy_and_handles_rank_deficiency():
  rng = np.random.default_rng(7)
  a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  want = np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
  assert frechet.trace_sqrt_product(s1, s2) == pytest.approx(want, rel=1e-9)
  # 1-D hand case inside 2-D: S1 = diag(4, 0), S2 = diag(9, 5) -> Tr sqrt(diag(36, 0)) = 6
  assert frechet.trace_sqrt_product(np.diag([4.0, 0.0]), np.diag([9.0, 5.0])) == \
      pytest.approx(6.0)
  # few samples in many dimensions (rank-deficient, as a small held-out set gives): finite,
  # >= 0, and equal to the distance computed with the symmetric form throughout
  x, y = rng.normal(size=(3, 69)) ** 3, rng.normal(size=(4, 69)) * 5
  (m1, c1), (m2, c2) = metrics.feature_stats(x), metrics.feature_stats(y)
  fd = metrics.frechet_distance(m1, c1, m2, c2)
  sym = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * frechet.trace_sqrt_product(c1, c2)
  assert np.isfinite(fd) and fd == pytest.approx(sym, rel=1e-6)
