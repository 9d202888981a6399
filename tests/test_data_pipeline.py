"""Examples, splits, stats and the input pipeline on the tiny synthetic dataset."""
import os
import shutil

import numpy as np
import pytest

from d2m_jax.data import examples, ingest, pipeline
from d2m_jax.data.errors import DataError


def _cfg(base, **kw):
  c = base.copy_and_resolve_references()
  for k, v in kw.items():
    c[k] = v
  return c


def test_split_assignment_is_by_sequence_and_disjoint():
  names = [f"DANCE_{s}_{i}" for s in "CRTW" for i in range(1, 1 + {"C": 5, "R": 7, "T": 1,
                                                                     "W": 27}[s])]
  styles = ["CRTW".index(n[6]) for n in names]
  a = examples.assign_splits(names, styles, seed=0)
  assert set(a) == set(names) and set(a.values()) == {"train", "validation", "test"}
  assert a["DANCE_T_1"] == "train"                       # a single sequence stays in train
  for s in "CRW":                                        # every style with >= 3 seqs is in all 3
    assert {a[n] for n in names if n[6] == s} == {"train", "validation", "test"}
  # adding a sequence does not move the others between splits... of other styles
  b = examples.assign_splits(names + ["DANCE_T_2"], styles + [2], seed=0)
  assert all(a[n] == b[n] for n in names if n[6] != "T")


def test_no_sequence_in_two_splits(tiny_data_cfg):
  for kind in ("windows", "units", "sequences"):
    c = _cfg(tiny_data_cfg, kind=kind)
    loaded = {s: pipeline.load_split(c, s) for s in examples.SPLITS}
    seqs = {s: set(loaded[s]["_seq"]) for s in examples.SPLITS}
    info = pipeline.dataset_info(c)
    assert info["num_examples"] == {s: len(loaded[s]["_seq"]) for s in examples.SPLITS}
    assert all(seqs[s] for s in examples.SPLITS), (kind, seqs)
    assert not (seqs["train"] & seqs["validation"]) and not (seqs["train"] & seqs["test"])
    assert not (seqs["validation"] & seqs["test"])
  man = ingest.read_manifest(pipeline.processed_dir(tiny_data_cfg))
  assert len({r["name"] for r in man["sequences"]}) == len(man["sequences"]) == 12


def test_synthetic_music_tempo_is_recovered(tiny_data_cfg):
  import json
  man = ingest.read_manifest(pipeline.processed_dir(tiny_data_cfg))
  for r in man["sequences"]:
    with open(os.path.join(pipeline.raw_dir(tiny_data_cfg), r["name"], "config.json")) as f:
      bpm = json.load(f)["bpm"]
    assert abs(r["tempo"] - bpm) < 1.0, (r["name"], r["tempo"], bpm)


def test_synthetic_motion_pauses_on_the_music_beats(tiny_data_cfg):
  """Beat alignment (FACT-style, sigma = 3 frames) of kinematic beats (minima of the smoothed
  mean joint speed) with the tracked music beats, against randomly placed beats."""
  from scipy.ndimage import gaussian_filter1d
  from scipy.signal import argrelextrema

  def bas(pose, beats):
    v = gaussian_filter1d(np.linalg.norm(np.diff(pose, axis=0), axis=-1).mean(1), 2)
    kin = argrelextrema(v, np.less)[0]
    return np.mean([np.exp(-np.min((kin - b) ** 2) / 18.0) for b in beats])

  rng = np.random.default_rng(0)
  seqs = ingest.split_sequences(pipeline.processed_dir(tiny_data_cfg), "train")
  for s in seqs:
    rand = np.sort(rng.integers(0, s["pose"].shape[0], s["beats"].shape[0]))
    assert bas(s["pose"], s["beats"]) > bas(s["pose"], rand) + 0.15, s["name"]


