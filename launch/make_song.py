r"""Writes a procedural ballroom-like song (the embedded default's music generator).

    python launch/make_song.py --style=W --seconds=60 --out=song.wav [--seed=7]

Style C (cha-cha ~120 BPM), R (rumba ~104), T (tango ~128) or W (waltz ~90, 3/4). Any format
soundfile writes (wav, flac, ogg, mp3) by the file name's extension; written atomically. Seeds
other than the dataset's (0) give songs no model has heard.
"""
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("style", "W", ["C", "R", "T", "W"], "Dance style of the music.")
flags.DEFINE_float("seconds", 60.0, "Length in seconds.")
flags.DEFINE_integer("seed", 7, "Seed.")
flags.DEFINE_string("out", None, "Output audio file.")
flags.mark_flag_as_required("out")


def main(argv):
  del argv
  import numpy as np
  import soundfile as sf
  from d2m_jax import files
  from d2m_jax.data import synthetic
  rng = np.random.default_rng([FLAGS.seed, "CRTW".index(FLAGS.style)])
  bpm = synthetic.STYLE_TEMPO[FLAGS.style][0] * rng.uniform(0.96, 1.04)
  wave = synthetic.synth_music(FLAGS.style, bpm, FLAGS.seconds, rng.uniform(0.1, 0.6),
                               int(rng.integers(45, 57)), rng)
  out = os.path.abspath(FLAGS.out)
  try:
    with files.atomic_path(out) as tmp:   # same extension: soundfile picks the format from it
      sf.write(tmp, wave.astype(np.float32), synthetic.SR)
  except Exception as e:  # unsupported extension, unwritable folder, ...
    print(f"error: {out}: cannot write audio ({e})", file=sys.stderr)
    return 1
  print(f"wrote {out}: {FLAGS.seconds:g} s, style {FLAGS.style}, {bpm:.1f} BPM")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
