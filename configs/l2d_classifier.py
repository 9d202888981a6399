"""learn2dance discriminative model: song code (BiLSTM over log mel + tempogram) -> next 1-s
pose-clip cluster, task ``l2d_classifier``.

Run (embedded synthetic default; ``--config.data.source=music_to_dance`` for the real data):

  .venv/bin/python launch/train.py --config=configs/l2d_classifier.py --workdir=/tmp/l2d_cls

At start-up the task fits the k = 128 clip clusters on the train split (JAX k-means, seconds)
unless ``--config.model.clusters_path=clusters.npz`` (from ``python -m d2m_jax.tasks.l2d_kmeans``)
is given. Data: ``sequences`` of the first 1000 frames (40 s = 40 one-second clips, the original's
40 labels per song) with the 512-d ``mel_tempogram512`` features per motion frame.
Expected: batch 4 x 1000 steps of a 2-layer BiLSTM(256): ~1 s/step on 2 CPU cores; with the
original's plain SGD 3e-4 the loss (summed CE over 40 steps, ~40 ln 128 = 194 at start) falls
slowly; try ``--config.optim.name=adam --config.optim.lr=1e-3`` for faster fitting.
"""
import ml_collections

from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "l2d_classifier"
  c.data.kind = "sequences"
  c.data.max_frames = 1000         # 40 clips of 25 frames
  c.data.batch_size = 4            # the original: 4 songs
  c.data.eval_batch_size = 4
  c.model.joints = 23              # mocap (front-view 2-D projection); OpenPose: 15, coords=2
  c.model.coords = 3
  c.model.hidden = 256
  c.model.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  c.model.num_clusters = 128
  c.model.clusters_path = ml_collections.FieldReference(None, field_type=str)
  c.model.kmeans_n_init = 3
  c.model.kmeans_max_iter = 300
  c.model.top_k = 5                # generation: uniform among the 5 best clusters
  c.optim.name = "sgd"             # the original: SGD 3e-4, no momentum
  c.optim.lr = 3e-4
  c.optim.momentum = 0.0
  c.num_train_steps = 2000
  c.log_every_steps = 20
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  return c
