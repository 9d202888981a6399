"""Evaluation from a portable export: ``launch/export_data.py --for_eval`` (``portable.export``'s
``eval_arrays``), the ``dance_metrics`` evaluator and ``launch/evaluate.py --portable`` reading
``config.data.portable``, on the tiny synthetic dataset. A float32 export must give exactly the
processed dataset's evaluation inputs and metrics; a float16 one values within its recorded
error; an export without the evaluation arrays one error line naming the file and the remedy."""
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from d2m_jax import generate
from d2m_jax.data import pipeline, portable, tempo
from d2m_jax.data.errors import DataError
from d2m_jax.metrics import evaluation as ev
from d2m_jax.train import evaluators
from import_blocker import write_blocker
from test_dance_metrics_eval import _CopyTask

REPO = pathlib.Path(__file__).resolve().parents[1]
EVAL_ARRAYS = portable.METRIC_ARRAYS + ("d2m28",)     # what d2m_composition's --for_eval adds


@pytest.fixture(scope="module")
def exports(tiny_data_cfg, tmp_path_factory):
  """{float32, float16, bare}: the composition's batch keys, the first two with the
  evaluation arrays (exact / float16 under the 1 % rule), the last without."""
  folder = tmp_path_factory.mktemp("portable_eval")
  pdir = pipeline.processed_dir(tiny_data_cfg)
  out = {}
  for name, tol, extra in (("float32", 0.0, EVAL_ARRAYS), ("float16", 1e-2, EVAL_ARRAYS),
                           ("bare", 1e-2, ())):
    path = str(folder / f"{name}.npz")
    portable.export(pdir, path, kind="units", keys=("units", "aud", "aud_raw"), f16_tol=tol,
                    eval_arrays=extra, log=lambda s: None)
    out[name] = path
  return out


def _with_portable(data_cfg, path):
  c = data_cfg.copy_and_resolve_references()
  c.portable = path
  return c


def test_float32_export_gives_the_processed_evaluation_inputs(tiny_data_cfg, exports):
  want = ev.metric_inputs(tiny_data_cfg, "test", ("d2m28",))
  got = ev.metric_inputs(_with_portable(tiny_data_cfg, exports["float32"]), "test", ("d2m28",))
  assert len(want.seqs) == 4 and len(want.train) == 4          # one per style and split
  for a, b in zip(want.train + want.seqs, got.train + got.seqs, strict=True):
    assert (a.name, a.style) == (b.name, b.style)
    for k in ("pose", "root", "beats"):
      np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{a.name} {k}")
  for a, b in zip(want.musics, got.musics, strict=True):
    assert (a.num_frames, a.fps, a.sr) == (b.num_frames, b.fps, b.sr)
    assert a.tempo_bpm == pytest.approx(b.tempo_bpm, rel=1e-6) and a.tempo_bpm > 0
    np.testing.assert_array_equal(a.beats, b.beats)
    np.testing.assert_array_equal(a.feats["d2m28"], b.feats["d2m28"])

  # float16: every pose value within the error the file records (a fraction of the train
  # std); the root trajectory (PFC reads its accelerations) stays exact
  f16 = portable.PortableData(exports["float16"])
  assert f16.info["eval_arrays"] == sorted(EVAL_ARRAYS)
  assert f16.dtypes == {"pose": "float16", "d2m28": "float16", "root": "float32"}
  half = ev.metric_inputs(_with_portable(tiny_data_cfg, exports["float16"]), "test", ("d2m28",))
  std = pipeline.load_stats(tiny_data_cfg)["pose_std"].reshape(-1, 3)
  err = max(np.max(np.abs(a.pose - b.pose) / std) for a, b in zip(want.train + want.seqs,
                                                                  half.train + half.seqs))
  assert 0 < err <= f16.info["arrays"]["f16_max_error_over_std"]["pose"] * (1 + 1e-6)
  for a, b in zip(want.train + want.seqs, half.train + half.seqs):
    np.testing.assert_array_equal(a.root, b.root)


def test_dance_metrics_evaluator_reads_the_portable_file(tiny_data_cfg, exports):
  spec = ml_collections.ConfigDict(dict(kind="dance_metrics", split="test"))
  items = ev.split_items(tiny_data_cfg, "test")
  out = {}
  for name, data in (("processed", tiny_data_cfg),
                     ("portable", _with_portable(tiny_data_cfg, exports["float32"]))):
    config = ml_collections.ConfigDict(dict(data=data))
    ctx = evaluators.EvalContext(config, _CopyTask(items, 0.5), dp=None, batches=None)
    out[name] = evaluators.run("paper", spec, ctx, state=None)
    out[name].pop("seconds")
  assert sorted(out["portable"]) == sorted(out["processed"])
  for k, v in out["processed"].items():
    np.testing.assert_allclose(out["portable"][k], v, rtol=1e-12, err_msg=k)
  assert {"FID_k", "FID_g", "Div_k", "Div_g", "BAS", "real_FID_k", "real_PFC"} <= set(
      out["portable"])

  config = ml_collections.ConfigDict(dict(data=_with_portable(tiny_data_cfg, exports["bare"])))
  ctx = evaluators.EvalContext(config, _CopyTask(items, 0.5), dp=None, batches=None)
  with pytest.raises(DataError) as e:
    evaluators.run("paper", spec, ctx, state=None)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(exports["bare"])
  assert "root" in msg and "launch/export_data.py --for_eval" in msg


