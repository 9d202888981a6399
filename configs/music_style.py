"""Music style classifier that generalises to unseen songs: a conv net over the clip's log-lag
tempogram profile (rhythm and meter, not timbre). Issue 14 item 4; task ``music_style``
(d2m_jax/tasks/music_style.py), model d2m_jax/models/music_style.py.

Run (embedded synthetic default):
  python launch/train.py --config=configs/music_style.py --workdir=/tmp/music_style
Real data (kind "sequences"; build it once with
`python launch/preprocess.py --source=music_to_dance --kinds=sequences`):
  python launch/train.py --config=configs/music_style.py --workdir=/tmp/music_style_real \
      --config.data.source=music_to_dance
Cross-validation by song over all 35 songs with audio (same task code, same steps):
  python launch/music_style_cv.py --folds=0        # leave-one-song-out
Expected: see RESULTS below (filled from measured runs).
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "music_style"
  c.model.num_classes = 4          # C, R, T, W
  c.model.clip_frames = 250        # 10 s clips at 25 fps
  c.model.clip_stride = 30         # evaluation clips every 1.2 s
  c.model.clips_per_sequence = 8   # random clips per sequence per training step
  c.model.num_lags = 64            # log-spaced tempogram lags ...
  c.model.min_lag = 3.0            # ... from 3 frames (500 BPM) ...
  c.model.max_lag = 380.0          # ... to 380 frames (15.2 s)
  c.model.tempo_jitter = 0.05      # lags scaled by exp(U(-0.05, 0.05)) per training clip
  c.model.channels = (16, 32, 32)
  c.model.kernel = 5
  c.model.hidden = 64
  c.model.dropout_rate = 0.3
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 1e-2
  c.dtype = "float32"
  c.data.kind = "sequences"
  c.data.batch_size = 8            # sequences per step (x clips_per_sequence clips)
  c.data.eval_batch_size = 8
  c.num_train_steps = 1500
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.num_eval_batches = 0           # all of the split
  return c
