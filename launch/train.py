"""Trains any task: ``python launch/train.py --config=configs/<model>.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.num_train_steps=200
--config.parallel=pmap --config.data.batch_size=64``. A workdir that holds a checkpoint resumes
from it (exactly, data order included). SIGTERM saves a checkpoint and exits 0; a NaN/inf loss or
bad input exits 1 with a one-line reason. The loop lives in ``d2m_jax.train.loop``.
"""
import logging as pylogging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and eval.json.")
config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
  """Drops orbax's INFO chatter (every save/close) so the progress lines stay readable."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from d2m_jax.train import distributed  # pylint: disable=import-outside-toplevel
  distributed.maybe_initialize(FLAGS.config)  # before any other jax call; no-op on one process
  from d2m_jax.train import loop  # pylint: disable=import-outside-toplevel
  try:
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except loop.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except
    name = type(e).__name__
    if name == "DataError" or isinstance(e, (ValueError, FileNotFoundError, RuntimeError, ImportError, KeyError)):
      print(f"error: {name}: {e}", file=sys.stderr, flush=True)
      if os.environ.get("D2M_TRACEBACK"):
        raise
      sys.exit(1)
    raise


if __name__ == "__main__":
  app.run(main)
