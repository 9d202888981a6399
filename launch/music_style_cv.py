"""Cross-validation by song of the music-style task over every song with audio.

  python launch/music_style_cv.py [--folds=5] [--config=configs/music_style.py] [--steps=N]
  python launch/music_style_cv.py --nested [--folds=5] [--inner_folds=3] [--grid=a,b,...]

``--folds=0``: leave-one-song-out (one fold per song); ``--folds=k``: k folds by sequence,
stratified by style (each song held out exactly once). Each fold trains the config's task
(``config.task``, its train_step, same steps / batch / optimiser as ``launch/train.py``, batches
cut on the host by ``task.host_batch`` as the engine does) on the other songs, in memory
(uniform random sequences per batch, as the engine's pipeline), and classifies the held-out
songs' clips (``task.clip_logits``, the clips of ``predict_clip_logits``). Prints per-class clip
recall, balanced accuracy, the clip confusion matrix and the majority vote of every held-out song,
with the number of songs each per-class figure rests on; writes the summary as JSON (``--out``).

``--nested``: honest selection among the configurations of ``--grid`` (:data:`GRID`, overrides
of ``--config``). For each outer fold, every configuration is scored by an inner
``--inner_folds``-fold CV by song *inside the outer training songs only* (balanced clip accuracy
of the inner held-out songs, ties broken by songs right, then grid order); the winner is trained
on all the outer training songs and the outer held-out songs are scored once. The outer figures
are the estimate of the whole procedure (selection included); the selection is then run once
more on all songs (inner CV over all of them): the configuration ``configs/music_style.py``
should be. Reads the processed real dataset (``launch/preprocess.py --source=music_to_dance``);
no TensorFlow needed.
"""
import copy
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
flags.DEFINE_bool("nested", False, "Nested CV: select among --grid inside each outer fold.")
flags.DEFINE_integer("inner_folds", 3, "Inner folds by song of --nested.")
flags.DEFINE_list("grid", None, "Configurations of --nested (names of GRID; default: all).")
FEATURE = "mel_tempogram512"
RHYTHM = "fact35"
ALL_METER = ("ac", "accents", "dft", "salience", "tempo")
# The configurations --nested chooses among: overrides of --config (a handful: nested CV
# multiplies trainings by (inner folds x configurations + 1) per outer fold).
GRID = {
    "profile": {"model.meter_groups": ()},                       # log-lag tempogram profile
    "profile+meter": {"model.meter_groups": ALL_METER},          # + every meter feature
    "profile+dft": {"model.meter_groups": ("dft", "salience")},  # + phase-free accent strengths
}


def load_songs(data_cfg):
  """(names, styles, {key: padded (S, T, D) float32}, lengths) of every song with audio."""
  pdir = pipeline.processed_dir(data_cfg)
  man = ingest.read_manifest(pdir)
  recs = [r for r in man["sequences"] if r["has_audio"]]
  arrays = {k: [] for k in (FEATURE, RHYTHM)}
  for r in recs:
    with np.load(os.path.join(pdir, "seq", f"{r['name']}.npz")) as z:
      for k in arrays:
        arrays[k].append(z[k])
  T = max(f.shape[0] for f in arrays[FEATURE])
  out = {}
  for k, fs in arrays.items():
    out[k] = np.zeros((len(fs), T, fs[0].shape[1]), np.float32)
    for i, f in enumerate(fs):
      out[k][i, :len(f)] = f
  return ([r["name"] for r in recs], np.array([r["style"] for r in recs], np.int32), out,
          np.array([f.shape[0] for f in arrays[FEATURE]], np.int32))


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


