"""Any song -> dance: decode, compute the features a model asks for, generate, save atomically.

Library use::

    from d2m_jax import generate
    result = generate.generate_from_checkpoint("song.mp3", "runs/wgan", "out/song.npz",
                                               num_samples=2, seed=0)

or, with a task and state already in memory, :func:`prepare_music` + :func:`generate_dance` +
:func:`save_dance`. :func:`load_generator` restores a workdir once (from its generator export when
there is one: ``d2m_jax.generator_export``), :func:`generate_song` then runs one song, and
:func:`generate_folder` every song of a folder in one process. The command line is
``launch/generate.py``.

Pipeline (timed stage by stage in ``benchmarks/inference.py``):

1. **decode** ``d2m_jax.data.audio.load_audio``: any file libsndfile decodes (wav, flac, ogg,
   mp3), any rate, mono or stereo; bad input raises ``DataError`` naming the file;
2. **features** the task's ``generation_features`` at the motion fps, one row per output frame
   (``d2m_jax.data.features.compute_features``), ``waveform16k`` = the mono 16 kHz signal padded
   or cut to exactly ``num_frames * 640`` samples, and music-beat frames
   (``features.beat_frames``);
3. **model** ``task.generate(state, feats, beats, num_frames, rng, num_samples)``: ONE batched call
   for all samples; models handle any length by windows carrying state (Task contract);
4. **save** a ``.npz`` written to a temporary name in the output folder and ``os.replace``d, so a
   failure never leaves a half-written file.

The output length is ``floor(duration_s * fps)`` frames: a 60 s song gives 1500 frames at 25 fps.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

from d2m_jax import files
from d2m_jax.data import skeleton as skel
from d2m_jax.data.errors import DataError

WAVE16K = "waveform16k"
SAMPLES_PER_FRAME_16K = 640  # 16 kHz / 25 fps (the WGAN's audio stride)


@dataclasses.dataclass
class Music:
  """A decoded song and the model inputs derived from it."""
  path: str
  wave: np.ndarray          # mono float32 at ``sr``
  sr: int
  fps: float
  num_frames: int
  feats: Dict[str, np.ndarray]
  beats: np.ndarray         # music-beat frame indices (int64) at ``fps``
  tempo_bpm: float
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def duration(self) -> float:
    return self.wave.shape[0] / float(self.sr)


def num_frames_for(num_samples: int, sr: float, fps: float) -> int:
  """Motion frames covering a song of ``num_samples`` audio samples: floor(duration * fps)."""
  return int(np.floor(num_samples * fps / sr + 1e-6))


def _load_audio(path: str):
  from d2m_jax.data import audio  # pylint: disable=import-outside-toplevel
  return audio.load_audio(path)


def _resample(wave, sr, target):
  try:
    from d2m_jax.data.features import resample  # pylint: disable=import-outside-toplevel
  except ImportError:
    from d2m_jax.data.audio import resample  # pylint: disable=import-outside-toplevel
  return resample(wave, sr, target)


def waveform16k(wave: np.ndarray, sr: int, num_frames: int) -> np.ndarray:
  """Mono 16 kHz signal with exactly ``num_frames * 640`` samples (zero-padded or cut)."""
  w = _resample(wave, sr, 16000)
  n = num_frames * SAMPLES_PER_FRAME_16K
  out = np.zeros(n, np.float32)
  out[:min(n, w.shape[0])] = w[:n]
  return out


def music_beats(wave: np.ndarray, sr: int, fps: float, num_frames: int):
  """Music-beat frame indices and tempo: the data layer's ``features.beat_frames``.

  Falls back to ``librosa.beat.beat_track`` with a hop of one motion frame when the data layer
  does not provide it (keeps generation usable while modules land).
  """
  try:
    from d2m_jax.data.features import beat_frames  # pylint: disable=import-outside-toplevel
  except ImportError:
    beat_frames = None
  if beat_frames is not None:
    frames, tempo = beat_frames(wave, sr, fps, num_frames)
  else:
    import librosa  # pylint: disable=import-outside-toplevel
    target = 22050
    w = _resample(wave, sr, target)
    hop = int(round(target / fps))
    tempo, frames = librosa.beat.beat_track(y=w, sr=target, hop_length=hop)
    tempo = float(np.atleast_1d(tempo)[0])
  frames = np.asarray(frames, np.int64)
  return frames[(frames >= 0) & (frames < num_frames)], float(tempo)


def prepare_music(path: str | os.PathLike, fps: float, feature_names: Sequence[str],
                  *, max_seconds: Optional[float] = None, decoded=None,
                  with_beats: bool = True) -> Music:
  """Decodes ``path`` and computes the named features and the beats at ``fps``.

  Raises ``DataError`` naming the file for anything wrong with the input (missing, empty,
  corrupt, unsupported, silent, shorter than one motion frame). ``decoded`` = an already
  decoded ``(wave, sr)`` of the same file.
  """
  path = os.fspath(path)
  timings = {}
  t0 = time.perf_counter()
  wave, sr = _load_audio(path) if decoded is None else decoded
  if max_seconds is not None:
    wave = wave[:int(max_seconds * sr)]
  timings["decode"] = time.perf_counter() - t0
  music = music_from_wave(wave, sr, fps, feature_names, path=path, with_beats=with_beats)
  music.timings["decode"] = timings["decode"]
  return music


def music_from_wave(wave: np.ndarray, sr: int, fps: float, feature_names: Sequence[str], *,
                    num_frames: Optional[int] = None, path: str = "<waveform>",
                    beats: Optional[np.ndarray] = None, with_beats: bool = True) -> Music:
  """Features and beats of an in-memory mono waveform (``num_frames``: default the song's).

  ``with_beats=False`` skips beat tracking (about 0.7 s per minute of music) and passes no beats:
  for models that declare ``generation_uses_beats = False``.
  """
  if num_frames is None:
    num_frames = num_frames_for(wave.shape[0], sr, fps)
  if num_frames < 2:
    raise DataError(path, f"song too short: {wave.shape[0] / sr:.3f} s gives {num_frames} "
                    f"motion frame(s) at {fps:g} fps")
  t0 = time.perf_counter()
  feats: Dict[str, np.ndarray] = {}
  names = [n for n in feature_names if n != WAVE16K]
  if names:
    from d2m_jax.data import features  # pylint: disable=import-outside-toplevel
    feats.update(features.compute_features(wave, sr, fps, num_frames, tuple(names)))
    for n in names:
      if feats[n].shape[0] != num_frames:
        raise ValueError(f"feature {n!r} has {feats[n].shape[0]} rows, expected {num_frames}")
  if WAVE16K in feature_names:
    feats[WAVE16K] = waveform16k(wave, sr, num_frames)
  timings = {"features": time.perf_counter() - t0}
  t0 = time.perf_counter()
  if beats is not None:
    tempo = float("nan")
  elif with_beats:
    beats, tempo = music_beats(wave, sr, fps, num_frames)
  else:
    beats, tempo = np.zeros((0,), np.int64), float("nan")
  timings["beats"] = time.perf_counter() - t0
  return Music(path=path, wave=wave, sr=sr, fps=float(fps), num_frames=num_frames, feats=feats,
               beats=np.asarray(beats, np.int64), tempo_bpm=tempo, timings=timings)


def music_from_processed(seq: Dict[str, Any], feature_names: Sequence[str]) -> Music:
  """The Music of a processed sequence (``ingest.process_sequence``): its stored features and
  beats, no recomputation (evaluation on preprocessed test sequences). ``waveform16k`` is needed
  only when ``feature_names`` asks for it: a sequence stored without it (the portable export
  of a model that reads only its features, e.g. Dancing2Music's d2m28) gives an empty ``wave``.
  A sequence without ``tempo`` gets the tempo of its beats (``tempo.sequence_tempo``)."""
  from d2m_jax.data import tempo  # pylint: disable=import-outside-toplevel
  num_frames = int(np.asarray(seq["pose"]).shape[0])
  feats: Dict[str, np.ndarray] = {}
  for n in feature_names:
    if n not in seq:
      raise ValueError(f"processed sequence {seq.get('name')!r} has no feature {n!r}")
    x = np.asarray(seq[n])
    feats[n] = x.astype(np.float32) / 32767.0 if n == WAVE16K else x.astype(np.float32)
  wave = (np.asarray(seq[WAVE16K], np.float32) / 32767.0 if WAVE16K in seq
          else np.zeros((0,), np.float32))
  return Music(path=str(seq.get("name", "<processed>")), wave=wave, sr=16000,
               fps=float(seq["fps"]), num_frames=num_frames, feats=feats,
               beats=np.asarray(seq["beats"], np.int64),
               tempo_bpm=tempo.sequence_tempo(seq.get("tempo"), seq["beats"], float(seq["fps"])))


def uses_beats(task) -> bool:
  """Whether ``task.generate`` reads the music beats (``generation_uses_beats``, default True)."""
  return bool(task.generation_uses_beats)


def task_fps(task) -> float:
  return float(task.fps or skel.MOCAP_FPS)


def skeleton_for(task, joints_shape) -> str:
  """The skeleton name: ``task.skeleton`` if set, else inferred from (J, C)."""
  name = task.skeleton
  if name:
    return name
  j, c = joints_shape[-2:]
  for k, v in skel.SKELETONS.items():
    if len(v["joints"]) == j and v["dims"] == c:
      return k
  raise ValueError(f"no skeleton with {j} joints x {c} dims; set task.skeleton")


# Rough working set of generation per float of input features and of output joints (the models
# keep per-sample copies of the music features, their hidden states and the joints in float32;
# the factor is an upper estimate, e.g. wgan_audio on a 30 s song: ~2.8 MB per sample measured
# as an out-of-memory request for 10,000 samples).
GENERATION_BYTES_PER_FLOAT = 4 * 4
_MAX_JOINT_FLOATS = 25 * 3   # the largest skeleton (openpose25 x, y, c / mocap23 x 3)


def generation_bytes(music: "Music", num_samples: int) -> int:
  """Rough upper estimate of the memory one batched ``task.generate`` call needs."""
  floats = sum(int(np.size(v)) for v in music.feats.values())
  floats += music.num_frames * _MAX_JOINT_FLOATS
  return int(num_samples) * floats * GENERATION_BYTES_PER_FLOAT


def available_memory_bytes() -> Optional[int]:
  """Free memory of the default device (accelerators: its allocator's limit minus what is in
  use; CPU: the host's MemAvailable); None when unknown."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def check_generation_fits(music: "Music", num_samples: int):
  """Refuses (:class:`~d2m_jax.train.errors.ResourceError`, one line with the estimate) a
  generation batch larger than the free memory, before any work."""
  from d2m_jax.train.errors import ResourceError  # pylint: disable=import-outside-toplevel
  need, have = generation_bytes(music, num_samples), available_memory_bytes()
  if have is None or need <= have:
    return
  fit = max(1, int(num_samples * have // need))
  raise ResourceError(
      f"--num_samples={num_samples}: {num_samples} dances of {music.num_frames} frames need "
      f"about {need / 1e9:.1f} GB (rough estimate), {have / 1e9:.1f} GB are free; ask for at "
      f"most about {fit} samples per call, or a shorter song")


def generate_dance(task, state, music: Music, *, num_samples: int = 1, seed: int = 0):
  """One batched ``task.generate`` call -> (num_samples, num_frames, J, C) float32 numpy."""
  import jax  # pylint: disable=import-outside-toplevel
  if not task.supports("generate"):
    raise ValueError(f"task {getattr(task, 'name', task)!r} cannot generate dances "
                     "(no generate method)")
  rng = jax.random.PRNGKey(seed)
  t0 = time.perf_counter()
  joints = task.generate(state, music.feats, music.beats, music.num_frames, rng, num_samples)
  joints = np.asarray(jax.block_until_ready(joints), np.float32)
  music.timings["model"] = time.perf_counter() - t0
  want = (num_samples, music.num_frames)
  if joints.ndim != 4 or joints.shape[:2] != want:
    raise ValueError(f"task.generate returned shape {joints.shape}, expected {want} + (J, C)")
  if not np.all(np.isfinite(joints)):
    raise ValueError("task.generate returned non-finite joints")
  return joints


def save_dance(out_path: str, joints: np.ndarray, *, fps: float, skeleton: str,
               music: Optional[Music] = None, task_name: str = "", config=None,
               checkpoint: str = "", seed: int = 0) -> str:
  """Writes joints (N, T, J, C) and their metadata to ``out_path`` (.npz) atomically.

  Keys: joints, fps, joint_names, skeleton, bones (+ mid_bones for mocap23), music_beats,
  music_path, task, config (JSON), checkpoint, seed.
  """
  if not out_path.endswith(".npz"):
    out_path += ".npz"
  sk = skel.SKELETONS[skeleton]
  payload = dict(
      joints=np.asarray(joints, np.float32), fps=np.float32(fps),
      joint_names=np.array(sk["joints"]), skeleton=np.array(skeleton),
      bones=np.array(sk["bones"], np.int32), task=np.array(task_name),
      config=np.array(config.to_json() if hasattr(config, "to_json") else json.dumps(config)),
      checkpoint=np.array(os.fspath(checkpoint)), seed=np.int64(seed))
  if skeleton == "mocap23":
    payload["mid_bones"] = np.array(skel.MOCAP23_MID_BONES, np.int32)
  if music is not None:
    payload["music_beats"] = np.asarray(music.beats, np.int64)
    payload["music_path"] = np.array(os.path.abspath(music.path))
    payload["tempo_bpm"] = np.float32(music.tempo_bpm)
  files.save_npz(out_path, **payload)
  return out_path


def load_dance(path: str) -> Dict[str, Any]:
  """Reads a ``save_dance`` file back into a dict (strings as str, scalars as Python numbers)."""
  with np.load(path, allow_pickle=False) as z:
    out = {}
    for k in z.files:
      v = z[k]
      out[k] = v.item() if v.ndim == 0 else v
  return out


def load_generator(checkpoint: str, *, config=None, step=None):
  """(task, state, config, restore seconds, source) of a training workdir, restored once.

  Uses the workdir's generator export when there is one for the checkpoint (``source ==
  "export"``: only the arrays generation reads, no orbax), else restores the checkpoint and
  writes the export for the next call (``d2m_jax.generator_export``).
  """
  from d2m_jax import generator_export  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import GENERATOR_TASKS  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  # a trained generator workdir (config.json of a generator task, a checkpoint), before restoring
  workdir_lib.check_trained_workdir(checkpoint, "--checkpoint", GENERATOR_TASKS,
                                    need_config=config is None)
  t0 = time.perf_counter()
  state, config, task, source = generator_export.restore_for_generation(
      checkpoint, config=config, step=step)
  return task, state, config, time.perf_counter() - t0, source


def generate_song(task, state, config, music_path: str, out_path: str, *, checkpoint: str = "",
                  num_samples: int = 1, seed: int = 0, render: bool = False,
                  max_seconds: Optional[float] = None, decoded=None) -> Dict[str, Any]:
  """One song -> .npz (and optionally .mp4/.gif) with an already restored generator."""
  t0 = time.perf_counter()
  decoded = _load_audio(music_path) if decoded is None else decoded
  decode_s = time.perf_counter() - t0
  fps = task_fps(task)
  music = prepare_music(music_path, fps, tuple(task.generation_features),
                        max_seconds=max_seconds, decoded=decoded,
                        with_beats=render or uses_beats(task))
  music.timings["decode"] = decode_s
  check_generation_fits(music, num_samples)
  joints = generate_dance(task, state, music, num_samples=num_samples, seed=seed)
  sk = skeleton_for(task, joints.shape)
  out = save_dance(out_path, joints, fps=fps, skeleton=sk, music=music,
                   task_name=getattr(task, "name", str(config.task)), config=config,
                   checkpoint=checkpoint, seed=seed)
  result = dict(npz=out, shape=joints.shape, fps=fps, skeleton=sk, timings=music.timings)
  report = getattr(task, "last_generation_report", None)
  if report is not None:   # e.g. Dancing2Music: how many triplets had no moving candidate
    result["generation_report"] = report
  if render:
    from d2m_jax import render as rnd  # pylint: disable=import-outside-toplevel
    t0 = time.perf_counter()
    stem = out[:-len(".npz")]
    videos = []
    for i in range(num_samples):
      suffix = "" if num_samples == 1 else f"_{i}"
      videos.append(rnd.render_dance(joints[i], skeleton=sk, fps=fps,
                                     out_mp4=f"{stem}{suffix}.mp4", out_gif=f"{stem}{suffix}.gif",
                                     music_path=music_path, beats=music.beats))
    music.timings["render"] = time.perf_counter() - t0
    result["videos"] = videos
  return result


def generate_from_checkpoint(music_path: str, checkpoint: str, out_path: str, *,
                             config=None, num_samples: int = 1, seed: int = 0,
                             render: bool = False, step=None,
                             max_seconds: Optional[float] = None) -> Dict[str, Any]:
  """The whole command: song file + training workdir -> .npz (and optionally .mp4/.gif).

  The music is decoded FIRST (cheap, and the likeliest input error), then the generator is
  restored (:func:`load_generator`). Returns a dict with the output paths, shapes and per-stage
  timings (``restore_source``: "export" or "checkpoint").
  """
  if render:  # fail before any work when the video cannot be made
    from d2m_jax.render import find_ffmpeg  # pylint: disable=import-outside-toplevel
    find_ffmpeg()
  # Decode before the (slow) restore so bad music fails fast and leaves nothing behind.
  t0 = time.perf_counter()
  decoded = _load_audio(music_path)
  decode_s = time.perf_counter() - t0
  task, state, config, restore_s, source = load_generator(checkpoint, config=config, step=step)
  result = generate_song(task, state, config, music_path, out_path, checkpoint=checkpoint,
                         num_samples=num_samples, seed=seed, render=render,
                         max_seconds=max_seconds, decoded=decoded)
  result["timings"]["decode"] = decode_s
  result["timings"]["restore"] = restore_s
  result["restore_source"] = source
  return result


def music_files(folder: str) -> list:
  """Audio files under ``folder`` (recursively; the extensions ``load_audio`` reads), sorted."""
  from d2m_jax.data.audio import SUPPORTED_EXTENSIONS  # pylint: disable=import-outside-toplevel
  found = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    found += [os.path.join(root, f) for f in sorted(files)
              if f.lower().endswith(SUPPORTED_EXTENSIONS) and not f.startswith(".")]
  return found


def folder_outputs(folder: str, songs: Sequence[str], out_dir: str) -> list:
  """``out_dir/<relative path without extension>.npz`` per song (the extension is kept when two
  songs of one folder share a name)."""
  rel = [os.path.relpath(s, folder) for s in songs]
  stems = [os.path.splitext(r)[0] for r in rel]
  dup = {x for x in stems if stems.count(x) > 1}
  return [os.path.join(out_dir, (r if st in dup else st) + ".npz") for r, st in zip(rel, stems)]


def generate_folder(folder: str, checkpoint: str, out_dir: str, *, config=None,
                    num_samples: int = 1, seed: int = 0, render: bool = False,
                    step=None, log=None) -> Dict[str, Any]:
  """Every song under ``folder`` -> ``out_dir`` (mirroring sub-folders), in ONE process: the
  generator is restored once and the compiled programs are reused across songs.

  A song that cannot be read is reported (``failed``: path -> message) and skipped; the others
  are still generated. ``songs_per_second`` counts the songs done over the seconds spent after
  the restore (decode + features + beats + model + save [+ render]).
  """
  songs = music_files(folder)
  if not songs:
    raise FileNotFoundError(f"{folder}: no music files (wav, flac, ogg, mp3, aiff)")
  if render:
    from d2m_jax.render import find_ffmpeg  # pylint: disable=import-outside-toplevel
    find_ffmpeg()
  task, state, config, restore_s, source = load_generator(checkpoint, config=config, step=step)
  done, failed = [], {}
  t0 = time.perf_counter()
  for path, out in zip(songs, folder_outputs(folder, songs, out_dir)):
    try:
      r = generate_song(task, state, config, path, out, checkpoint=checkpoint,
                        num_samples=num_samples, seed=seed, render=render)
    except DataError as e:
      failed[path] = str(e)
      if log:
        log(f"skipped: bad music input: {e}")
      continue
    done.append(dict(music=path, npz=r["npz"], frames=int(r["shape"][1]),
                     timings={k: round(v, 3) for k, v in r["timings"].items()}))
    if log:
      log(f"[{len(done) + len(failed)}/{len(songs)}] {path} -> {r['npz']}")
  seconds = time.perf_counter() - t0
  return dict(songs=done, failed=failed, restore=restore_s, restore_source=source,
              seconds=seconds, songs_per_second=len(done) / seconds if seconds > 0 else 0.0)
