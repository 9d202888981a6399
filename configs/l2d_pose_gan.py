"""learn2dance pose WGAN (working gradient penalty), task ``l2d_pose_gan``. First stage of the
learn2dance GAN model; ``configs/l2d_seq_gan.py`` then trains the latent-sequence GAN on top of
this run's generator (``--config.model.pose_gan_workdir=<this workdir>``).

Run (embedded synthetic default; ``--config.data.source=music_to_dance`` for the real mocap data,
projected to a 2-D front view):

  .venv/bin/python launch/train.py --config=configs/l2d_pose_gan.py --workdir=/tmp/l2d_pose_gan

Expected: batch 8 windows = 960 poses, 500-unit MLPs: tens of ms per step on CPU; wdist (critic's
Wasserstein estimate) shrinks and gp stays O(0.1-1) as the generator matches the pose
distribution. See README (baselines) for measured figures and a sample picture.
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "l2d_pose_gan"
  c.data.kind = "windows"
  c.data.require_audio = False     # poses only: motion-only sequences are usable
  c.data.waveform = False          # ...and no 16 kHz clips (the smaller windows_nowave)
  c.data.batch_size = 8            # x 120 frames = 960 poses per step
  c.data.eval_batch_size = 8
  c.model.joints = 23              # mocap (projected to 2-D); OpenPose body15: 15 and coords=2
  c.model.coords = 3
  c.model.hidden = 500
  c.model.bn_eps = 0.8             # the original's BatchNorm1d(out, 0.8) (eps, kept)
  c.model.gp_weight = 10.0         # 0 reproduces the original's (no-op penalty) WGAN
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.num_train_steps = 5000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c
