r"""Writes the portable training data of one config: ``launch/export_data.py --config=C --out=F``.

    python launch/export_data.py --config=configs/d2m_decomposition.py \
        --config.data.source=music_to_dance --out=portable/d2m_units.npz
    python launch/train.py --config=configs/d2m_decomposition.py \
        --config.data.source=music_to_dance --config.data.portable=portable/d2m_units.npz \
        --workdir=runs/d2m_decomp

The file (see ``d2m_jax/data/portable.py``) holds the manifest, the train-split statistics and,
per sequence, only the arrays the config's task reads (traced: ``d2m_jax/train/batch_keys.py``;
``--keys`` overrides), float16 where that moves no value by more than ``--f16_tol`` of its
train-split std. Training from it needs numpy, jax and the model libraries only. The processed
dataset must exist (``launch/preprocess.py``; the synthetic default is processed on first use).

``--for_eval`` adds what evaluating the paper metrics from the file needs (``launch/evaluate.py
--portable=F``, the ``dance_metrics`` evaluator of a run trained on it): every sequence's pose
and root trajectory and, for a generator, the music features it generates from
(``task.generation_features``), under the same precision rule; beats are always there.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("out", None, "Output file (.npz), written atomically.")
flags.DEFINE_float("f16_tol", 1e-2, "Store a float array as float16 when no value moves by more "
                   "than this fraction of its dimension's train-split std (0: all float32).")
flags.DEFINE_list("keys", None, "Batch keys to export (default: the ones the task reads).")
flags.DEFINE_bool("for_eval", False, "Also export what the paper metrics and generation read "
                  "for every sequence (pose, root, the task's generation features): "
                  "launch/evaluate.py --portable and the dance_metrics evaluator need it.")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from d2m_jax.data import pipeline, portable  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import batch_keys  # pylint: disable=import-outside-toplevel

  from d2m_jax.train import cli, workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  if os.path.isdir(FLAGS.out):
    cli.fail(f"--out={FLAGS.out} is a folder; give a file name (.npz)", 2)
  try:
    workdir_lib.check_not_locked(FLAGS.out, "--out")
  except cli.USER_ERRORS as e:
    cli.fail(str(e), 2)
  config = FLAGS.config
  dc = config.data.copy_and_resolve_references()
  with dc.unlocked():
    dc.loader, dc.portable = "numpy", None     # read the processed sequences themselves
  try:
    stats = pipeline.load_stats(dc)
    kind = pipeline._tfds_kind(dc)  # pylint: disable=protected-access
    contract = pipeline.BATCH_KEYS[dc.kind]
    if FLAGS.keys:
      keys = tuple(FLAGS.keys)
      bad = sorted(set(keys) - set(contract))
      if bad:
        print(f"error: --keys {bad}: not batch keys of data.kind={dc.kind} ({contract})",
              file=sys.stderr)
        return 2
    else:
      batch = next(pipeline.make_iterator(dc, "train"))
      keys = batch_keys.read_batch_keys(get_task(config), batch, stats)
    eval_arrays = ()
    if FLAGS.for_eval:
      eval_arrays = portable.METRIC_ARRAYS + tuple(get_task(config).generation_features)
    print(f"{config.task}: data.kind={kind}, exporting batch keys {list(keys)}"
          + (f", evaluation arrays {list(eval_arrays)}" if eval_arrays else ""), flush=True)
    info = portable.export(pipeline.processed_dir(dc), FLAGS.out, kind=kind, keys=keys,
                           f16_tol=FLAGS.f16_tol, extra_info=dict(task=config.task),
                           eval_arrays=eval_arrays)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  n = {s: sum(r["split"] == s for r in info["manifest"]["sequences"])
       for s in ("train", "validation", "test")}
  print(f"wrote {FLAGS.out}: {info['bytes'] / 1e6:.2f} MB, arrays {info['arrays']['dtypes']}, "
        f"sequences {n}")
  return 0


if __name__ == "__main__":
  from d2m_jax.train import cli as _cli  # noqa: E402  pylint: disable=g-import-not-at-top
  app.run(lambda argv: sys.exit(_cli.guarded(main, argv, code=2)),
          flags_parser=_cli.flags_parser(("config",)))
