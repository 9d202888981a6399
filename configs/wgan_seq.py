"""Phase-2 unconditional sequence GAN (music2dance): noise -> 3-layer GRU -> frame decoder,
temporal-conv critic, WGAN-LP gamma 10, TV eta 50, n_critic 8, per-update batch 24.

  .venv/bin/python launch/train.py --config=configs/wgan_seq.py --workdir=/tmp/wgan_seq

One step = 8 critic updates + 1 generator update on 192 windows (8 x 24). The original ran 100k
iterations (~8 h on a Colab GPU). On 2 CPU cores expect seconds per step; use
``--config.num_train_steps=50 --config.model.per_update_batch=4 --config.data.batch_size=32`` for
a smoke run.
"""
from d2m_jax.tasks.wgan_seq import seq_config


def get_config():
  return seq_config(conditional=False)
