"""learn2dance latent-sequence GAN, task ``l2d_seq_gan`` (second stage; needs a pose-GAN run).

Run (after ``configs/l2d_pose_gan.py`` trained into /tmp/l2d_pose_gan):

  .venv/bin/python launch/train.py --config=configs/l2d_seq_gan.py --workdir=/tmp/l2d_seq_gan \
      --config.model.pose_gan_workdir=/tmp/l2d_pose_gan

(Without ``pose_gan_workdir`` a random pose generator is used: benchmarks only.)
Expected: batch 64 windows -> 64 random 50-frame crops; a BiLSTM(100) critic over 50 steps:
~0.1-0.3 s/step on 2 CPU cores; d_real/d_fake stay between 0.3 and 0.7 when the two players are
balanced. See README (baselines) for measured figures.
"""
import ml_collections

from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "l2d_seq_gan"
  c.data.kind = "windows"
  c.data.require_audio = False
  c.data.waveform = False          # poses only: the pipeline reads the smaller windows_nowave
  c.data.batch_size = 64           # the original: 200 sequences of 50 frames
  c.data.eval_batch_size = 64
  c.model.joints = 23
  c.model.coords = 3
  c.model.hidden = 500
  c.model.bn_eps = 0.8
  c.model.gp_weight = 10.0         # (used by the pose generator's task definition only)
  c.model.seq_len = 50             # 2 s at 25 fps
  c.model.critic_hidden = 100
  c.model.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  c.model.pose_gan_workdir = ml_collections.FieldReference(None, field_type=str)
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.num_train_steps = 3000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c
