"""Phase-3 ablation 'tv' of music2dance (one change against configs/wgan_audio.py; see
d2m_jax.tasks.wgan_audio.audio_config).

  .venv/bin/python launch/train.py --config=configs/wgan_audio_tv.py --workdir=/tmp/wgan_audio_tv
"""
from d2m_jax.tasks.wgan_audio import audio_config


def get_config():
  return audio_config("tv")
