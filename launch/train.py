"""Trains any task: ``python launch/train.py --config=configs/<model>.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.num_train_steps=200
--config.parallel=pmap --config.data.batch_size=64``. A workdir that holds a checkpoint resumes
from it (exactly, data order included). SIGTERM saves a checkpoint and exits 0; a NaN/inf loss or
bad input exits 1 with a one-line reason (a config key that does not exist, a missing config
file, a workdir that is a file, read-only or held by another training, a resume whose config
differs from the workdir's, a damaged checkpoint, a full disk: see docs/training.md). The loop lives in ``d2m_jax.train.loop``.
"""
import errno
import logging as pylogging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from d2m_jax import host_memory  # noqa: E402  (stdlib only: JAX is not imported here)

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and eval.json.")
config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process (multi-host) runs; see d2m_jax/train/distributed.py. Shorthands for the
# --config.distributed.* fields (these flags win); SLURM and TPU-pod values are auto-detected.
flags.DEFINE_bool("multiprocess", None, "Join a multi-process run with jax.distributed "
                  "(= --config.distributed.mode=on; --nomultiprocess = off; default: the config's "
                  "mode, 'auto': only under a detected cluster launch).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
flags.DEFINE_integer("process_id", None, "This process's id, 0..num_processes-1.")
flags.DEFINE_multi_string("add_eval", [], "NAME,KIND,SPLIT,EVERY_STEPS: adds an evaluator to "
                          "config.evals (e.g. paper_test,dance_metrics,test,0: the paper metrics "
                          "at the end of training), repeatable; the config's own evaluators stay.")
flags.DEFINE_enum("host_malloc", None, list(host_memory.MODES),
                  "keep: memory XLA:CPU frees after a step stays mapped for the next one (no "
                  "page faults per step; the process keeps its peak heap), system: glibc's "
                  "defaults. Default: $D2M_HOST_MALLOC, else keep (d2m_jax/host_memory.py).")
flags.DEFINE_bool("compilation_cache", True, "Reuse XLA programs compiled by earlier runs (JAX's "
                  "persistent cache in $D2M_JAX_CACHE, default ~/.cache/d2m_jax/jax_cache); "
                  "--nocompilation_cache turns it off.")


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of orbax (every save/close) and TFDS (every dataset read) so the
  progress lines stay readable; warnings and errors still show."""
  NOISY = ("orbax", "tensorflow_datasets", "etils")

  def filter(self, record):
    return (record.levelno >= pylogging.WARNING
            or not any(n in record.pathname for n in self.NOISY))


def _export_generator(task, state):
  """Writes the generator export of the final checkpoint (what ``launch/generate.py`` restores:
  only the arrays generation reads); tasks without ``generation_state`` have none."""
  import jax  # pylint: disable=import-outside-toplevel
  from d2m_jax import generator_export  # pylint: disable=import-outside-toplevel
  if jax.process_index() != 0 or getattr(task, "generation_state", None) is None:
    return
  step = generator_export.latest_step(FLAGS.workdir)
  if step is not None and step == int(jax.device_get(state.step)):
    path = generator_export.write(FLAGS.workdir, task, state, step)
    if path:
      print(f"generator export: {path}", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host_memory.configure_or_exit(FLAGS.host_malloc)  # before JAX's backend starts
  # SIGTERM from process start: a signal while the task restores other workdirs (composition)
  # or while the state is built is honoured at the first step (checkpoint, final evaluation).
  from d2m_jax.train import actions  # pylint: disable=import-outside-toplevel
  preemption = actions.PreemptionHandler().install()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from d2m_jax import compile_cache  # pylint: disable=import-outside-toplevel
  compile_cache.enable(FLAGS.compilation_cache)  # before the first compile
  from d2m_jax.train import distributed  # pylint: disable=import-outside-toplevel
  mode = None if FLAGS.multiprocess is None else ("on" if FLAGS.multiprocess else "off")
  try:  # before any other jax call; a no-op for ordinary single-process runs
    distributed.maybe_initialize(FLAGS.config, mode=mode,
                                 coordinator_address=FLAGS.coordinator_address,
                                 num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  # Registers the evaluation layer's evaluator kinds (dance_metrics) with the engine.
  from d2m_jax.metrics import evaluation  # pylint: disable=import-outside-toplevel,unused-import
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import cli  # pylint: disable=import-outside-toplevel,redefined-outer-name
  from d2m_jax.train import evaluators, loop  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  try:
    evaluators.add_evals(FLAGS.config, FLAGS.add_eval)
  except ValueError as e:
    cli.fail(str(e), 2)
  try:
    workdir_lib.check_config_values(FLAGS.config)  # before the task (its optimiser) is built
    task = get_task(FLAGS.config)
    # the generator export is written while the workdir is still locked
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir, task=task, preemption=preemption,
                            after=lambda state: _export_generator(task, state))
  except loop.NonFiniteLossError as e:
    cli.fail(str(e))
  except cli.USER_ERRORS as e:  # DataError, config/workdir/lock/checkpoint/disk errors
    cli.fail(str(e))
  except OSError as e:
    if e.errno == errno.ENOSPC:
      cli.fail(f"no space left on the device holding {FLAGS.workdir}: {e}")
    raise
  except (ValueError, FileNotFoundError, RuntimeError, ImportError, KeyError) as e:
    cli.fail(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
  from d2m_jax.train import cli  # noqa: E402  pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(("config",)))
