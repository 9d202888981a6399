"""Music style classifier, the paper's model (NVlabs ``AudioClassifier_rnn``): GRU-30, 30 frames.

Run (embedded synthetic default):
  python launch/train.py --config=configs/style_paper.py --workdir=/tmp/style_paper
Real data (splits by sequence; build it once with
`python launch/preprocess.py --source=music_to_dance --kinds=windows_nowave`, ~5 min):
  python launch/train.py --config=configs/style_paper.py --workdir=/tmp/style_paper_real \
      --config.data.source=music_to_dance
Expected (measured on the shared 2-core CPU at load ~15, 3000 steps, batch 64): synthetic
default ~2 min wall, 100% on validation and test (128 windows each); real data 80 s wall,
test 65.3% (C 33%, R 43%, W 93%; no tango in test), validation 45.7%. eval.json has the
confusion matrices.
6,453 parameters with ``--config.model.num_classes=3`` (the original's 3 classes); 6,484 for 4.
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "style"
  c.model.hidden = 30
  c.model.num_layers = 1
  c.model.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  c.model.num_classes = 4          # C, R, T, W
  c.model.project = False          # the GRU output is the style vector
  c.model.head_relu_first = False
  c.model.dropout_rate = 0.0       # the original's dropouts are commented out
  c.model.num_frames = 30
  c.optim.lr = 2e-4
  c.data.kind = "windows"
  c.data.waveform = False          # the classifier reads d2m28 only: skip the 16 kHz clips
  c.data.batch_size = 64
  c.data.eval_batch_size = 64
  c.num_train_steps = 3000
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.num_eval_batches = 0           # all of the split
  return c