def _evaluate(args, tmp_path):
  block = write_blocker(tmp_path / "block", ("tensorflow", "tensorflow_datasets", "librosa",
                                             "soundfile", "clu"))
  env = dict(os.environ, PYTHONPATH=f"{block}{os.pathsep}{REPO}", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "launch/evaluate.py", "--nocompilation_cache"] + args,
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_evaluate_launcher_from_portable_data(tiny_data_cfg, exports, tmp_path):
  """``launch/evaluate.py --portable`` without TF/librosa/soundfile: the real-vs-real row of a
  float32 export equals the processed dataset's; a bare export exits 2 with one line."""
  r = _evaluate([f"--portable={exports['bare']}", f"--out_dir={tmp_path / 'bare'}"], tmp_path)
  assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
  err = [line for line in r.stderr.splitlines() if line.startswith("error")]
  assert len(err) == 1 and exports["bare"] in err[0], r.stderr[-2000:]
  assert "launch/export_data.py --for_eval" in err[0] and "Traceback" not in r.stderr
  assert not (tmp_path / "bare" / "eval.json").exists()

  r = _evaluate([f"--portable={exports['float32']}", f"--out_dir={tmp_path / 'ok'}"], tmp_path)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  got = json.loads((tmp_path / "ok" / "eval.json").read_text())
  row = got["rows"]["real test (real-vs-real)"]
  inputs = ev.metric_inputs(tiny_data_cfg, "test")
  ref = ev.clip_features([s.pose for s in inputs.train], inputs.train,
                         roots=[s.root for s in inputs.train])
  want = ev.row_metrics(ev.clip_features([s.pose for s in inputs.seqs], inputs.seqs,
                                         roots=[s.root for s in inputs.seqs]), ref)
  for k in ("clips", "FID_k", "FID_g", "Div_k", "Div_g", "BAS", "PFC"):
    np.testing.assert_allclose(row[k], want[k], rtol=1e-9, err_msg=k)
  assert got["protocol"]["test_sequences"] == [s.name for s in inputs.seqs]


def test_tempo_from_beats_when_a_sequence_has_none():
  beats = np.arange(3, 250, 12)               # a beat every 12 frames at 25 fps: 125 BPM
  assert tempo.tempo_from_beats(beats, 25.0) == pytest.approx(125.0, rel=1e-12)
  assert tempo.tempo_from_beats(beats[:1], 25.0) == 0.0
  seq = dict(name="s", pose=np.zeros((250, 23, 3), np.float32), fps=np.float32(25.0),
             beats=beats, d2m28=np.ones((250, 28), np.float32))
  music = generate.music_from_processed(seq, ("d2m28",))
  assert music.tempo_bpm == pytest.approx(125.0) and music.num_frames == 250
  assert generate.music_from_processed(dict(seq, tempo=np.float32(90.0)),
                                       ("d2m28",)).tempo_bpm == 90.0


def test_add_evals_keeps_the_historical_pair_and_names_bad_specs():
  config = ml_collections.ConfigDict(dict(eval_every_steps=7, eval_split="validation",
                                          final_eval_splits=("validation", "test"),
                                          evals=ml_collections.ConfigDict()))
  config.lock()
  assert evaluators.add_evals(config, ["paper,dance_metrics,test,0"]) == ["paper"]
  got = {n: s.to_dict() for n, s in evaluators.specs(config).items()}
  assert got == {
      "validation": dict(kind="task_eval", every_steps=7, split="validation", final=True),
      "test": dict(kind="task_eval", every_steps=0, split="test", final=True),
      "paper": dict(kind="dance_metrics", every_steps=0, split="test", final=True)}
  for bad, why in (("paper,dance_metrics,test", "NAME,KIND,SPLIT,EVERY_STEPS"),
                   ("paper,dance_metrics,test,often", "NAME,KIND,SPLIT,EVERY_STEPS"),
                   ("paper,no_such_kind,test,0", "no_such_kind")):
    with pytest.raises(ValueError, match=why) as e:
      evaluators.add_evals(config, [bad])
    assert str(e.value).startswith(f"--add_eval={bad!r}")


def test_set_generation_takes_each_fields_type_and_names_bad_settings():
  """``--set_gen=model.gen_KEY=VALUE`` (launch/evaluate.py --evals_of): the composition's
  generation settings change with their own types; other keys and bad values are refused."""
  from d2m_jax import configs
  config = configs.module("d2m_composition").get_config("cpu")
  got = evaluators.set_generation(config, [
      "model.gen_style_mode=sliding", "model.gen_max_tries=5",
      "model.gen_static_percentile=25", "model.gen_init_pose=mean"])
  assert got == {"model.gen_style_mode": "sliding", "model.gen_max_tries": 5,
                 "model.gen_static_percentile": 25.0, "model.gen_init_pose": "mean"}
  m = config.model
  assert (m.gen_style_mode, m.gen_max_tries, m.gen_static_percentile, m.gen_init_pose) == (
      "sliding", 5, 25.0, "mean")
  assert isinstance(m.gen_max_tries, int) and isinstance(m.gen_static_percentile, float)
  assert evaluators.set_generation(config, []) == {}
  for bad, why in (("model.hidden=3", "gen_max_tries"), ("model.gen_nope=1", "expected"),
                   ("model.gen_max_tries", "expected"),
                   ("model.gen_max_tries=many", "does not parse as int")):
    with pytest.raises(ValueError, match=why) as e:
      evaluators.set_generation(config, [bad])
    assert str(e.value).startswith(f"--set_gen={bad!r}")