class Runner:
  """One configuration's task with its train step and clip classifier compiled once (every fold
  reuses them: same shapes)."""

  def __init__(self, config):
    self.config = config
    self.task = get_task(config)
    self.init = jax.jit(self.task.init_state)
    self.step = jax.jit(self.task.train_step, donate_argnums=0)
    self.logits = jax.jit(self.task.clip_logits)

  def train(self, data, lengths, styles, idx, steps, seed):
    """Trains on the songs ``idx`` (uniform random batches, cut on the host like the engine's)."""
    rng = np.random.default_rng(seed)
    B = int(self.config.data.batch_size)
    n = len(idx)

    seg = self.task.clip_frames + self.task.segment_extra
    T = next(iter(data.values())).shape[1]

    def batch(rows, step):
      # The segment of each song first (as task.host_batch draws it: start uniform over the
      # frames that fit), then host_batch on the cut batch (its own cut is then the identity):
      # never gather whole padded songs.
      starts = (rng.random(len(rows)) * np.maximum(lengths[rows] - seg + 1, 1)).astype(np.int64)
      frames = np.minimum(starts[:, None] + np.arange(min(seg, T)), T - 1)
      b = {k: v[rows[:, None], frames] for k, v in data.items()}
      b.update(length=np.clip(lengths[rows] - starts, 0, seg).astype(np.int32),
               style=styles[rows])
      return self.task.host_batch(b, step)
    state = self.init(jax.random.PRNGKey(seed), batch(idx[np.arange(min(B, n))], 0))
    order = np.concatenate([rng.permutation(n) for _ in range(steps * B // n + 2)])
    metrics = {}
    for i in range(steps):
      state, metrics = self.step(state, batch(idx[order[i * B:(i + 1) * B]], i))
    return state, {k: float(v) for k, v in metrics.items()}

  def predict(self, state, data, lengths, idx):
    """{song index: predicted class of each of its evaluation clips} for the songs ``idx``."""
    B = 8
    out = {}
    for lo in range(0, len(idx), B):
      rows = idx[lo:lo + B]
      pad = np.concatenate([rows, np.repeat(rows[:1], B - len(rows))])   # fixed batch shape
      b = {k: v[pad] for k, v in data.items()}
      b["length"] = lengths[pad]
      logits, valid = jax.device_get(self.logits(state, b))
      for j, i in enumerate(rows):
        out[int(i)] = np.argmax(logits[j][valid[j] > 0], -1)
    return out


def cross_validate(runner, data, lengths, styles, pool, folds, steps, seed0, log=None):
  """Trains one model per fold (``folds``: held-out index sets into ``pool``) on the rest of
  ``pool``; returns {song index: clip predictions} of every held-out song."""
  preds = {}
  for f, held in enumerate(folds):
    train = np.setdiff1d(pool, pool[held])
    t0 = time.time()
    state, last = runner.train(data, lengths, styles, train, steps, seed=seed0 + f)
    preds.update(runner.predict(state, data, lengths, pool[held]))
    if log:
      log(f, pool[held], preds, last, time.time() - t0)
  return preds


def score(preds, styles, C):
  """Clip confusion, per-class recall, balanced accuracy (classes present) and songs right."""
  conf = np.zeros((C, C), np.int64)
  right = 0
  for i, p in preds.items():
    np.add.at(conf, (styles[i], p), 1)
    right += int(np.argmax(np.bincount(p, minlength=C)) == styles[i])
  support = conf.sum(1)
  recall = np.diag(conf) / np.maximum(support, 1)
  present = support > 0
  return dict(confusion=conf, recall=recall, support=support,
              balanced=float(recall[present].mean()) if present.any() else 0.0,
              songs_right=right, songs=len(preds))


def configured(base, overrides):
  c = copy.deepcopy(base)
  with c.unlocked():
    for key, value in overrides.items():
      node = c
      *path, leaf = key.split(".")
      for p in path:
        node = node[p]
      node[leaf] = value
  return c


def summarise(names, styles, preds, C, extra):
  """The printed / written summary of held-out predictions {song index: clip predictions}."""
  sc = score(preds, styles, C)
  songs = []
  for i in sorted(preds):
    p = preds[i]
    votes = np.bincount(p, minlength=C)
    songs.append(dict(name=names[i], style=STYLES[styles[i]], clips=int(len(p)),
                      clip_accuracy=float(np.mean(p == styles[i])) if len(p) else 0.0,
                      vote=STYLES[int(np.argmax(votes))], votes=votes.tolist()))
  per_class = {}
  for c in range(C):
    s = [d for d in songs if d["style"] == STYLES[c]]
    per_class[STYLES[c]] = dict(songs=len(s), clips=int(sc["support"][c]),
                                recall=float(sc["recall"][c]),
                                songs_right=sum(d["vote"] == d["style"] for d in s))
  present = [c for c in range(C) if sc["support"][c] > 0]
  no_tango = [c for c in present if STYLES[c] != "T"]
  conf = sc["confusion"]
  never_held = sorted(set(names) - {d["name"] for d in songs})
  return dict(extra, per_class=per_class, confusion=conf.tolist(),
              clip_accuracy=float(np.trace(conf) / max(conf.sum(), 1)),
              balanced_accuracy=float(sc["recall"][present].mean()),
              balanced_accuracy_without_tango=float(sc["recall"][no_tango].mean()),
              sequence_accuracy=float(np.mean([d["vote"] == d["style"] for d in songs])),
              never_held_out=never_held, songs=songs)


def main(argv):
  del argv
  config = FLAGS.config
  config.data.source = FLAGS.source
  steps = int(FLAGS.steps or config.num_train_steps)
  names, styles, data, lengths = load_songs(config.data)
  C = int(config.model.num_classes)
  everyone = np.arange(len(names))
  t0 = time.time()
  say = lambda msg: print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)  # noqa: E731

  def log_fold(f, held, preds, last, seconds=0.0):
    say(f"  fold {f:2d}: trained and scored in {seconds:.1f} s")
    for i in held:
      p = preds[int(i)]
      vote = STYLES[int(np.argmax(np.bincount(p, minlength=C)))]
      say(f"  fold {f:2d} {names[i]:11s} {STYLES[styles[i]]} -> vote {vote} clips "
          f"{np.mean(p == styles[i]):.2f} of {len(p)} (last train loss {last['loss']:.3f})")

  if not FLAGS.nested:
    runner = Runner(config)
    preds = cross_validate(runner, data, lengths, styles, everyone,
                           make_folds(styles, FLAGS.folds), steps, int(config.seed), log_fold)
    summary = summarise(names, styles, preds, C, dict(folds=FLAGS.folds, steps=steps))
  else:
    grid = FLAGS.grid or list(GRID)
    unknown = [g for g in grid if g not in GRID]
    if unknown:
      raise app.UsageError(f"--grid: unknown configurations {unknown}; known: {list(GRID)}")
    runners = {g: Runner(configured(config, GRID[g])) for g in grid}

    def select(pool, seed):
      """Inner CV over the songs ``pool``: (chosen name, {name: inner scores})."""
      inner = make_folds(styles[pool], FLAGS.inner_folds, seed=seed)
      scores = {}
      for g in grid:
        sc = score(cross_validate(runners[g], data, lengths, styles, pool, inner, steps,
                                  int(config.seed) + 100 * seed,
                                  lambda f, h, p, l, sec: say(f"    inner fold {f} ({g}): "
                                                              f"{sec:.1f} s")), styles, C)
        scores[g] = dict(balanced=sc["balanced"], songs_right=sc["songs_right"],
                         songs=sc["songs"], recall=sc["recall"].round(4).tolist())
        say(f"    inner {g:18s} balanced {sc['balanced']:.3f} songs {sc['songs_right']}/"
            f"{sc['songs']}")
      best = max(grid, key=lambda g: (round(scores[g]["balanced"], 6),
                                      scores[g]["songs_right"], -grid.index(g)))
      return best, scores

    preds, outer = {}, []
    for f, held in enumerate(make_folds(styles, FLAGS.folds or 5)):
      pool = np.setdiff1d(everyone, held)
      say(f"outer fold {f}: {len(pool)} training songs, held out "
          f"{', '.join(names[i] for i in held)}")
      best, scores = select(pool, seed=1 + f)
      t1 = time.time()
      state, last = runners[best].train(data, lengths, styles, pool, steps,
                                        seed=int(config.seed) + f)
      fold_preds = runners[best].predict(state, data, lengths, held)
      preds.update(fold_preds)
      log_fold(f, held, fold_preds, last, time.time() - t1)
      outer.append(dict(fold=f, chosen=best, inner=scores,
                        held_out=[names[i] for i in held]))
      say(f"outer fold {f}: chose {best}")
    say("selection on all songs (the configuration to ship)")
    final, final_scores = select(everyone, seed=0)
    summary = summarise(names, styles, preds, C, dict(
        nested=True, folds=FLAGS.folds or 5, inner_folds=FLAGS.inner_folds, steps=steps,
        grid={g: {k: list(v) if isinstance(v, tuple) else v for k, v in GRID[g].items()}
              for g in grid},
        outer=outer, selected_on_all_songs=final, selection_on_all_songs=final_scores))
  summary["seconds"] = time.time() - t0
  print(json.dumps({k: v for k, v in summary.items() if k not in ("songs", "outer")}, indent=1))
  for d in summary["songs"]:
    print(f"{d['name']:11s} {d['style']} -> {d['vote']} votes {d['votes']} "
          f"clips {d['clip_accuracy']:.2f}")
  if FLAGS.out:
    files.write_json(FLAGS.out, summary, indent=1, sort_keys=False)


if __name__ == "__main__":
  app.run(main)
