"""learn2dance discriminative model: fixed teacher forcing, 2-D projection and clips, on-device
cluster labels, no gradient accumulation, generation from centroids."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from d2m_jax.models.learn2dance import pose_clips, project_to_2d, teacher_forcing_inputs


def test_teacher_forcing_uses_previous_step_for_every_example():
  labels = jnp.array([[5, 7, 9], [1, 2, 3]])
  np.testing.assert_array_equal(teacher_forcing_inputs(labels), [[-1, 5, 7], [-1, 1, 2]])


def test_front_view_projection_and_clip_mask():
  pose = np.arange(2 * 3 * 6, dtype=np.float32).reshape(2, 3, 6)   # 2 joints x (x, y, z)
  p2 = np.asarray(project_to_2d(pose, 2, 3))
  np.testing.assert_array_equal(p2, pose[..., [0, 1, 3, 4]])
  np.testing.assert_array_equal(project_to_2d(p2, 2, 2), p2)        # OpenPose: identity
  clips, valid = pose_clips(jnp.zeros((2, 60, 4)), jnp.array([60, 49]))
  assert clips.shape == (2, 2, 100)                                 # 25-frame clips
  np.testing.assert_array_equal(valid, [[1, 1], [1, 0]])


def _task():
  from d2m_jax.tasks import get_task
  from d2m_jax.train.defaults import base_config
  c = base_config()
  c.task = "l2d_classifier"
  c.data.kind = "sequences"
  c.data.max_frames = 75
  c.model = ml_collections.ConfigDict(dict(joints=2, coords=3, hidden=8, num_clusters=4,
                                           clusters_path=None, top_k=2))
  c.optim = ml_collections.ConfigDict(dict(name="sgd", lr=0.1, momentum=0.0))
  return get_task(c)


def test_classifier_step_labels_no_accumulation_and_generation():
  task = _task()
  batch = task.synthetic_batch(3, np.random.default_rng(0))
  assert batch["mel_tempogram512"].shape == (3, 75, 512) and batch["length"].dtype == np.int32
  s0 = task.init_state(jax.random.key(0), batch, None)
  # Labels: nearest centroid of each 2-D clip (numpy float64 reference).
  labels, valid = jax.jit(task.labels)(s0, batch)
  p2 = batch["pose"].reshape(3, 75, 2, 3)[..., :2].reshape(3, 3, 100).astype(np.float64)
  c = np.asarray(s0.centroids, np.float64)
  ref = ((p2[:, :, None] - c[None, None]) ** 2).sum(-1).argmin(-1)
  np.testing.assert_array_equal(labels, ref)
  step = jax.jit(task.train_step)
  s1, m1 = step(s0, batch)
  s2, _ = step(s1, batch)
  assert np.isfinite(float(m1["loss"])) and 0 <= float(m1["accuracy"]) <= 1
  # Plain SGD: the second update is -lr * (gradient at s1) alone, not the running sum.
  g1 = jax.jit(jax.grad(lambda p: task._loss(p, s1, batch)[0]))(s1.params)
  for p1, p2_, g in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params),
                        jax.tree.leaves(g1)):
    np.testing.assert_allclose(p2_ - p1, -0.1 * g, atol=1e-6)
  out = task.generate(s2, {"mel_tempogram512": np.zeros((60, 512), np.float32)}, None, 60,
                      jax.random.key(0), 2)
  assert out.shape == (2, 60, 2, 3)
  np.testing.assert_array_equal(out[..., 2], 0)                     # front view: depth 0
  # The dance is the chosen centroids' clips, one per second.
  ids = task.last_cluster_ids
  np.testing.assert_allclose(out[:, 25:50, :, :2].reshape(2, 100), np.asarray(s2.centroids)[ids[:, 1]])
