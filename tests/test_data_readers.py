"""Readers on small files written here (mocap v1/v2, OpenPose, npz), bad inputs, real data."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from d2m_jax.data import readers
from d2m_jax.data.errors import DataError

SR = 8000


def _music(seconds, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _write_seq(root, name, *, frames=50, start=10, end=None, version="v2", audio_s=4.0,
               skeletons=None):
  d = root / name
  d.mkdir(parents=True)
  end = start + frames if end is None else end
  (d / "config.json").write_text(json.dumps({"start_position": start, "end_position": end}))
  rng = np.random.default_rng(0)
  sk = {"length": frames, "center": rng.normal(0, 10, (frames, 3)).tolist(),
        "skeletons": rng.normal(0, 30, (frames, 23, 3)).tolist()}
  if skeletons is not None:
    sk = skeletons
  sk_dir = root / "v2_test" / name if version == "v2" else d
  sk_dir.mkdir(parents=True, exist_ok=True)
  (sk_dir / "skeletons.json").write_text(json.dumps(sk))
  if audio_s:
    sf.write(d / "audio.wav", _music(audio_s), SR)
  return d


def test_mocap_v2_audio_cut_to_the_dance(tmp_path):
  d = _write_seq(tmp_path, "DANCE_W_1", frames=50, start=10)
  full = _music(4.0)
  seq = readers.read_mocap_sequence(str(d))
  assert seq.pose.shape == (50, 23, 3) and seq.root.shape == (50, 3) and seq.pose.dtype == np.float32
  assert seq.style == 3 and seq.fps == 25.0 and seq.meta["version"] == "v2"
  # frame k <-> audio time (start + k) / 25: the cut starts at 10 / 25 s and lasts 50 / 25 s
  assert seq.sr == SR and seq.wave.shape[0] == 50 * SR // 25
  want = full[10 * SR // 25:(10 + 50) * SR // 25]
  np.testing.assert_allclose(seq.wave, want, atol=1e-3)   # PCM_16 round trip


def test_mocap_v1_is_retimed_to_the_span(tmp_path):
  d = _write_seq(tmp_path, "DANCE_R_99", frames=40, start=0, end=79, version="v1", audio_s=0)
  raw = json.loads((d / "skeletons.json").read_text())
  seq = readers.read_mocap_sequence(str(d))
  assert seq.meta["version"] == "v1" and seq.meta["motion_only"]
  assert seq.pose.shape == (79, 23, 3) and seq.wave is None
  sk = np.asarray(raw["skeletons"], np.float32)
  np.testing.assert_allclose(seq.pose[0], sk[0], rtol=1e-6)
  np.testing.assert_allclose(seq.pose[-1], sk[-1], rtol=1e-6)
  np.testing.assert_allclose(seq.pose[2], 0.5 * (sk[0] + sk[1]) + 0.5 * (sk[1] - sk[0]) * 0.0
                             + (sk[1] - sk[0]) * 0.5, rtol=1e-4, atol=1e-4)   # 39/78 * 2 = 1.0
  assert readers.V2_LENGTHS["DANCE_C_2"] == 1890


@pytest.mark.parametrize("case,word", [
    ("no_config", "missing config.json"), ("wrong_shape", "shape"), ("nan", "NaN"),
    ("missing_key", "missing key"), ("short_audio", "audio shorter than the dance"),
    ("bad_json", "invalid JSON")])
def test_bad_mocap_inputs_name_the_file(tmp_path, case, word):
  kw = {}
  if case == "wrong_shape":
    kw["skeletons"] = {"length": 5, "center": [[0, 0, 0]] * 5, "skeletons": [[[0, 0]] * 23] * 5}
  elif case == "nan":
    kw["skeletons"] = {"length": 5, "center": [[0, 0, 0]] * 5,
                       "skeletons": [[[float("nan"), 0, 0]] * 23] * 5}
  elif case == "missing_key":
    kw["skeletons"] = {"length": 5, "skeletons": [[[0, 0, 0]] * 23] * 5}
  elif case == "short_audio":
    kw["audio_s"] = 1.5          # dance: frames 10..60 = 0.4 s .. 2.4 s; 1.1 s of it has audio
  d = _write_seq(tmp_path, "DANCE_C_3", frames=50 if case == "short_audio" else 5, **kw)
  target = {"no_config": d / "config.json", "short_audio": d / "audio.wav",
            "bad_json": tmp_path / "v2_test" / "DANCE_C_3" / "skeletons.json"}.get(
                case, tmp_path / "v2_test" / "DANCE_C_3" / "skeletons.json")
  if case == "no_config":
    os.remove(d / "config.json")
  if case == "bad_json":
    target.write_text("{not json")
  with pytest.raises(DataError) as e:
    readers.read_mocap_sequence(str(d))
  assert e.value.path == str(target) and word in str(e.value), str(e.value)


def _openpose_frames(folder, n_joints, frames):
  folder.mkdir()
  for i, kp in enumerate(frames):
    people = [] if kp is None else [{"pose_keypoints_2d": kp}]
    (folder / f"f_{i:05d}_keypoints.json").write_text(json.dumps({"people": people}))


@pytest.mark.parametrize("n_joints,kept,name", [(25, 15, "body15"), (18, 14, "coco14")])
def test_openpose_fill_previous_value_counted(tmp_path, n_joints, kept, name):
  def kp(x, conf=1.0, low=()):
    return sum(([x + j, 2 * x + j, 0.1 if j in low else conf] for j in range(n_joints)), [])
  frames = [kp(10.0, low=(3,)), kp(20.0), None, kp(40.0, low=(0, 5)), kp(50.0)]
  _openpose_frames(tmp_path / "hiphop_1", n_joints, frames)
  seq = readers.read_openpose_folder(str(tmp_path / "hiphop_1"), fps=30.0)
  assert seq.skeleton == name and seq.pose.shape == (5, kept, 2)
  assert seq.confidences.shape == (5, kept)
  # joint 3 at frame 0 is low-confidence with no earlier value: takes the first valid (frame 1)
  np.testing.assert_allclose(seq.pose[0, 3], [23.0, 43.0])
  np.testing.assert_allclose(seq.pose[2], seq.pose[1])               # nobody: previous pose
  np.testing.assert_allclose(seq.pose[3, 0], seq.pose[1, 0])         # low conf: previous value
  np.testing.assert_allclose(seq.pose[3, 1], [41.0, 81.0])
  assert seq.meta["empty_frames"] == 1
  assert seq.meta["filled_joints"] == 1 + kept + 2


def test_bad_openpose_inputs(tmp_path):
  _openpose_frames(tmp_path / "a", 25, [[1.0] * 75, [1.0] * 60])
  with pytest.raises(DataError, match="60 values") as e:
    readers.read_openpose_folder(str(tmp_path / "a"))
  assert e.value.path.endswith("f_00001_keypoints.json")
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "x.json").write_text(json.dumps({"version": 1.3}))
  with pytest.raises(DataError, match="missing key 'people'"):
    readers.read_openpose_folder(str(tmp_path / "b"))
  _openpose_frames(tmp_path / "c", 18, [[float("nan")] * 54])
  with pytest.raises(DataError, match="NaN"):
    readers.read_openpose_folder(str(tmp_path / "c"))


def test_npz_reader(tmp_path):
  p = tmp_path / "s.npz"
  np.savez(p, poses=np.ones((7, 15, 2), np.float32), confidences=np.ones((7, 15)))
  seq = readers.read_npz(str(p), fps=30.0)
  assert seq.pose.shape == (7, 15, 2) and seq.skeleton == "body15" and seq.fps == 30.0
  np.savez(tmp_path / "bad.npz", poses=np.ones((7, 15)))
  with pytest.raises(DataError, match="expected"):
    readers.read_npz(str(tmp_path / "bad.npz"))


def test_real_sequence_duration_matches_audio(shared_data_dir):
  from d2m_jax.data import ingest
  seq = readers.read_mocap_sequence(str(shared_data_dir / "DANCE_W_24"))
  start, end = seq.meta["start"], seq.meta["end"]
  audio_s = seq.wave.shape[0] / seq.sr
  assert seq.meta["version"] == "v2" and seq.style == 3
  assert abs(audio_s - (end - start) / 25.0) < 0.05           # audio cut to [start, end] / 25
  assert 0 <= audio_s - seq.num_frames / 25.0 < 1.0            # v2: a few frames short of the span
  # ingest its first 12 s (the whole song would cost ~10 s of test time)
  n = 300
  seq.pose, seq.root, seq.wave = seq.pose[:n], seq.root[:n], seq.wave[:12 * seq.sr]
  arrays = ingest.process_sequence(seq)
  assert arrays["d2m28"].shape == (n, 28) and arrays["mel_tempogram512"].shape == (n, 512)
  assert arrays["waveform16k"].shape == (n * 640,)
  assert 60 < float(arrays["tempo"]) < 200 and 0 < arrays["beats"].max() < n


def test_openpose_source_ingests_and_reports_fills(tmp_path):
  from d2m_jax.data import ingest

  def kp(x, low=()):
    return sum(([x + j, x - j, 0.1 if j in low else 0.9] for j in range(18)), [])
  (tmp_path / "raw").mkdir()
  for name in ("ballet_1", "zumba_1", "zumba_2"):
    _openpose_frames(tmp_path / "raw" / name, 18,
                     [kp(float(i), low=(2,) if i % 5 == 0 else ()) for i in range(130)])
  lines = []
  man = ingest.ingest("openpose", str(tmp_path / "raw"), str(tmp_path / "out"), openpose_fps=15.0,
                      log=lines.append)
  assert man["skeleton"] == "coco14" and man["pose_dim"] == 28 and man["fps"] == 15.0
  assert man["styles"] == ["ballet", "zumba"]
  assert [r["style"] for r in man["sequences"]] == [0, 1, 1]
  assert all(r["filled_joints"] == 26 and not r["has_audio"] for r in man["sequences"])
  assert any("filled 26 joint values" in s for s in lines)
