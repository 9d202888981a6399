"""Portable training data (launch/export_data.py, data.portable) and training without TensorFlow."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from d2m_jax.data import pipeline, portable
from d2m_jax.data.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Makes TensorFlow, TFDS and librosa absent for a child interpreter: `import x` raises
# ModuleNotFoundError and importlib.util.find_spec(x) is None, as on a machine without them.
BLOCKER = """import sys
for _name in ("tensorflow", "tensorflow_datasets", "librosa"):
  sys.modules[_name] = None
"""


def _cfg(base, **kw):
  c = base.copy_and_resolve_references()
  for k, v in kw.items():
    c[k] = v
  return c


def _export(cfg, path, keys, f16_tol):
  return portable.export(pipeline.processed_dir(cfg), str(path), kind=pipeline._tfds_kind(cfg),
                         keys=keys, f16_tol=f16_tol, log=lambda s: None)


def test_float32_export_gives_the_tfdata_batches(tiny_data_cfg, tmp_path):
  for kind, keys in (("units", ("units", "aud", "aud_raw", "style")),
                     ("sequences", pipeline.BATCH_KEYS["sequences"])):
    tf_cfg = _cfg(tiny_data_cfg, kind=kind, loader="tfdata", max_frames=150)
    path = tmp_path / f"{kind}.npz"
    info = _export(tf_cfg, path, keys, f16_tol=0.0)
    assert set(info["arrays"]["dtypes"].values()) <= {"float32"}
    pcfg = _cfg(tf_cfg, loader="numpy", portable=str(path), data_dir=str(tmp_path / "none"))
    for st, sp in zip(pipeline.make_iterator(tf_cfg, "train", start_step=3),
                      pipeline.make_iterator(pcfg, "train", start_step=3)):
      assert sorted(st) == sorted(sp)
      for k in st:
        np.testing.assert_array_equal(st[k], sp[k], err_msg=k)
      break
    for k, v in pipeline.load_stats(tf_cfg).items():
      np.testing.assert_array_equal(pipeline.load_stats(pcfg)[k], v)
    assert pipeline.dataset_info(pcfg)["num_examples"] == pipeline.dataset_info(tf_cfg)[
        "num_examples"]


def test_float16_export_is_within_its_tolerance_and_only_has_the_keys(tiny_data_cfg, tmp_path):
  cfg = _cfg(tiny_data_cfg, kind="units", loader="numpy")
  path = tmp_path / "f16.npz"
  info = _export(cfg, path, ("units", "style"), f16_tol=1e-2)
  assert info["arrays"]["dtypes"] == {"pose": "float16"}          # aud/aud_raw not read
  assert 0 < info["arrays"]["f16_max_error_over_std"]["pose"] <= 1e-2
  pcfg = _cfg(cfg, portable=str(path))
  full, part = pipeline.load_split(cfg, "train"), pipeline.load_split(pcfg, "train")
  assert sorted(part) == ["_seq", "style", "units"]
  np.testing.assert_array_equal(part["style"], full["style"])
  std = pipeline.load_stats(cfg)["pose_std"]
  # units interpolate between two frames: the error is at most the frames' error
  err = np.max(np.abs(part["units"] - full["units"]) / std)
  assert 0 < err <= info["arrays"]["f16_max_error_over_std"]["pose"] * (1 + 1e-3)
  # a pure function: the file round-trips x -> f16(x - mean) + mean
  x = np.array([[100.0, -3.0]], np.float32)
  mean = np.array([99.0, 0.0], np.float32)
  np.testing.assert_allclose(portable.from_f16(portable.to_f16(x, mean), mean), x,
                             rtol=0, atol=2e-3)
  with pytest.raises(DataError, match="exported for kind units"):
    pipeline.load_split(_cfg(pcfg, kind="sequences"), "train")
  with pytest.raises(DataError, match="not found"):
    pipeline.load_stats(_cfg(pcfg, portable=str(tmp_path / "missing.npz")))


def test_read_batch_keys_of_the_style_classifier():
  from configs import style_paper
  from d2m_jax.tasks import get_task
  from d2m_jax.train import batch_keys
  config = style_paper.get_config()
  task = get_task(config)
  batch = task.synthetic_batch(4, np.random.default_rng(0))
  stats = {f"{k}_{s}": np.zeros(d, np.float32) + (s == "std") for k, d in
           (("pose", 69), ("root", 3), ("d2m28", 28), ("fact35", 35), ("mfcc20", 20),
            ("mel_tempogram512", 512)) for s in ("mean", "std", "min", "max")}
  assert batch_keys.read_batch_keys(task, batch, stats) == ("d2m28", "style")


def _run(args, env_extra, tmp_path, timeout=600):
  block = tmp_path / "no_tf"
  block.mkdir(exist_ok=True)
  (block / "sitecustomize.py").write_text(BLOCKER)
  env = dict(os.environ, PYTHONPATH=f"{block}{os.pathsep}{REPO}", JAX_PLATFORMS="cpu",
             **env_extra)
  return subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _tiny_flags(cfg):
  return [f"--config.data.{k}={cfg[k]}" for k in ("data_dir", "synthetic_sequences_per_style",
                                                   "synthetic_seconds", "synthetic_seed")]


def test_training_runs_without_tensorflow(tiny_data_cfg, tmp_path):
  """launch/train.py with tensorflow, tensorflow_datasets and librosa unimportable: the style
  classifier from the processed data, then export_data.py + a small Dancing2Music decomposition
  trained from the portable file alone (data_dir pointing nowhere)."""
  common = ["--config.num_train_steps=3", "--config.log_every_steps=1",
            "--config.eval_every_steps=0", "--config.checkpoint_every_steps=0",
            "--config.data.batch_size=8", "--config.data.eval_batch_size=8"]
  wd = tmp_path / "style"
  r = _run(["launch/train.py", "--config=configs/style_paper.py", f"--workdir={wd}"] + common
           + _tiny_flags(tiny_data_cfg), {}, tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "using the numpy loader" in r.stderr
  assert "TensorBoard writer unavailable" in r.stdout
  rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  assert [r_["step"] for r_ in rows if "train/loss" in r_] == [1, 2, 3]
  assert np.isfinite([r_["train/loss"] for r_ in rows if "train/loss" in r_]).all()

  out = tmp_path / "units.npz"
  small = ["--config.model.hidden=32", "--config.model.z_mov=16", "--config.model.init_hidden=16",
           "--config.model.units_per_example=1"]
  r = _run(["launch/export_data.py", "--config=configs/d2m_decomposition.py", f"--out={out}"]
           + _tiny_flags(tiny_data_cfg), {}, tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "exporting batch keys ['units']" in r.stdout and out.exists()
  wd = tmp_path / "d2m"
  elsewhere = [f for f in _tiny_flags(tiny_data_cfg) if "data_dir" not in f]
  r = _run(["launch/train.py", "--config=configs/d2m_decomposition.py", f"--workdir={wd}",
            f"--config.data.portable={out}", f"--config.data.data_dir={tmp_path / 'nothing'}"]
           + common + small + elsewhere, {}, tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  assert not (tmp_path / "nothing").exists()
  rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  assert len([r_ for r_ in rows if "train/loss" in r_]) == 3
  assert os.listdir(wd / "checkpoints")


def test_evaluate_from_processed_features_without_tensorflow(shared_data_dir, tmp_path):
  """launch/evaluate.py with TF/TFDS/librosa absent reads the preprocessed real dataset; its
  pose-only metrics equal those of the raw-data path (same splits, sequences and poses)."""
  from d2m_jax.data import ingest
  from d2m_jax.metrics import evaluation as ev
  from d2m_jax.train.defaults import data_config
  cfg = data_config()
  cfg.source = "music_to_dance"
  if not os.path.exists(os.path.join(pipeline.processed_dir(cfg), "manifest.json")):
    pytest.skip("the real dataset is not preprocessed (launch/preprocess.py --source="
                "music_to_dance)")
  r = _run(["launch/evaluate.py", f"--out_dir={tmp_path / 'ev'}", f"--raw_dir={shared_data_dir}",
            "--nocompilation_cache"], {}, tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.load(open(tmp_path / "ev" / "eval.json"))["rows"]["real test (real-vs-real)"]
  with_audio = {x["name"] for x in ingest.read_manifest(pipeline.processed_dir(cfg))["sequences"]
                if x["has_audio"]}
  data = ev.load_real_sequences(str(shared_data_dir), audio_splits=(), log=lambda s: None)
  train, test = data["train"], [s for s in data["test"] if s.name in with_audio]
  ref = ev.clip_features([s.pose for s in train], train, roots=[s.root for s in train])
  real = ev.clip_features([s.pose for s in test], test, roots=[s.root for s in test])
  want = ev.row_metrics(real, ref)
  for k in ("clips", "FID_k", "Div_k", "FID_g", "Div_g", "FID_k_aist", "Div_k_aist"):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)
