r"""Builds a dataset: raw source -> processed sequences (features, beats, audio) -> TFDS configs.

  python launch/preprocess.py --source=music_to_dance \
      --raw_dir=../shared/data/music_to_dance --data_dir=~/.cache/d2m_jax/tfds --num_workers=2
  python launch/preprocess.py --source=synthetic            # the embedded default dataset
  python launch/preprocess.py --source=openpose --raw_dir=DIR --openpose_fps=30

--on_error=fail (default) stops at the first bad sequence with an error naming the file;
--on_error=skip leaves it out, reports every skipped sequence and why, and writes a complete,
valid dataset of the rest. Outputs are written to temporary names and moved into place, so an
interrupted run leaves nothing half-written. Exit status: 0 on success, 1 on bad data or a
feature-extraction worker that died (one line naming the sequence and the signal).
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", "synthetic", ["synthetic", "music_to_dance", "openpose"],
                  "Which raw source to build.")
flags.DEFINE_string("raw_dir", None, "Raw data folder (default: the source's default location).")
flags.DEFINE_string("data_dir", None, "Output data_dir (default $D2M_DATA_DIR or "
                    "~/.cache/d2m_jax/tfds).")
flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "What to do with a bad sequence.")
flags.DEFINE_integer("num_workers", 2, "Parallel processes for feature extraction.")
flags.DEFINE_list("kinds", ["windows", "windows_nowave", "units", "sequences"],
                  "TFDS configs (example kinds) to build.")
flags.DEFINE_bool("force", False, "Re-ingest and rebuild even if outputs exist.")
flags.DEFINE_integer("synthetic_sequences_per_style", 6, "Synthetic: sequences per style.")
flags.DEFINE_float("synthetic_seconds", 30.0, "Synthetic: seconds per sequence.")
flags.DEFINE_integer("synthetic_seed", 0, "Synthetic: generator seed.")
flags.DEFINE_float("openpose_fps", 30.0, "OpenPose: frame rate of the JSON frames.")


def main(argv):
  del argv
  from d2m_jax.data import pipeline
  from d2m_jax.data.errors import DataError
  from d2m_jax.data.ingest import WorkerCrash
  from d2m_jax.data.numba_cache import NumbaCacheError
  from d2m_jax.train.defaults import data_config
  cfg = data_config()
  cfg.source = FLAGS.source
  if FLAGS.raw_dir:
    cfg.raw_dir = os.path.expanduser(FLAGS.raw_dir)
  if FLAGS.data_dir:
    cfg.data_dir = os.path.expanduser(FLAGS.data_dir)
  cfg.synthetic_sequences_per_style = FLAGS.synthetic_sequences_per_style
  cfg.synthetic_seconds = FLAGS.synthetic_seconds
  cfg.synthetic_seed = FLAGS.synthetic_seed
  cfg.openpose_fps = FLAGS.openpose_fps
  t0 = time.time()
  try:
    man = pipeline.prepare(cfg, kinds=tuple(FLAGS.kinds), on_error=FLAGS.on_error,
                           num_workers=FLAGS.num_workers, force=FLAGS.force,
                           log=lambda s: print(s, flush=True))
  except DataError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    print("Nothing was written for this source (re-run with --on_error=skip to leave bad "
          "sequences out).", file=sys.stderr)
    return 1
  except (WorkerCrash, NumbaCacheError) as e:
    print(f"ERROR: {e}; nothing was written", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("interrupted: nothing half-written was left behind", file=sys.stderr)
    return 130
  if man["skipped"]:
    print(f"\nSKIPPED {len(man['skipped'])} sequence(s):")
    for s in man["skipped"]:
      print(f"  {s['name']}: {s['path']}: {s['problem']}")
  seqs = man["sequences"]
  frames = sum(r["frames"] for r in seqs)
  motion_only = [r["name"] for r in seqs if not r["has_audio"]]
  print(f"\n{man['source']}: {len(seqs)} sequences, {frames} frames "
        f"({frames / man['fps'] / 60:.1f} min), skeleton {man['skeleton']} "
        f"({man['joints']}x{man['dims']}), styles {man['styles']}")
  if motion_only:
    print(f"motion only (no audio; usable by motion-only models): {', '.join(motion_only)}")
  for kind in FLAGS.kinds:
    cfg.kind = "windows" if kind == "windows_nowave" else kind
    cfg.waveform = kind != "windows_nowave"
    try:
      info = pipeline.dataset_info(cfg)
    except DataError:
      continue  # not built (skipped above, with the reason)
    print(f"  {kind:15s} examples {info['num_examples']}")
  print(f"data_dir: {pipeline.data_dir(cfg)}   total {time.time() - t0:.1f} s")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
