"""Phase-3 ablation 'noise_enhanced' of music2dance (one change against configs/wgan_audio.py; see
d2m_jax.tasks.wgan_audio.audio_config).

  .venv/bin/python launch/train.py --config=configs/wgan_audio_noise_enhanced.py --workdir=/tmp/wgan_audio_noise_enhanced
"""
from d2m_jax.tasks.wgan_audio import audio_config


def get_config():
  return audio_config("noise_enhanced")
