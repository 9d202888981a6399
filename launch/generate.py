r"""Any song -> dance joints (.npz), and optionally a stick-figure video with the music.

    python launch/generate.py --music=song.mp3 --checkpoint=runs/wgan_audio \
        --out=out/song.npz [--num_samples=2 --seed=0 --render] [--config=configs/wgan_audio.py]

* ``--music``: any file libsndfile decodes (mp3, wav, ogg, flac; any rate; mono or stereo), any
  length (a 5-minute song works: models generate in windows that carry state).
* ``--checkpoint``: a training workdir of ``launch/train.py`` (its ``config.json`` is used unless
  ``--config`` is given; ``--config.field=value`` overrides work as in training).
* ``--out``: the ``.npz`` (joints (N, T, J, C), fps, joint names, skeleton, bones, music beats, the
  task and config used), written atomically. ``--render`` adds ``OUT.mp4`` (H.264 + the music) and
  ``OUT.gif`` next to it (``OUT_<i>.*`` per sample when N > 1).
* ``--music=FOLDER``: every song under it (recursively) in ONE process (one restore, compiled
  programs reused); ``--out`` is then a folder receiving ``<relative path>.npz`` per song. The
  JSON reports ``songs_per_second``; unreadable songs are listed under ``failed`` and skipped
  (exit status 2 if any failed).

``timings_s``: seconds per phase (decode, features, beats, restore, model [, render]); the restore
reads the workdir's generator export (``WORKDIR/generator/``: only the arrays generation needs)
when the checkpoint has one, else the whole checkpoint, and then writes the export for next time
(``restore_source``).

Bad input (missing/corrupt/empty/unsupported music, a folder that is no trained generator
workdir, a damaged checkpoint, ``--out`` a folder or inside a workdir a training holds, more
samples than the memory holds: refused before generating, with the estimate) prints one line
naming the file and the problem and exits with status 2; no output file is left behind.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("music", None, "Song file (mp3, wav, ogg, flac, ...).")
flags.DEFINE_string("checkpoint", None, "Training workdir holding checkpoints/ and config.json.")
flags.DEFINE_string("out", None, "Output .npz path.")
flags.DEFINE_integer("num_samples", 1, "Dances to generate for the song (one batched call).")
flags.DEFINE_integer("seed", 0, "PRNG seed.")
flags.DEFINE_string("step", None, "Checkpoint step, or 'best' (the step WORKDIR/best.json "
                    "names: config.keep_best); default: the latest.")
flags.DEFINE_bool("render", False, "Also write OUT.mp4 (with the music) and OUT.gif.")
flags.DEFINE_bool("compilation_cache", True, "Reuse XLA programs compiled by earlier runs (JAX's "
                  "persistent cache in $D2M_JAX_CACHE, default ~/.cache/d2m_jax/jax_cache); "
                  "--nocompilation_cache turns it off.")
config_flags.DEFINE_config_file("config", None, "Config file (default: the workdir's).",
                                lock_config=False)
flags.mark_flags_as_required(["music", "checkpoint", "out"])


def main(argv):
  del argv
  from d2m_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.configure_or_exit()  # $D2M_HOST_MALLOC or keep; before JAX starts
  from d2m_jax import compile_cache  # pylint: disable=import-outside-toplevel
  cache_dir = compile_cache.enable(FLAGS.compilation_cache)  # before the first compile
  cache_counter = compile_cache.CacheCounter()
  from d2m_jax import executable_cache  # pylint: disable=import-outside-toplevel
  executable_cache.enable(cache_dir and cache_dir + "_executables")  # whole compiled generators
  from d2m_jax import generate  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  from d2m_jax.render import FFmpegNotFound  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import cli, workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  if FLAGS.num_samples < 1:
    print("error: --num_samples must be >= 1", file=sys.stderr)
    return 2
  if os.path.isdir(FLAGS.music):
    return _generate_folder(generate, DataError, FFmpegNotFound, cache_dir, cache_counter)
  try:  # the output path first; the workdir is checked right after the music is decoded
    if os.path.isdir(FLAGS.out):
      raise workdir_lib.WorkdirError(f"--out={FLAGS.out} is a folder; give a file name (.npz)")
    workdir_lib.check_not_locked(FLAGS.out, "--out")
  except cli.USER_ERRORS as e:
    cli.fail(str(e), 2)
  try:
    result = generate.generate_from_checkpoint(
        FLAGS.music, FLAGS.checkpoint, FLAGS.out, config=FLAGS.config,
        num_samples=FLAGS.num_samples, seed=FLAGS.seed, render=FLAGS.render, step=FLAGS.step)
  except DataError as e:
    print(f"error: bad music input: {e}", file=sys.stderr)
    return 2
  except (FileNotFoundError, FFmpegNotFound) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except cli.USER_ERRORS as e:  # damaged checkpoint, generation too large for the memory, ...
    cli.fail(str(e), 2)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  timings = {k: round(v, 3) for k, v in result["timings"].items()}
  print(json.dumps(dict(out=result["npz"], shape=list(result["shape"]), fps=result["fps"],
                        skeleton=result["skeleton"], videos=result.get("videos"),
                        generation_report=result.get("generation_report"),
                        timings_s=timings, restore_source=result.get("restore_source"),
                        compilation_cache=dict(
                            dir=cache_dir, loaded=cache_counter.hits,
                            compiled=cache_counter.misses)), default=str))
  return 0


def _generate_folder(generate, DataError, FFmpegNotFound, cache_dir, cache_counter):  # noqa: N803
  if os.path.isfile(FLAGS.out):
    print(f"error: --out={FLAGS.out} is a file; with a --music folder it must be a folder",
          file=sys.stderr)
    return 2
  try:
    result = generate.generate_folder(
        FLAGS.music, FLAGS.checkpoint, FLAGS.out, config=FLAGS.config,
        num_samples=FLAGS.num_samples, seed=FLAGS.seed, render=FLAGS.render, step=FLAGS.step,
        log=lambda s: print(s, file=sys.stderr, flush=True))
  except (FileNotFoundError, FFmpegNotFound, ValueError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path, msg in result["failed"].items():
    print(f"error: bad music input: {msg}", file=sys.stderr)
  print(json.dumps(dict(out=os.path.abspath(FLAGS.out), songs=len(result["songs"]),
                        failed=sorted(result["failed"]), restore_s=round(result["restore"], 3),
                        restore_source=result["restore_source"],
                        seconds=round(result["seconds"], 3),
                        songs_per_second=round(result["songs_per_second"], 3),
                        per_song=result["songs"], compilation_cache=dict(
                            dir=cache_dir, loaded=cache_counter.hits,
                            compiled=cache_counter.misses)), default=str))
  return 2 if result["failed"] else 0


if __name__ == "__main__":
  from d2m_jax.train import cli as _cli  # noqa: E402  pylint: disable=g-import-not-at-top
  app.run(lambda argv: sys.exit(_cli.guarded(main, argv, code=2)),
          flags_parser=_cli.flags_parser(("config",)))
