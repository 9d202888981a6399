"""Generation from any song with a cheap fake model (no other helper's model needed)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from d2m_jax import files, generate
from d2m_jax.data.errors import DataError
from d2m_jax.train.task import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeTask(Task):
  """Satisfies the generation contract: joints = a per-frame function of the 16 kHz audio."""
  name = "fake_generator"
  generation_features = ("waveform16k",)
  fps = 25.0
  skeleton = "mocap23"

  def __init__(self):
    super().__init__(config=None)
    self.calls = []

  def init_state(self, rng, batch, stats=None):
    return {}

  def train_step(self, state, batch, axis_name=None):
    return state, {}

  def synthetic_batch(self, batch_size, rng):
    return {}

  def generate(self, state, feats, beats, num_frames, rng, num_samples):
    wave = feats["waveform16k"]
    assert wave.shape == (num_frames * 640,), wave.shape
    self.calls.append(num_samples)
    energy = np.sqrt(np.mean(wave.reshape(num_frames, 640) ** 2, axis=1))
    base = np.broadcast_to(energy[None, :, None, None], (num_samples, num_frames, 23, 3))
    return (base + np.arange(num_samples)[:, None, None, None]).astype(np.float32)


def _song(path, seconds, sr=8000, channels=1):
  rng = np.random.default_rng(0)
  n = int(round(seconds * sr))
  t = np.arange(n) / sr
  x = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=n)
  x[(np.arange(n) % (sr // 2)) < 200] += 0.5  # clicks every 0.5 s (120 bpm)
  x = np.clip(x, -1, 1).astype(np.float32)
  sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr)
  return str(path)


@pytest.fixture
def fast_beats(monkeypatch):
  """Beat tracking is the data layer's business; length tests replace it with a stub."""
  monkeypatch.setattr(generate, "music_beats",
                      lambda wave, sr, fps, n: (np.arange(0, n, 12, dtype=np.int64), 120.0))


@pytest.mark.parametrize("seconds,channels", [(1.0, 1), (4.84, 2), (300.0, 1)])
def test_output_length_is_duration_times_fps(tmp_path, fast_beats, seconds, channels):
  path = _song(tmp_path / "song.wav", seconds, channels=channels)
  task = FakeTask()
  music = generate.prepare_music(path, task.fps, task.generation_features)
  assert music.num_frames == int(round(seconds * 25))
  joints = generate.generate_dance(task, {}, music, num_samples=2, seed=1)
  assert joints.shape == (2, int(round(seconds * 25)), 23, 3)
  assert task.calls == [2]  # one batched call for all samples
  out = generate.save_dance(str(tmp_path / "dance.npz"), joints, fps=25.0, skeleton="mocap23",
                            music=music, task_name=task.name, config={"task": "fake"})
  d = generate.load_dance(out)
  assert d["joints"].shape == joints.shape and d["fps"] == 25.0
  assert d["skeleton"] == "mocap23" and len(d["joint_names"]) == 23
  assert d["task"] == "fake_generator" and '"fake"' in d["config"]
  assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp file left


def _bad_files(tmp_path):
  corrupt = tmp_path / "corrupt.mp3"
  corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
  empty = tmp_path / "empty.wav"
  empty.write_bytes(b"")
  unsupported = tmp_path / "notes.txt"
  unsupported.write_text("not music")
  return {"corrupt": corrupt, "empty": empty, "unsupported": unsupported}


def test_bad_music_raises_clear_error_and_writes_nothing(tmp_path):
  for kind, path in _bad_files(tmp_path).items():
    out = tmp_path / f"out_{kind}.npz"
    with pytest.raises(DataError) as e:
      generate.generate_from_checkpoint(str(path), str(tmp_path), str(out))
    assert str(path) in str(e.value), kind
    assert not out.exists()
  assert not [f for f in os.listdir(tmp_path) if f.startswith("out_") or f.startswith(".")]


def test_launcher_bad_music_exit_code_and_message(tmp_path):
  files = _bad_files(tmp_path)
  out = tmp_path / "out.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, os.path.join(REPO, "launch", "generate.py"),
                      f"--music={files['corrupt']}", f"--checkpoint={tmp_path}", f"--out={out}"],
                     capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 2, r.stderr
  assert str(files["corrupt"]) in r.stderr and "Traceback" not in r.stderr
  assert not out.exists()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  target = tmp_path / "x.npz"

  def boom(f):
    f.write(b"partial")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError):
    files.write_with(str(target), boom)
  assert os.listdir(tmp_path) == []


def test_folder_generates_every_song_in_one_restore(tmp_path, fast_beats, monkeypatch):
  import ml_collections  # pylint: disable=import-outside-toplevel
  music = tmp_path / "music"
  (music / "sub").mkdir(parents=True)
  songs = [_song(music / "a.wav", 1.0), _song(music / "sub" / "a.wav", 2.0),
           _song(music / "sub" / "a.flac", 1.5)]
  (music / "sub" / "broken.mp3").write_bytes(np.random.default_rng(1).bytes(3000))
  (music / "notes.txt").write_text("not music")
  task = FakeTask()
  loads = []

  def load_generator(checkpoint, config=None, step=None):
    loads.append(checkpoint)
    return task, {}, ml_collections.ConfigDict({"task": "fake"}), 0.0, "export"
  monkeypatch.setattr(generate, "load_generator", load_generator)
  out = tmp_path / "out"
  r = generate.generate_folder(str(music), "ckpt", str(out), num_samples=1)
  assert loads == ["ckpt"] and task.calls == [1, 1, 1]
  assert sorted(os.path.relpath(s["npz"], out) for s in r["songs"]) == [
      "a.npz", os.path.join("sub", "a.flac.npz"), os.path.join("sub", "a.wav.npz")]
  assert [s["frames"] for s in r["songs"]] == [25, 37, 50]
  assert list(r["failed"]) == [str(music / "sub" / "broken.mp3")]
  assert r["songs_per_second"] == pytest.approx(3 / r["seconds"])
  assert sorted(songs) == sorted(s["music"] for s in r["songs"])


def test_music_from_processed_needs_the_waveform_only_when_asked():
  """A processed sequence without ``waveform16k`` (a model that reads only d2m28) still gives
  its stored features and beats; asking for the waveform it lacks names the sequence."""
  T = 50
  d2m = np.random.default_rng(0).normal(size=(T, 28)).astype(np.float32)
  seq = dict(name="W_1", pose=np.zeros((T, 23, 3), np.float32), fps=25.0, tempo=91.0,
             beats=np.array([3, 20, 37]), d2m28=d2m)
  music = generate.music_from_processed(seq, ["d2m28"])
  np.testing.assert_array_equal(music.feats["d2m28"], d2m)
  np.testing.assert_array_equal(music.beats, [3, 20, 37])
  assert music.num_frames == T and music.wave.shape == (0,) and music.tempo_bpm == 91.0
  with pytest.raises(ValueError, match="'W_1' has no feature 'waveform16k'"):
    generate.music_from_processed(seq, ["d2m28", "waveform16k"])
