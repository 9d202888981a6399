"""Ordinary mistakes at the launchers end in one ``error:`` line, a non-zero exit and nothing
written (issue 26 item 4). One test starts every case as its own process at once (each costs a
few seconds of imports; they overlap) and then checks each: exit code, the one line on stderr
(no traceback), and what is on disk afterwards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _fake_workdir(path, task):
  """What the read-only tools check first: config.json of ``task`` and a checkpoint folder."""
  os.makedirs(os.path.join(path, "checkpoints", "2"))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"task": task}, f)
  return str(path)


def _launch(script, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("D2M_TRACEBACK", None)
  return subprocess.Popen([PY, os.path.join(REPO, "launch", script), *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=REPO)


def _error_line(stderr):
  lines = [ln for ln in stderr.splitlines() if ln.strip()]
  errors = [ln for ln in lines if ln.startswith("error: ")]
  assert "Traceback" not in stderr, stderr
  assert len(errors) == 1 and lines[-1] == errors[0], stderr
  return errors[0]


def test_every_ordinary_mistake_is_one_line(tmp_path):
  t = tmp_path
  a_file = t / "a_file"
  a_file.write_text("not a folder\n")
  empty = t / "empty"
  empty.mkdir()
  style_wd = _fake_workdir(t / "style_wd", "style")
  gen_wd = _fake_workdir(t / "gen_wd", "wgan_audio")
  out_dir = t / "out_dir"
  out_dir.mkdir()
  song = t / "song.wav"
  import numpy as np  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  sf.write(str(song), (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32), 16000)
  locked = t / "locked"
  locked.mkdir()
  holder = subprocess.Popen(
      [PY, "-c", "import sys, time; from d2m_jax.train.workdir import WorkdirLock; "
       "l = WorkdirLock(sys.argv[1]); print('locked', flush=True); time.sleep(300)", str(locked)],
      stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  try:
    assert holder.stdout.readline().strip() == "locked"
    style = ["--config=configs/style_paper.py"]
    cases = {  # name: (process, exit code, text the line must hold)
        "unknown_key": (_launch("train.py", *style, "--config.optim.lrr=1",
                                f"--workdir={t / 'w1'}"), 2,
                        "--config.optim.lrr: unknown config key config.optim.lrr; did you mean "
                        "config.optim.lr?"),
        "missing_config": (_launch("train.py", "--config=configs/no_such.py",
                                   f"--workdir={t / 'w2'}"), 2,
                           "--config=configs/no_such.py: config file not found"),
        "workdir_is_file": (_launch("train.py", *style, f"--workdir={a_file}"), 1,
                            f"workdir {a_file} is a file, not a folder"),
        "locked": (_launch("train.py", *style, f"--workdir={locked}"), 1,
                   f"workdir {locked} is in use by another training (pid {holder.pid} holds"),
        "batch_0": (_launch("train.py", *style, "--config.data.batch_size=0",
                            f"--workdir={t / 'w3'}"), 1,
                    "config.data.batch_size=0: must be >= 1"),
        "batch_-4": (_launch("train.py", *style, "--config.data.batch_size=-4",
                             f"--workdir={t / 'w4'}"), 1,
                     "config.data.batch_size=-4: must be >= 1"),
        "add_eval_kind": (_launch("train.py", *style, "--add_eval=paper,no_such_kind,test,0",
                                  f"--workdir={t / 'w5'}"), 2,
                          "--add_eval='paper,no_such_kind,test,0': kind 'no_such_kind' is not "
                          "one of"),
        "eval_empty": (_launch("evaluate.py", f"--model=m={empty}", f"--out_dir={t / 'e1'}"),
                       2, f"--model m={empty}: not a training workdir (no config.json"),
        "eval_wrong_kind": (_launch("evaluate.py", f"--model=m={style_wd}",
                                    f"--out_dir={t / 'e2'}"), 2,
                            f"--model m={style_wd}: a 'style' workdir; expected one of "
                            "d2m_composition"),
        "generate_empty": (_launch("generate.py", f"--music={song}", f"--checkpoint={empty}",
                                   f"--out={t / 'g1.npz'}"), 2,
                           f"--checkpoint={empty}: not a training workdir"),
        "generate_out_dir": (_launch("generate.py", f"--music={song}", f"--checkpoint={gen_wd}",
                                     f"--out={out_dir}"), 2,
                             f"--out={out_dir} is a folder; give a file name (.npz)"),
        "export_out_dir": (_launch("export_data.py", *style, f"--out={out_dir}"), 2,
                           f"--out={out_dir} is a folder; give a file name (.npz)"),
    }
    deadline = time.time() + 400
    results = {}
    for name, (proc, code, text) in cases.items():
      _, err = proc.communicate(timeout=max(1, deadline - time.time()))
      results[name] = (proc.returncode, err)
  finally:
    holder.kill()
    holder.wait()
  for name, (_, code, text) in cases.items():
    rc, err = results[name]
    line = _error_line(err)
    assert rc == code, (name, rc, err)
    assert text in line, (name, line)
  # nothing written anywhere
  for w in ("w1", "w2", "w3", "w4", "w5", "e1", "e2", "g1.npz"):
    assert not (t / w).exists(), w
  assert a_file.read_text() == "not a folder\n"
  from d2m_jax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  assert sorted(os.listdir(locked)) == [".lock"]  # the holder was killed: its file stays,
  assert not workdir_lib.is_locked(str(locked))   # unlocked (the OS dropped the lock)
  assert os.listdir(out_dir) == [] and os.listdir(empty) == []


@pytest.mark.parametrize("num_samples,refused", [(4, False), (10000, True)])
def test_generation_batch_too_large_is_refused_up_front(monkeypatch, num_samples, refused):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax import generate  # pylint: disable=import-outside-toplevel
  from d2m_jax.train.errors import ResourceError  # pylint: disable=import-outside-toplevel
  music = generate.Music(path="song.wav", wave=np.zeros(1, np.float32), sr=16000, fps=25.0,
                         num_frames=750,
                         feats={"waveform16k": np.zeros(750 * 640, np.float32)},
                         beats=np.arange(0, 750, 12), tempo_bpm=120.0)
  monkeypatch.setattr(generate, "available_memory_bytes", lambda: 2 * 10**9)
  need = generate.generation_bytes(music, num_samples)
  assert need == num_samples * (750 * 640 + 750 * 75) * 16
  if not refused:
    generate.check_generation_fits(music, num_samples)
    return
  with pytest.raises(ResourceError) as e:
    generate.check_generation_fits(music, num_samples)
  assert str(e.value) == (
      f"--num_samples=10000: 10000 dances of 750 frames need about {need / 1e9:.1f} GB (rough "
      f"estimate), 2.0 GB are free; ask for at most about {10000 * 2 * 10**9 // need} samples "
      "per call, or a shorter song")
