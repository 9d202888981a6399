"""Project Kakashi seq2seq LSTM (MFCC -> poses), task ``kakashi``.

Run (embedded synthetic default; add ``--config.data.source=music_to_dance`` for the real data):

  .venv/bin/python launch/train.py --config=configs/kakashi.py --workdir=/tmp/kakashi

Modes (the original's three set-ups) via one field:

  --config.model.mode=sequence                       # whole 30-s sequences (default)
  --config.model.mode=chunk --config.model.chunk_seconds=5   # or 10, 15
  --config.model.mode=frame                          # every frame on its own

Expected (2 shared CPU cores, batch 5 x 750 frames, 2 x 512 LSTMs): a few s/step once compiled;
the loss falls within the first hundred steps and the model then tends to a near-static mean pose
(the original report's finding). See README (baselines) for measured figures.
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "kakashi"
  c.data.kind = "sequences"
  c.data.max_frames = 750          # 30 s at 25 fps (the original: 720 frames at 24 fps)
  c.data.batch_size = 5
  c.data.eval_batch_size = 5
  c.model.joints = 23              # mocap; OpenPose: joints=15 (or 14), coords=2
  c.model.coords = 3
  c.model.fps = 25.0
  c.model.hidden = 512
  c.model.num_layers = 2
  c.model.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  c.model.dropout = 0.5
  c.model.teacher_forcing = 0.5
  c.model.mode = "sequence"        # sequence | chunk | frame
  c.model.chunk_seconds = 5.0      # chunk mode: 5, 10 or 15
  c.optim.name = "sgd"
  c.optim.lr = 0.005
  c.optim.momentum = 0.9
  c.optim.clip_norm = 1.0
  c.num_train_steps = 2000
  c.log_every_steps = 10
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  return c
