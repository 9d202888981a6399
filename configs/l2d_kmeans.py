"""learn2dance pose-clip k-means (k = 128 over 1-s 2-D pose clips). Not a training task: run

  .venv/bin/python -m d2m_jax.tasks.l2d_kmeans --config=configs/l2d_kmeans.py --out=/tmp/l2d_clusters.npz

(``--config.data.source=music_to_dance`` for the real data). Expected: seconds (the embedded
default: ~700 clips; the real train split: ~2000 clips of 1150-d); prints the inertia. The
classifier config shares these fields, so it can also fit the clusters itself at start-up.
"""
from d2m_jax import configs


def get_config():
  c = configs.module("l2d_classifier").get_config()
  c.task = "l2d_kmeans"
  return c
