"""Music style classifier that generalises to unseen songs: a linear head over the clip's
log-lag tempogram profile (rhythm and meter, not timbre), each lag bin z-scored with the running
training-set statistics. Issue 14 item 4; task ``music_style`` (d2m_jax/tasks/music_style.py),
model d2m_jax/models/music_style.py (``channels``/``hidden`` give the conv variant back).

Run (embedded synthetic default):
  python launch/train.py --config=configs/music_style.py --workdir=/tmp/music_style
Real data (kind "sequences"; build it once with
`python launch/preprocess.py --source=music_to_dance --kinds=sequences`):
  python launch/train.py --config=configs/music_style.py --workdir=/tmp/music_style_real \
      --config.data.source=music_to_dance
Cross-validation by song (34 songs held out once each; tango, one song, always trains):
  python launch/music_style_cv.py --folds=5        # (--folds=0: leave-one-song-out)
Measured 2026-11-27 on the shared 2-core CPU VM (load average 6-10, niced): 800 steps in 325 s
(2.1-2.3 steps/s; 7 min 43 s wall with start-up and evaluations). Repo split, step 800:
  test:       clip 95.9%, balanced 94.0% (C 84% / R 100% / W 98%), 5/5 songs by majority vote
  validation: clip 86.0%, balanced 88.2% (C 96% / R 68% / W 100%), 5/5 songs
  (each split: 1 C, 1 R, 3 W songs; no tango). The previous conv net (40,996 parameters):
  test 92.5% / 91.3%, 5/5; validation 68.3% / 74.0%, 4/5.
5-fold CV by song (all 5 folds, 34 held-out songs, 22 min 48 s wall for the 5 trainings):
  balanced clip 86.4% (C 96.0% of 4 songs / R 69.6% of 7 / W 93.5% of 23), 30/34 songs by
  vote (R_10 -> W, R_7 -> T, W_25 and W_34 -> R). The >= 90% / every-song target is NOT met
  across songs (3.6 points and 4 songs short): it holds on the repo's test split only.
Tango has one song: it trains the T class, no held-out tango exists, nothing is claimed for it.
260 parameters.
"""
from d2m_jax.train.defaults import base_config


def get_config():
  c = base_config()
  c.task = "music_style"
  c.model.num_classes = 4          # C, R, T, W
  c.model.clip_frames = 250        # 10 s clips at 25 fps
  c.model.clip_stride = 30         # evaluation clips every 1.2 s
  c.model.clips_per_sequence = 8   # random clips per sequence per training step, all inside
  c.model.segment_extra = 250      # one random clip_frames + 250 frame segment of it
  c.model.num_lags = 64            # log-spaced tempogram lags ...
  c.model.min_lag = 3.0            # ... from 3 frames (500 BPM) ...
  c.model.max_lag = 380.0          # ... to 380 frames (15.2 s)
  c.model.tempo_jitter = 0.02      # lags scaled by exp(U(-0.02, 0.02)) per training clip
  c.model.standardise_inputs = True  # z-score each lag bin (running training-set mean / std)
  c.model.channels = ()            # no conv stack ...
  c.model.kernel = 5
  c.model.hidden = 0               # ... no hidden layer: a linear head, 64 x 4 + 4 weights
  c.model.dropout_rate = 0.0
  c.optim.learning_rate = 1e-2
  c.optim.weight_decay = 1e-2
  c.dtype = "float32"
  c.data.kind = "sequences"
  c.data.batch_size = 8            # sequences per step (x clips_per_sequence clips)
  c.data.max_frames = 4000         # pad every split alike (longest real song: 3,921 frames)
  c.data.eval_batch_size = 8
  c.num_train_steps = 800
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.num_eval_batches = 0           # all of the split
  return c
