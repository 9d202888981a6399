"""learn2dance pose-clip clusters: k-means (k = 128) over 1-second 2-D pose clips of the train
split, with the JAX k-means of ``d2m_jax.models.kmeans`` (k-means++ seeding, jitted Lloyd
iterations over all clips at once, sharded over the devices when there are several).

Not a training task (it has no gradient step): run it from the command line, then point the
classifier at the result, or let ``l2d_classifier`` fit the clusters itself at start-up (it calls
:func:`fit_clusters` when ``config.model.clusters_path`` is None)::

  .venv/bin/python -m d2m_jax.tasks.l2d_kmeans --config=configs/l2d_kmeans.py \
      --out=/tmp/l2d_clusters.npz [--config.data.source=music_to_dance]
  .venv/bin/python launch/train.py --config=configs/l2d_classifier.py --workdir=/tmp/l2d_cls \
      --config.model.clusters_path=/tmp/l2d_clusters.npz

Clips are the same ones the classifier labels: the first ``config.data.max_frames`` frames of
every train sequence (the pipeline's ``sequences`` kind), cut into non-overlapping 25-frame (1 s)
clips; clips that run past a sequence's end are left out (weight 0). The .npz holds
``centroids`` (k, 25 * J * 2) in data units (2-D, root-relative), ``inertia``, ``n_iter``,
``counts`` and ``clip_frames``.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from d2m_jax import files
from d2m_jax.data.errors import DataError
from d2m_jax.models import kmeans as kmeans_lib
from d2m_jax.models.learn2dance import CLIP_FRAMES, pose_clips, project_to_2d


def make_task(config):
  raise ValueError("l2d_kmeans is not a training task: run `python -m d2m_jax.tasks.l2d_kmeans "
                   "--config=configs/l2d_kmeans.py --out=clusters.npz` (see its docstring)")


def clip_points(pose, length, joints: int, coords: int):
  """(B, T, P) poses + (B,) lengths -> (N, 25*J*2) clips and (N,) 0/1 weights (numpy)."""
  p2 = project_to_2d(np.asarray(pose, np.float32), joints, coords)
  clips, valid = pose_clips(p2, None if length is None else np.asarray(length))
  clips, valid = np.asarray(clips), np.asarray(valid)
  return clips.reshape(-1, clips.shape[-1]), valid.reshape(-1)


def train_clips(config):
  """Clips of the train split (reads the data pipeline; TF is imported there)."""
  import copy
  from d2m_jax.data import pipeline
  dc = copy.deepcopy(config.data)
  dc.kind = "sequences"
  split = pipeline.load_split(dc, "train")
  return clip_points(split["pose"], split["length"], config.model.joints, config.model.coords)


def fit_clusters(config, points=None, weights=None, log=print):
  """k-means over the train clips (or the given points). Returns a :class:`KMeansResult`."""
  if points is None:
    points, weights = train_clips(config)
  m = config.model
  n = int(np.sum(weights > 0)) if weights is not None else len(points)
  t0 = time.time()
  res = kmeans_lib.kmeans(points, int(m.num_clusters), seed=int(config.seed),
                          n_init=int(m.get("kmeans_n_init", 1)),
                          max_iter=int(m.get("kmeans_max_iter", 300)), weights=weights)
  log(f"[l2d_kmeans] k={m.num_clusters} over {n} clips of {CLIP_FRAMES} frames: inertia "
      f"{res.inertia:.4g}, {res.n_iter} Lloyd iterations, {time.time() - t0:.1f} s, "
      f"{int(np.sum(res.counts == 0))} empty clusters")
  return res


def save_clusters(path, res):
  files.save_npz(path, centroids=res.centroids, inertia=res.inertia, n_iter=res.n_iter,
                 counts=res.counts, clip_frames=CLIP_FRAMES)


def main(argv=None):
  from absl import app, flags
  from ml_collections import config_flags
  flags_ = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "configs/l2d_kmeans.py", lock_config=False)
  flags.DEFINE_string("out", None, "output .npz (centroids)")

  def run(_):
    if not flags_.out:
      print("error: --out=PATH.npz is required", file=sys.stderr)
      return 2
    try:
      res = fit_clusters(flags_.config)
    except (DataError, ValueError, FileNotFoundError) as e:  # bad data/config: one line, exit 1
      print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
      return 1
    save_clusters(flags_.out, res)
    print(f"[l2d_kmeans] wrote {flags_.out}")
    return 0

  app.run(lambda a: sys.exit(run(a)), argv)


if __name__ == "__main__":
  main()
