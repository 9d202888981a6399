"""Phase-3 music-conditioned sequence GAN (music2dance default.yaml): 0.2 s raw-audio windows ->
default conv encoder -> 3-layer GRU + noise GRU -> frame decoder; two-branch critic; GP on pose
and audio (gamma 10); generator + L1 (beta 1); n_critic 8, per-update batch 7 (56 windows per
step), Adam 2e-4.

  .venv/bin/python launch/train.py --config=configs/wgan_audio.py --workdir=/tmp/wgan_audio

Ablations: configs/wgan_audio_{l1_enhanced,tv,noise_enhanced,tanh,unet,wavegan,ablated,minimal}.py.
The original trained 50k iterations on a GPU; on 2 shared CPU cores one step (8 critic + 1
generator update on 56 windows) takes tens of seconds, so CPU runs are smoke runs
(``--config.num_train_steps=20 --config.model.per_update_batch=2 --config.data.batch_size=16``).
"""
from d2m_jax.tasks.wgan_audio import audio_config


def get_config():
  return audio_config("default")
