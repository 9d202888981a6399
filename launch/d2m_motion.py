r"""Stage-by-stage motion budget of a Dancing2Music composition workdir on real units.

    python launch/d2m_motion.py --workdir=runs/real/d2m_comp2 [--split=test] [--num_examples=96]
    python launch/d2m_motion.py --workdir=runs/quickstart/d2m_comp --dance=runs/quickstart/dance.npz

With ``--dance`` it prints instead one line: the generated dance's joint speed over the workdir's
training split's (``motion ratio vs training data``; ``d2m_motion.dance_motion_ratio``).

Prints, for the real units of ``--split`` and for what each path of the model decodes from them
(stage-1 reconstruction, stage-1 prior sample, the dance-level autoencoder, the music path used
by generation), the frame-to-frame motion, temporal and across-unit spread in the normalised
pose space, and their ratios to the real units (``d2m_jax/models/d2m_motion.py``). ``--out``
writes the rows as JSON (atomically). Reads the workdir's own data config (``data.portable``
works without TensorFlow).
"""
import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Composition (d2m_composition) training workdir.")
flags.DEFINE_string("split", "test", "Data split whose units are used.")
flags.DEFINE_integer("num_examples", 96, "Examples (3 units each) from the start of the split.")
flags.DEFINE_integer("seed", 0, "PRNG seed of the sampled latents.")
flags.DEFINE_string("out", None, "Optional JSON output path.")
flags.DEFINE_string("step", None, "Checkpoint step, or 'best' (WORKDIR/best.json, written with "
                    "config.keep_best); default: the latest.")
flags.DEFINE_string("dance", None, "A launch/generate.py .npz: print its motion ratio against "
                    "the workdir's training data instead.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # pylint: disable=import-outside-toplevel
  from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  from d2m_jax.models import d2m_motion  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel

  if not os.path.isfile(os.path.join(FLAGS.workdir, "config.json")):
    print(f"error: {FLAGS.workdir}: not a training workdir (no config.json)", file=sys.stderr)
    return 2
  if FLAGS.dance:
    return dance_ratio(FLAGS.workdir, FLAGS.dance)
  try:
    state, cfg, task = restore_workdir(FLAGS.workdir, step=FLAGS.step)
  except ValueError as e:
    print(f"error: --step={FLAGS.step}: {e}", file=sys.stderr)
    return 2
  if cfg.task != "d2m_composition":
    print(f"error: {FLAGS.workdir}: task {cfg.task!r}, expected d2m_composition", file=sys.stderr)
    return 2
  try:
    data = pipeline.load_split(cfg.data, FLAGS.split)
  except DataError as e:
    print(f"error: bad data: {e}", file=sys.stderr)
    return 2
  batch = {k: data[k][:FLAGS.num_examples] for k in ("units", "aud", "aud_raw")}
  rows = d2m_motion.motion_budget(task, state, batch, jax.random.key(FLAGS.seed))
  print(f"{FLAGS.workdir} (step {int(state.step)}), {FLAGS.split} split, "
        f"{3 * batch['units'].shape[0]} units:")
  print(d2m_motion.markdown_table(rows))
  if FLAGS.out:
    files.write_text(FLAGS.out, json.dumps(rows, indent=1))
    print(f"wrote {FLAGS.out}")
  return 0


def dance_ratio(workdir: str, dance_path: str) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax.data import ingest, pipeline  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  from d2m_jax.models import d2m_motion  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(dance_path):
    print(f"error: {dance_path}: no such dance file", file=sys.stderr)
    return 2
  cfg = checkpoint.load_config(workdir)
  try:
    train = [s["pose"] for s in ingest.split_sequences(pipeline.processed_dir(cfg.data), "train")]
  except DataError as e:
    print(f"error: bad data: {e}", file=sys.stderr)
    return 2
  with np.load(dance_path) as z:
    joints = z["joints"]
  ratio = d2m_motion.dance_motion_ratio(joints, train)
  print(f"motion ratio vs training data: {ratio:.2f} (generated {d2m_motion.joint_speed(joints):.3f}"
        f" vs train {d2m_motion.joint_speed(train):.3f} per frame and coordinate, data units)")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
