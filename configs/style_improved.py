"""Music style classifier, the improved extractor (WeiyuDu ``MusicStyleExtractor``):
GRU-512 x2, Linear 512->30 style vector, ReLU/Dropout(0.1) head, 59 frames.

Run (embedded synthetic default):
  python launch/train.py --config=configs/style_improved.py --workdir=/tmp/style_improved
Real data (splits by sequence; build it once with
`python launch/preprocess.py --source=music_to_dance --kinds=windows_nowave`, ~5 min):
  python launch/train.py --config=configs/style_improved.py --workdir=/tmp/style_improved_real \
      --config.data.source=music_to_dance
Expected: ~0.2-0.33 steps/s at batch 64 on the shared 2-core CPU (load ~15), so the default
1500 steps take ~1.5 h there. Measured: synthetic default, 150 steps (11.4 min wall): 100% on
validation and test; real data, 400 steps (~26 min wall, --config.num_train_steps=400): test
76.4% (C 0%, R 100%, W 94%), validation 45.7% (C 0%, R 15%, W 98%); no tango in val/test.
The issue's target is 90% clip accuracy on held-out real sequences; WeiyuDu's 98.7% came from a
split that leaked clips between train and validation.
2,425,373 parameters with ``--config.model.num_classes=3``; 2,425,404 for our 4 styles.
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "style"
  c.model.hidden = 512
  c.model.num_layers = 2
  c.model.rnn_impl = "auto"        # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  c.model.num_classes = 4          # C, R, T, W
  c.model.project = True           # Linear(512 -> 30) is the style vector
  c.model.head_relu_first = True
  c.model.dropout_rate = 0.1
  c.model.num_frames = 59
  c.optim.lr = 2e-4
  c.data.kind = "windows"
  c.data.waveform = False          # the classifier reads d2m28 only: skip the 16 kHz clips
  c.data.batch_size = 64
  c.data.eval_batch_size = 64
  c.num_train_steps = 1500
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 250
  c.num_eval_batches = 0           # all of the split
  return c
