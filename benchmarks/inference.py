r"""Inference timing: decode, features, model, render, for song lengths 10 s .. 5 min.

    python benchmarks/inference.py [--models=wgan_audio,d2m_composition] \
        [--lengths=10,30,60,120,300] [--render_lengths=10,60] [--music=song.mp3]

Songs: an mp3 of each length made with ffmpeg from ``--music`` (default: the first real song of
../shared/data/music_to_dance, tiled), so "decode" is real mp3 decoding (44.1 kHz stereo).
Models: each task's full-size config with freshly initialised parameters (timing does not depend
on the weights; use ``--checkpoint_<task>=WORKDIR`` flags to time trained ones). ``model`` is the
warm time of one batched ``task.generate`` call (``model_first`` includes the jit compile).
``beats`` (music beat tracking) is timed apart and counted in the total only for tasks whose
``generate`` reads the beats (``generation_uses_beats``, default True).
Target (issue 7): 60 s of dance from a 60 s song, features included and rendering excluded,
under 2 s on 2 CPU cores: the ``total (no render)`` column = decode + features + model.

Prints one table (markdown) and writes the JSON next to ``--out`` if given.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["wgan_audio", "d2m_composition"], "Config names (configs/<name>.py).")
flags.DEFINE_list("lengths", ["10", "30", "60", "120", "300"], "Song lengths in seconds.")
flags.DEFINE_list("render_lengths", ["10", "60"], "Lengths at which rendering is timed too.")
flags.DEFINE_string("music", None, "Source song (default: a real one from the shared data).")
flags.DEFINE_integer("num_samples", 1, "Dances per song.")
flags.DEFINE_string("out", None, "Optional JSON output path.")


def _dummy_stats(P=69):
  import numpy as np  # pylint: disable=import-outside-toplevel
  s = dict(pose_mean=np.zeros(P, np.float32), pose_std=np.ones(P, np.float32),
           pose_min=-np.ones(P, np.float32), pose_max=np.ones(P, np.float32))
  for n, d in (("d2m28", 28), ("fact35", 35), ("mfcc20", 20), ("mel_tempogram512", 512)):
    s[f"{n}_mean"], s[f"{n}_std"] = np.zeros(d, np.float32), np.ones(d, np.float32)
  s["style_counts"] = np.ones(4, np.float32)
  return s


def _build(name):
  import importlib  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  cfg = importlib.import_module(f"configs.{name}").get_config()
  task = get_task(cfg)
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  try:  # the composition's state holds pose stats of the mocap's size
    state = state_lib.build_state(task, jax.random.PRNGKey(0), batch, _dummy_stats())
  except ValueError:  # tasks whose stats have other shapes: placeholders
    state = state_lib.build_state(task, jax.random.PRNGKey(0), batch, None)
  return task, state


FFMPEG_TIMEOUT_S = 120   # one encode of a <= 5 min song takes seconds; never wait longer


def _ffmpeg(args, what):
  """Runs ffmpeg (no stdin) bounded in time: killed (SIGKILL) past FFMPEG_TIMEOUT_S."""
  from d2m_jax.render import find_ffmpeg  # pylint: disable=import-outside-toplevel
  cmd = [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"] + list(args)
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S,
                          check=False)
  except subprocess.TimeoutExpired:          # subprocess.run has killed it
    raise RuntimeError(f"{what}: ffmpeg did not finish in {FFMPEG_TIMEOUT_S} s (killed)") from None
  if proc.returncode != 0:
    tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    raise RuntimeError(f"{what}: ffmpeg failed ({tail})")


def _source_wave(src, folder):
  """The source song as (mono float32, sr): read by the project's decoder, or (a format it does
  not read) decoded once by ffmpeg to a WAV first."""
  from d2m_jax.data import audio  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  try:
    return audio.load_audio(src)
  except DataError:
    wav = os.path.join(folder, "source.wav")
    _ffmpeg(["-i", src, "-vn", "-ac", "2", "-ar", "44100", wav], src)
    return audio.load_audio(wav)


def _make_songs(src, lengths, folder):
  """An mp3 of each length: the source tiled in numpy to a WAV, encoded by ffmpeg. (No
  ``-stream_loop``: on some inputs, e.g. .ogg, ffmpeg loops forever there.)"""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  wave, sr = _source_wave(src, folder)
  out = {}
  for L in lengths:
    n = int(round(L * sr))
    tiled = np.tile(wave, -(-n // wave.shape[0]))[:n]
    wav = os.path.join(folder, f"song_{L}s.wav")
    sf.write(wav, np.stack([tiled, tiled], axis=1), sr)
    path = os.path.join(folder, f"song_{L}s.mp3")
    _ffmpeg(["-i", wav, "-ar", "44100", "-ac", "2", "-b:a", "128k", path], f"{src} ({L} s)")
    os.remove(wav)
    out[L] = path
  return out


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax import files, generate, render  # pylint: disable=import-outside-toplevel
  src = FLAGS.music or os.path.join(os.path.dirname(REPO), "shared", "data", "music_to_dance",
                                    "DANCE_C_2", "audio.mp3")
  if not os.path.exists(src):
    print(f"error: {src}: no music to benchmark with (pass --music)", file=sys.stderr)
    return 2
  lengths = [int(x) for x in FLAGS.lengths]
  render_lengths = {int(x) for x in FLAGS.render_lengths}
  print(f"cpu cores: {os.cpu_count()}; song source: {src}", flush=True)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    try:
      songs = _make_songs(src, lengths, tmp)
    except Exception as e:  # pylint: disable=broad-except  (DataError, ffmpeg failure/timeout)
      print(f"error: {e}", file=sys.stderr)
      return 2
    # Warm the audio stack once (librosa/numba first-call compilation is a one-off per process).
    generate.prepare_music(songs[lengths[0]], 25.0, ("d2m28", "waveform16k"))
    for name in FLAGS.models:
      try:
        task, state = _build(name)
      except Exception as e:  # pylint: disable=broad-except
        print(f"{name}: cannot build ({type(e).__name__}: {e})", flush=True)
        continue
      fps = generate.task_fps(task)
      names = tuple(task.generation_features)
      for L in lengths:
        t0 = time.perf_counter()
        music = generate.prepare_music(songs[L], fps, names)  # beats always timed
        t_first = time.perf_counter()
        generate.generate_dance(task, state, music, num_samples=FLAGS.num_samples, seed=0)
        model_first = time.perf_counter() - t_first
        joints = generate.generate_dance(task, state, music, num_samples=FLAGS.num_samples, seed=1)
        row = dict(name=name, song_s=L, frames=music.num_frames,
                   decode=music.timings["decode"], features=music.timings["features"],
                   beats=music.timings["beats"], uses_beats=generate.uses_beats(task),
                   model_first=model_first, model=music.timings["model"])
        row["total_no_render"] = (row["decode"] + row["features"] + row["model"]
                                  + (row["beats"] if row["uses_beats"] else 0.0))
        row["render"] = None
        if L in render_lengths:
          r = render.render_dance(joints[0], skeleton=generate.skeleton_for(task, joints.shape),
                                  fps=fps, out_mp4=os.path.join(tmp, "r.mp4"),
                                  music_path=songs[L], beats=music.beats, progress=False)
          row["render"] = r["seconds"]
        results.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)
  cols = ["name", "song_s", "frames", "decode", "features", "beats", "uses_beats", "model_first",
          "model",
          "total_no_render", "render"]
  print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
  for r in results:
    print("| " + " | ".join("-" if r[c] is None else f"{r[c]:.2f}" if isinstance(r[c], float)
                            else str(r[c]) for c in cols) + " |")
  if FLAGS.out:
    files.write_text(FLAGS.out, json.dumps(results, indent=1))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
