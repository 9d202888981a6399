"""Dance-style classifier over poses (music2dance ``dance_classification``), for evaluation.

Run on the real mocap data (the classifier that scores style consistency of generated dances):
  python launch/train.py --config=configs/dance_style.py --workdir=runs/dance_style \
      --config.data.source=music_to_dance
Synthetic smoke run: drop the ``--config.data.source`` override.
Expected: see README "Evaluation" (test accuracy of this classifier, measured on 2 CPU cores);
the engine's eval output holds the test-split confusion matrix.
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "dance_style"
  c.model.channels = 64          # C is not given by the spec; 64 trains in minutes on 2 cores
  c.model.num_blocks = 2
  c.model.num_classes = 4        # C, R, T, W
  c.model.seqlen = 120           # 4.8 s at 25 fps
  c.model.pose_dim = 69
  c.model.class_balanced_loss = True  # replaces the original's WeightedRandomSampler
  c.optim.lr = 2e-4
  c.data.kind = "windows"
  c.data.waveform = False        # poses only: the pipeline's windows_nowave examples
  c.data.require_audio = False   # motion-only sequences are fine for a pose classifier
  c.data.batch_size = 49         # as the original
  c.data.eval_batch_size = 64
  c.num_train_steps = 600
  c.log_every_steps = 100
  c.eval_every_steps = 300
  c.checkpoint_every_steps = 300
  c.num_eval_batches = 0         # all of the split
  return c
