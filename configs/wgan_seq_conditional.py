"""Phase-2 dance-type conditional sequence GAN (music2dance ``conditional.py``): an
Embedding(4, 4) of the style on every noise frame and as 4 extra critic channels, critic dropout
0.5 before its last convolution; otherwise as ``configs/wgan_seq.py``.

  .venv/bin/python launch/train.py --config=configs/wgan_seq_conditional.py --workdir=/tmp/wgan_seqc
"""
from d2m_jax.tasks.wgan_seq import seq_config


def get_config():
  return seq_config(conditional=True)
