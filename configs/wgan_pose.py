"""Phase-1 single-pose WGAN-GP (music2dance), residual MLPs, latent 50, width 128, 1 block.

  .venv/bin/python launch/train.py --config=configs/wgan_pose.py --workdir=/tmp/wgan_pose \
      [--config.model.latent=10 --config.model.size=256 --config.model.nblocks=2]

The original's grid: latent 10/50 x size 32/128/256 x blocks 1/2 (override on the command line);
``--config.model.parity_residual_bug=True`` restores the original's residual-block bug.
Expected: on 2 CPU cores ~100 steps (x5 critic updates) in well under a minute; w_dist rises,
then falls as G catches up.
"""
from d2m_jax.tasks.wgan_pose import pose_config


def get_config():
  return pose_config()
