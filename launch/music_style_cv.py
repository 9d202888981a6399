"""Cross-validation by song of the music-style task over every song with audio.

  python launch/music_style_cv.py [--folds=0] [--config=configs/music_style.py] [--steps=N]

``--folds=0``: leave-one-song-out (one fold per song); ``--folds=k``: k folds by sequence,
stratified by style (each song held out exactly once). Each fold trains the config's task
(``config.task``, its train_step, same steps / batch / optimiser as ``launch/train.py``) on the
other songs, in memory (uniform random sequences per batch, as the engine's pipeline), and
classifies the held-out songs' clips with ``task.predict_clip_logits``. Prints per-class clip
recall, balanced accuracy, the clip confusion matrix and the majority vote of every held-out
song, with the number of songs each per-class figure rests on; writes the summary as JSON
(``--out``). Reads the processed real dataset (``launch/preprocess.py --source=music_to_dance``);
no TensorFlow needed.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from d2m_jax import files  # noqa: E402
from d2m_jax.data import ingest, pipeline  # noqa: E402
from d2m_jax.data.skeleton import STYLES  # noqa: E402
from d2m_jax.tasks import get_task  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "..",
                                                       "configs", "music_style.py"),
                                "Task configuration.", lock_config=False)
flags.DEFINE_integer("folds", 0, "0 = leave-one-song-out, k = k folds by sequence.")
flags.DEFINE_integer("steps", None, "Training steps per fold (default: the config's).")
flags.DEFINE_string("source", "music_to_dance", "Processed source to read.")
flags.DEFINE_string("out", None, "Write the summary JSON here.")
FEATURE = "mel_tempogram512"


def load_songs(data_cfg):
  """(names, styles, padded features (S, T, 512) float32, lengths) of every song with audio."""
  pdir = pipeline.processed_dir(data_cfg)
  man = ingest.read_manifest(pdir)
  recs = [r for r in man["sequences"] if r["has_audio"]]
  feats = [np.load(os.path.join(pdir, "seq", f"{r['name']}.npz"))[FEATURE] for r in recs]
  T = max(f.shape[0] for f in feats)
  x = np.zeros((len(feats), T, feats[0].shape[1]), np.float32)
  for i, f in enumerate(feats):
    x[i, :len(f)] = f
  return ([r["name"] for r in recs], np.array([r["style"] for r in recs], np.int32), x,
          np.array([f.shape[0] for f in feats], np.int32))


def make_folds(styles, k, seed=0):
  """Held-out index sets: one per song (k=0) or k style-stratified folds. A style with a single
  song (tango) is never held out: it could only be wrong (no example of it left to train on),
  so it stays a training class and no held-out figure is claimed for it."""
  counts = np.bincount(styles)
  testable = counts[styles] > 1
  if k == 0:
    return [np.array([i]) for i in range(len(styles)) if testable[i]]
  rng = np.random.default_rng(seed)
  fold_of = np.full(len(styles), -1, np.int64)
  offset = 0
  for s in np.unique(styles[testable]):
    idx = rng.permutation(np.where(styles == s)[0])
    fold_of[idx] = (offset + np.arange(len(idx))) % k
    offset += len(idx)
  return [np.where(fold_of == f)[0] for f in range(k)]


def train_fold(task, config, x, lengths, styles, steps, seed):
  rng = np.random.default_rng(seed)
  B = int(config.data.batch_size)
  def batch(idx):
    return {FEATURE: x[idx], "length": lengths[idx], "style": styles[idx]}
  state = jax.jit(task.init_state)(jax.random.PRNGKey(seed), batch(np.arange(min(B, len(x)))))
  step = jax.jit(task.train_step, donate_argnums=0)
  n = len(x)
  order = np.concatenate([rng.permutation(n) for _ in range(steps * B // n + 2)])
  for i in range(steps):
    state, metrics = step(state, batch(order[i * B:(i + 1) * B]))
  return state, {k: float(v) for k, v in metrics.items()}


def main(argv):
  del argv
  config = FLAGS.config
  config.data.source = FLAGS.source
  steps = int(FLAGS.steps or config.num_train_steps)
  task = get_task(config)
  names, styles, x, lengths = load_songs(config.data)
  C = int(config.model.num_classes)
  conf = np.zeros((C, C), np.int64)
  songs = []
  t0 = time.time()
  for f, held in enumerate(make_folds(styles, FLAGS.folds)):
    train = np.setdiff1d(np.arange(len(names)), held)
    state, last = train_fold(task, config, x[train], lengths[train], styles[train], steps,
                             seed=int(config.seed) + f)
    for i in held:
      logits = task.predict_clip_logits(state, {FEATURE: x[i, :lengths[i]]})
      pred = np.argmax(logits, -1)
      np.add.at(conf, (styles[i], pred), 1)
      votes = np.bincount(pred, minlength=C)
      songs.append(dict(name=names[i], style=STYLES[styles[i]], clips=int(len(pred)),
                        clip_accuracy=float(np.mean(pred == styles[i])),
                        vote=STYLES[int(np.argmax(votes))], votes=votes.tolist()))
      print(f"fold {f:2d} {names[i]:11s} {STYLES[styles[i]]} -> vote {songs[-1]['vote']} "
            f"clips {songs[-1]['clip_accuracy']:.2f} of {len(pred)}  (last train loss "
            f"{last['loss']:.3f}, {time.time() - t0:.0f} s)", flush=True)
  support = conf.sum(1)
  recall = np.diag(conf) / np.maximum(support, 1)
  per_class = {}
  for c in range(C):
    s = [d for d in songs if d["style"] == STYLES[c]]
    per_class[STYLES[c]] = dict(songs=len(s), clips=int(support[c]), recall=float(recall[c]),
                                songs_right=sum(d["vote"] == d["style"] for d in s))
  present = [c for c in range(C) if support[c] > 0]
  no_tango = [c for c in present if STYLES[c] != "T"]
  never_held = sorted({names[i] for i in range(len(names))} - {d["name"] for d in songs})
  summary = dict(folds=FLAGS.folds, steps=steps, per_class=per_class, confusion=conf.tolist(),
                 clip_accuracy=float(np.trace(conf) / conf.sum()),
                 balanced_accuracy=float(recall[present].mean()),
                 balanced_accuracy_without_tango=float(recall[no_tango].mean()),
                 sequence_accuracy=float(np.mean([d["vote"] == d["style"] for d in songs])),
                 never_held_out=never_held,
                 songs=songs, seconds=time.time() - t0)
  print(json.dumps({k: v for k, v in summary.items() if k != "songs"}, indent=1))
  if FLAGS.out:
    files.write_json(FLAGS.out, summary, indent=1, sort_keys=False)


if __name__ == "__main__":
  app.run(main)