def test_stats_come_from_the_train_split_only(tiny_data_cfg):
  st = pipeline.load_stats(tiny_data_cfg)
  pdir = pipeline.processed_dir(tiny_data_cfg)
  train = ingest.split_sequences(pdir, "train")
  poses = np.concatenate([s["pose"].reshape(s["pose"].shape[0], -1) for s in train]).astype(
      np.float64)
  np.testing.assert_allclose(st["pose_mean"], poses.mean(0), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(st["pose_std"], poses.std(0), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(st["pose_max"], poses.max(0), rtol=1e-6)
  d = np.concatenate([s["d2m28"] for s in train]).astype(np.float64)
  np.testing.assert_allclose(st["d2m28_mean"], d.mean(0), rtol=1e-5, atol=1e-5)
  for f in ("fact35", "mfcc20", "mel_tempogram512"):
    assert st[f"{f}_mean"].shape == st[f"{f}_std"].shape and np.all(st[f"{f}_std"] > 0)
  info = pipeline.dataset_info(tiny_data_cfg)
  assert (info["pose_dim"], info["joints"], info["dims"], info["skeleton"], info["fps"]) == (
      69, 23, 3, "mocap23", 25.0)


def test_batches_sharded_over_4_devices(tiny_data_cfg):
  import jax
  assert jax.device_count() == 4
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  want = {"windows": dict(pose=(8, 120, 69), root=(8, 120, 3), style=(8,), d2m28=(8, 120, 28),
                          fact35=(8, 120, 35), mfcc20=(8, 120, 20), beat=(8, 120),
                          waveform=(8, 79360)),
          "units": dict(units=(8, 3, 32, 69), aud=(8, 96, 28), aud_raw=(8, 64, 28), style=(8,))}
  for kind, shapes in want.items():
    c = _cfg(tiny_data_cfg, kind=kind)
    batch = next(pipeline.prefetch_to_device(pipeline.make_iterator(c, "train"), mesh))
    assert {k: v.shape for k, v in batch.items()} == shapes
    for k, v in batch.items():
      assert v.dtype == (np.int32 if k == "style" else np.float32), k
      assert v.sharding.spec == jax.P("data"), k
      assert [s.data.shape[0] for s in v.addressable_shards] == [2, 2, 2, 2], k
  c = _cfg(tiny_data_cfg, kind="sequences", max_frames=200)
  b = next(pipeline.make_iterator(c, "validation", batch_size=4))
  assert b["pose"].shape == (4, 200, 69) and b["mel_tempogram512"].shape == (4, 200, 512)
  assert b["length"].dtype == np.int32 and np.all(b["length"] <= 200)


def test_make_iterator_resumes_exactly(tiny_data_cfg):
  c = _cfg(tiny_data_cfg, kind="units", batch_size=8)
  n = pipeline.load_split(c, "train")["_seq"].shape[0]
  k = 2 * n // 8 + 1                                    # crosses epoch boundaries
  it = pipeline.make_iterator(c, "train")
  full = [next(it) for _ in range(k + 3)]
  resumed = pipeline.make_iterator(c, "train", start_step=k)
  for want in full[k:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  assert not np.array_equal(full[0]["units"], full[1]["units"])
  # one pass without repeat visits every example once (drop_remainder)
  idx = np.concatenate(list(pipeline.batch_schedule(n, 4, seed=0, repeat=False)))
  assert len(set(idx.tolist())) == len(idx) == (n // 4) * 4


def test_units_put_beats_on_frames_3_11_19_27():
  beats = np.array([10, 18, 30, 38, 50])
  t = examples.unit_times(beats)
  np.testing.assert_allclose(t[[3, 11, 19, 27]], beats[:4])
  np.testing.assert_allclose(t[0], 10 - 3 / 8 * 8)
  np.testing.assert_allclose(t[31], 38 + 4 / 8 * 12)


def test_window_waveform_alignment():
  t = 200
  wav = np.arange(t * 640, dtype=np.int64) % 30000
  seq = dict(pose=np.zeros((t, 23, 3), np.float32), root=np.zeros((t, 3)), style=1, has_audio=1,
             beats=np.array([5, 30]), waveform16k=wav.astype(np.int16),
             **{f: np.zeros((t, 8)) for f in examples.WINDOW_FEATURES})
  ws = list(examples.windows(seq, stride=40))
  assert [int(w["start"]) for w in ws] == [0, 40, 80]
  w = ws[1]["waveform"]
  assert w.shape == (79360,) and not w[:1280].any() and not w[-1280:].any()
  k = 7            # frame k's 0.2 s window is waveform[640 k : 640 k + 3200], centred on it
  np.testing.assert_array_equal(w[640 * k + 1280:640 * k + 1280 + 640],
                                wav[(40 + k) * 640:(41 + k) * 640])
  assert ws[0]["beat"][5] == 1 and ws[0]["beat"].sum() == 2


def test_ingest_skip_reports_and_fail_leaves_nothing(tiny_data_cfg, tmp_path):
  raw = pipeline.raw_dir(tiny_data_cfg)
  bad = tmp_path / "raw"
  for name in ("DANCE_C_1", "DANCE_R_1"):
    shutil.copytree(os.path.join(raw, name), bad / name)
    shutil.copytree(os.path.join(raw, "v2_synthetic", name), bad / "v2_synthetic" / name)
  os.remove(bad / "DANCE_R_1" / "config.json")
  out = tmp_path / "processed"
  with pytest.raises(DataError, match="missing config.json") as e:
    ingest.ingest("music_to_dance", str(bad), str(out), log=lambda s: None)
  assert e.value.path == str(bad / "DANCE_R_1" / "config.json")
  assert not out.exists() and os.listdir(tmp_path) == ["raw"]     # nothing half-written
  lines = []
  man = ingest.ingest("music_to_dance", str(bad), str(out), on_error="skip", log=lines.append)
  assert [s["name"] for s in man["skipped"]] == ["DANCE_R_1"]
  assert any("SKIPPED DANCE_R_1" in s for s in lines)
  assert [r["name"] for r in man["sequences"]] == ["DANCE_C_1"]
  assert sorted(os.listdir(out / "seq")) == ["DANCE_C_1.npz"] and (out / "stats.npz").exists()


def test_every_raw_folder_is_accounted_for(tiny_data_cfg, tmp_path):
  """Folders that do not match the layout are listed as skipped, with the reason (issue 26)."""
  raw = pipeline.raw_dir(tiny_data_cfg)
  root = tmp_path / "raw"
  shutil.copytree(os.path.join(raw, "DANCE_C_1"), root / "DANCE_C_1")
  shutil.copytree(os.path.join(raw, "v2_synthetic", "DANCE_C_1"),
                  root / "v2_synthetic" / "DANCE_C_1")
  shutil.copytree(os.path.join(raw, "DANCE_R_1"), root / "dance_r_1")   # wrongly named
  (root / "notes").mkdir()
  (root / "README.txt").write_text("files are not sequence folders\n")
  lines = []
  man = ingest.ingest("music_to_dance", str(root), str(tmp_path / "out"), log=lines.append)
  assert [r["name"] for r in man["sequences"]] == ["DANCE_C_1"]
  skipped = {s["name"]: s["problem"] for s in man["skipped"]}
  assert sorted(skipped) == ["dance_r_1", "notes"]
  assert skipped["dance_r_1"].endswith("rename it DANCE_R_1 (names are case-sensitive)")
  assert skipped["notes"].startswith("folder name is not DANCE_<C|R|T|W>_<n>")
  assert any(ln.startswith(f"SKIPPED dance_r_1: {root / 'dance_r_1'}: folder name") for ln in lines)
  assert lines[-1].endswith("skipped 2")
