"""launch/evaluate.py --test_raw_dir / --style_model: music-style scores checked by hand, the
style-model interface against the task's own eval step, and end-to-end runs on procedurally made
and (when present) real raw-layout folders."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from d2m_jax.data import example_source, readers, synthetic
from d2m_jax.metrics import style_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(os.path.dirname(ROOT), "shared", "data", "music_to_dance")
NAMES = ["C", "R", "T", "W"]


# --------------------------------------------------------------------- metrics, by hand ---

def test_confusion_recall_balanced_accuracy_hand_computed():
  labels = np.array([0, 0, 0, 0, 1, 1, 3, 3, 3, 3, 3, 3])
  preds = np.array([0, 0, 1, 3, 1, 0, 3, 3, 3, 3, 3, 0])
  conf = style_eval.confusion_matrix(labels, preds, 4)
  np.testing.assert_array_equal(conf, [[2, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 5]])
  rec = style_eval.per_class_recall(conf)
  np.testing.assert_allclose(rec[[0, 1, 3]], [2 / 4, 1 / 2, 5 / 6])
  assert np.isnan(rec[2])                        # no tango clip: left out, not counted as 0
  assert style_eval.balanced_accuracy(conf) == pytest.approx((0.5 + 0.5 + 5 / 6) / 3)
  # plain clip accuracy differs: 8 / 12
  assert np.trace(conf) / conf.sum() == pytest.approx(8 / 12)


def test_majority_vote_counts_then_summed_log_softmax_on_ties():
  assert style_eval.majority_vote(np.zeros((0, 4))) is None
  clear = np.array([[5.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0, 9.0]])
  assert style_eval.majority_vote(clear) == 3            # 2 votes W vs 1 vote C
  # 1 vote each for C and R: C's clip is confident (log-softmax sum favours C), R's is not.
  tie = np.array([[4.0, 0.0, 0.0, 0.0], [0.0, 0.1, 0.0, 0.0]])
  ls = tie - np.log(np.exp(tie).sum(1, keepdims=True))
  assert ls[:, 0].sum() > ls[:, 1].sum()                 # the hand check of the tie-break
  assert style_eval.majority_vote(tie) == 0
  assert style_eval.majority_vote(tie[:, [1, 0, 2, 3]]) == 1


def test_style_report_keys_and_values():
  seqs = [("DANCE_C_1", 0, np.array([[3.0, 0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 3.0]])),
          ("DANCE_W_1", 3, np.array([[0, 0, 0, 3.0], [3.0, 0, 0, 0]])),       # tie W/C: 1-1
          ("DANCE_W_2", 3, np.array([[0, 0, 0, 3.0]])),
          ("DANCE_R_1", 1, np.zeros((0, 4)))]                                # too short
  r = style_eval.style_report(seqs, NAMES)
  assert r["clips"] == 6 and r["sequences"] == 3
  assert r["confusion"] == [[2, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 2]]
  assert r["clip_accuracy"] == pytest.approx(4 / 6)
  assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
  # votes: C_1 -> C (right); W_1 tie, equal confidence -> lowest index C (wrong); W_2 -> W
  assert r["sequence_accuracy"] == pytest.approx(2 / 3)
  assert r["per_class"]["W"] == dict(recall=pytest.approx(2 / 3), clips=3, sequences=2,
                                     sequences_right=1)
  assert r["per_class"]["R"]["recall"] is None and r["sequences_without_clips"] == ["DANCE_R_1"]
  json.dumps(r)                                           # eval.json-serialisable as is
  assert "| style model |" in style_eval.markdown_table({"m": r})


# ----------------------------------------------------------------- the task interface ---

def _style_task():
  from configs import style_paper
  from d2m_jax.tasks import get_task
  cfg = style_paper.get_config()
  return cfg, get_task(cfg)


def test_style_task_predict_clip_logits_equals_its_eval_windows(monkeypatch):
  from d2m_jax.tasks import style as style_task
  monkeypatch.setattr(style_task, "PREDICT_BATCH", 4)     # 7 windows: two padded batches
  cfg, task = _style_task()
  rng = np.random.default_rng(0)
  stats = {"d2m28_mean": rng.normal(size=28).astype(np.float32),
           "d2m28_std": rng.uniform(0.5, 2, 28).astype(np.float32)}
  state = task.init_state(jax.random.PRNGKey(0), task.synthetic_batch(2, rng), stats)
  T = 120 + 30 * 6 + 7
  seq = dict(name="DANCE_C_99", style=np.int32(0), has_audio=np.int32(1), fps=np.float32(25),
             pose=np.zeros((T, 23, 3), np.float32), root=np.zeros((T, 3), np.float32),
             beats=np.arange(0, T, 12), waveform16k=np.zeros((0,), np.int16))
  for f, d in (("d2m28", 28), ("fact35", 35), ("mfcc20", 20), ("mel_tempogram512", 512)):
    seq[f] = rng.normal(size=(T, d)).astype(np.float32)
  got = task.predict_clip_logits(state, {k: v for k, v in seq.items() if k != "style"})
  # the pipeline's own eval windows of this sequence (example_source), through the task's
  # logits (the function its eval_step takes the argmax of)
  rows = list(example_source.sequence_examples(seq, "windows_nowave", "music_to_dance"))
  assert got.shape == (len(rows), 4) == (7, 4)
  want = np.asarray(jax.jit(task.logits)(state, np.stack([r["d2m28"] for r in rows])))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert task.predict_clip_logits(state, {"d2m28": seq["d2m28"][:100]}).shape == (0, 4)


# --------------------------------------------------------------------- end to end ---

def _save_workdir(path, cfg, task):
  """A restorable workdir with an untrained state (config.json + checkpoint at step 0)."""
  from d2m_jax.train import checkpoint as ckpt
  stats = ckpt._dummy_stats(task, cfg)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  state = task.init_state(jax.random.PRNGKey(0), task.synthetic_batch(2, rng), stats)
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(cfg.to_json())
  c = ckpt.Checkpointer(str(path), async_save=False)
  c.save(0, state, {"step": 0})
  c.close()
  return str(path)


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "evaluate.py"), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


REAL_COPIES = (("DANCE_C_2", "DANCE_C_902"), ("DANCE_T_5", "DANCE_T_905"))


@pytest.fixture(scope="module")
def synthetic_dirs(tmp_path_factory):
  """Reference: 1 procedural sequence per style (all train); test: 1 per style, other seed, 11 s,
  the waltz's skeleton removed (music only); plus, when the real data is here, two real folders
  cut to 12 s: a cha-cha with its v1 skeleton and the tango whose skeleton lives only in v2_*/
  (not copied): music only."""
  base = tmp_path_factory.mktemp("unseen")
  ref, test = str(base / "ref"), str(base / "test")
  synthetic.generate_dataset(ref, sequences_per_style=1, seconds=11.0, seed=1)
  synthetic.generate_dataset(test, sequences_per_style=1, seconds=11.0, seed=2)
  shutil.rmtree(os.path.join(test, "v2_synthetic", "DANCE_W_1"))
  if os.path.isdir(REAL):
    for src, dst in REAL_COPIES:
      shutil.copytree(os.path.join(REAL, src), os.path.join(test, dst))
      path = os.path.join(test, dst, "config.json")
      cfg = json.load(open(path))
      cfg["end_position"] = cfg["start_position"] + 300
      with open(path, "w") as f:
        json.dump(cfg, f)
  return ref, test


@pytest.fixture(scope="module")
def evaluated(synthetic_dirs, tmp_path_factory):
  """One launcher run: an (untrained) Kakashi generator and a style_paper model, twice named."""
  from configs import kakashi
  from d2m_jax.tasks import get_task
  ref, test = synthetic_dirs
  tmp = tmp_path_factory.mktemp("workdirs")
  cfg, task = _style_task()
  style_wd = _save_workdir(tmp / "style", cfg, task)
  kcfg = kakashi.get_config()
  gen_wd = _save_workdir(tmp / "kakashi", kcfg, get_task(kcfg))
  out = tmp / "eval"
  r = _run(f"--out_dir={out}", f"--raw_dir={ref}", f"--test_raw_dir={test}",
           f"--model=kak={gen_wd}", f"--style_model={style_wd}", "--style_model=b=" + style_wd)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.load(open(out / "eval.json")), open(out / "eval.md").read()


def test_music_only_folder_reads_audio_and_span(synthetic_dirs):
  _, test = synthetic_dirs
  d = os.path.join(test, "DANCE_W_1")
  assert not readers.has_mocap_skeleton(d) and readers.has_mocap_skeleton(
      os.path.join(test, "DANCE_C_1"))
  seq = readers.read_music_only_sequence(d)
  cfg = json.load(open(os.path.join(d, "config.json")))
  assert seq.num_frames == cfg["end_position"] - cfg["start_position"] == 275
  assert seq.meta["music_only"] and seq.style == 3 and not np.any(seq.pose)
  assert seq.wave.shape[0] == pytest.approx(275 / 25 * seq.sr, abs=1)


def test_evaluate_test_raw_dir_generator_and_style_model(evaluated):
  res, md = evaluated
  synth = ["DANCE_C_1", "DANCE_R_1", "DANCE_T_1", "DANCE_W_1"]
  # generator table: the real row has the sequences with motion, the model all with audio
  # (11 s = one 250-frame clip each); both kinetic conventions present
  assert [n for n in res["protocol"]["test_sequences"] if n in synth] == synth[:3]
  assert [n for n in res["protocol"]["generation_sequences"] if n in synth] == synth
  real, kak = res["rows"]["real test (real-vs-real)"], res["rows"]["kak"]
  assert kak["clips"] == real["clips"] + 1 + (1 if os.path.isdir(REAL) else 0)
  for row in (real, kak):
    assert all(np.isfinite(row[k]) for k in ("FID_k", "Div_k", "FID_k_aist", "Div_k_aist"))
  # music style: every sequence with audio (music-only waltz included);
  # (275 - 120) // 30 + 1 = 6 clips per synthetic sequence
  ms = res["music_style"]
  assert set(ms) == {"style", "b"} and ms["style"]["confusion"] == ms["b"]["confusion"]
  rep = ms["style"]
  per_seq = {s["name"]: s for s in rep["per_sequence"]}
  assert all(per_seq[n]["clips"] == 6 for n in synth)
  assert per_seq["DANCE_W_1"]["label"] == "W" and rep["per_class"]["W"]["clips"] == 6
  conf = np.array(rep["confusion"])
  assert conf.sum() == rep["clips"] == sum(s["clips"] for s in rep["per_sequence"])
  assert rep["clip_accuracy"] == pytest.approx(np.trace(conf) / conf.sum())
  rec = [rep["per_class"][c]["recall"] for c in NAMES if rep["per_class"][c]["clips"]]
  assert rep["balanced_accuracy"] == pytest.approx(np.mean(rec))
  assert rep["sequence_accuracy"] == pytest.approx(
      np.mean([s["vote"] == s["label"] for s in rep["per_sequence"]]))
  assert rep["step"] == 0 and rep["config_task"] == "style"
  assert "## Music style" in md and "FID_k (AIST++ conv.)" in md


@pytest.mark.skipif(not os.path.isdir(REAL), reason="real Music-to-Dance data not present")
def test_evaluate_real_folders_music_only_tango_counts_for_style(evaluated):
  res, _ = evaluated
  assert "DANCE_C_902" in res["protocol"]["test_sequences"]          # motion + audio
  assert "DANCE_T_905" not in res["protocol"]["test_sequences"]      # music only
  assert "DANCE_T_905" in res["protocol"]["generation_sequences"]
  per_seq = {s["name"]: s for s in res["music_style"]["style"]["per_sequence"]}
  assert per_seq["DANCE_C_902"]["clips"] == per_seq["DANCE_T_905"]["clips"] == 7   # 300 frames
  assert per_seq["DANCE_T_905"]["label"] == "T"


def test_evaluate_bad_test_dir_one_line_and_no_output(synthetic_dirs, tmp_path):
  ref, _ = synthetic_dirs
  bad = tmp_path / "bad" / "DANCE_C_1"
  os.makedirs(bad)
  (bad / "config.json").write_text("{not json")
  (bad / "audio.wav").write_bytes(b"")
  out = tmp_path / "eval"
  r = _run(f"--out_dir={out}", f"--raw_dir={ref}", f"--test_raw_dir={bad.parent}")
  assert r.returncode == 2
  assert "config.json" in r.stderr and "invalid JSON" in r.stderr
  assert not out.exists()
