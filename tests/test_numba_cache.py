"""numba's cache for librosa (tracker issue 12): never poisoned by parallel workers, a poisoned
one is moved aside, a dead worker is one clear error, a non-audio file is one line in our words."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from d2m_jax.data import audio, ingest, numba_cache, synthetic
from d2m_jax.data.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAT_TRACK = ("import numpy as np, librosa; librosa.beat.beat_track(y=np.random.default_rng(0)"
              ".standard_normal(3 * 22050).astype('float32'), sr=22050); print('beats ok')")


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
  raw = str(tmp_path_factory.mktemp("raw"))
  synthetic.generate_dataset(raw, sequences_per_style=1, seconds=2.0, styles=("C", "W"))
  return raw


# --------------------------------------------------------------------- the race (issue 12) ---

def _seed_without_beat_kernels(dst: str):
  """A copy of the project's warm cache minus librosa.beat's gufuncs (the kernels numba#10128
  races on), so that the run below compiles only those."""
  src = numba_cache.ensure_warm()
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*beat.*", numba_cache.MARKER,
                                                          numba_cache.LOCK))


# Loaded at start-up by every process of the run below (PYTHONPATH): logs "pid file" for each
# cache file numba writes (numba writes FILE.tmp.<uid>, then renames it to FILE).
_WRITE_LOGGER = """
import os, sys
_log, _dir = os.environ.get("D2M_TEST_NUMBA_WRITES"), os.environ.get("NUMBA_CACHE_DIR")
if _log and _dir:
  def _hook(event, args):
    if event == "open" and isinstance(args[0], str) and ".tmp." in args[0] and \\
        args[0].startswith(_dir) and args[1] and "w" in args[1]:
      with open(_log, "a") as f:
        f.write(f"{os.getpid()} {args[0].rsplit('.tmp.', 1)[0]}\\n")
  sys.addaudithook(_hook)
"""


def test_two_worker_preprocess_compiles_once_and_leaves_a_good_cache(tiny_raw, tmp_path):
  """Fresh kernels to compile -> ingest with 2 workers -> the beat tracker in a new process.

  On the code before the fix both workers compiled librosa.beat's gufuncs at the same time, and
  the process after them segfaulted on the cache they left in 1 of 3 runs here (9 of 13 from
  an empty folder in issue 12): a timing race. The test does not depend on losing it: it records
  every process that writes a cache file and requires one writer per file (two writers of the
  same gufunc's files is what numba#10128 needs), then requires the beat tracker to run.
  """
  cache = str(tmp_path / "numba")
  _seed_without_beat_kernels(cache)
  hooks = tmp_path / "hooks"
  hooks.mkdir()
  (hooks / "sitecustomize.py").write_text(_WRITE_LOGGER)
  writes = tmp_path / "writes.txt"
  env = dict(os.environ, NUMBA_CACHE_DIR=cache, JAX_PLATFORMS="cpu", PYTHONPATH=str(hooks),
             D2M_TEST_NUMBA_WRITES=str(writes))
  env.pop(numba_cache.WARMING_ENV, None)
  code = (f"from d2m_jax.data import ingest; ingest.ingest('synthetic', {tiny_raw!r}, "
          f"{str(tmp_path / 'proc')!r}, num_workers=2, log=lambda s: None)")
  pre = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=900)
  assert pre.returncode == 0, f"ingest: {pre.stderr[-2000:]}"
  writers = {}
  for line in writes.read_text().splitlines():
    pid, path = line.split(" ", 1)
    writers.setdefault(path, set()).add(pid)
  assert any("beat" in p for p in writers), "the beat kernels were not compiled: no test"
  shared = {os.path.basename(p): len(w) for p, w in writers.items() if len(w) > 1}
  assert not shared, f"cache files written by several processes at once: {shared}"
  env.pop("D2M_TEST_NUMBA_WRITES")
  beat = subprocess.run([sys.executable, "-c", BEAT_TRACK], env=env, capture_output=True,
                        text=True, timeout=600)
  assert beat.returncode == 0 and "beats ok" in beat.stdout, (
      f"the beat tracker died (rc {beat.returncode}) on the cache a 2-worker preprocess left: "
      f"{beat.stderr[-2000:]}")


# ------------------------------------------------------------ cache folder and poisoning ---

def test_cache_folder_default_and_user_setting(monkeypatch, tmp_path):
  monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert numba_cache.configure() == str(tmp_path / "xdg" / "d2m_jax" / "numba")
  assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "xdg" / "d2m_jax" / "numba")
  monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
  assert numba_cache.configure() == str(tmp_path / "mine")
  # librosa reached through the features uses it (numba re-reads the variable if imported)
  import numba  # pylint: disable=import-outside-toplevel
  assert numba.config.CACHE_DIR == str(tmp_path / "mine")
  monkeypatch.undo()          # leave numba pointed at the session's folder for later tests
  assert numba_cache.configure() == numba.config.CACHE_DIR != str(tmp_path / "mine")


def test_importing_the_features_points_numba_at_the_project_cache(tmp_path):
  """Every entry point reaches librosa through d2m_jax.data.features (generate, evaluate,
  preprocess): importing it must set the folder before numba reads it at its own import."""
  code = ("from d2m_jax.data import features; import numba, os; "
          "print(numba.config.CACHE_DIR); print(os.environ['NUMBA_CACHE_DIR'])")
  env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
  env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
  r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr
  want = str(tmp_path / "xdg" / "d2m_jax" / "numba")
  assert r.stdout.split() == [want, want]


def test_poisoned_cache_is_moved_aside_and_recompiled(monkeypatch, tmp_path):
  """A warm-up child killed by SIGSEGV (as on a poisoned cache): folder moved aside, retried."""
  cache = tmp_path / "numba"
  cache.mkdir()
  (cache / "poison").write_text("left by an older version")
  crash_if_poisoned = ("import ctypes, os; p = os.environ['NUMBA_CACHE_DIR']; "
                       "os.path.exists(os.path.join(p, 'poison')) and ctypes.string_at(0)")
  monkeypatch.setattr(numba_cache, "_WARM_CODE", crash_if_poisoned)
  logs = []
  assert numba_cache.ensure_warm(str(cache), log=logs.append) == str(cache)
  aside = glob.glob(str(cache) + ".crashed-*")
  assert len(aside) == 1 and os.path.exists(os.path.join(aside[0], "poison"))
  assert not (cache / "poison").exists() and numba_cache.is_warm(str(cache))
  assert "SIGSEGV" in logs[0] and aside[0] in logs[0], logs
  assert json.loads((cache / numba_cache.MARKER).read_text())["numba"]
  # crashing again with a fresh folder: a clear error, not a loop
  (cache / numba_cache.MARKER).unlink()
  monkeypatch.setattr(numba_cache, "_WARM_CODE", "import ctypes; ctypes.string_at(0)")
  with pytest.raises(numba_cache.NumbaCacheError, match="SIGSEGV"):
    numba_cache.ensure_warm(str(cache), log=logs.append)


# ------------------------------------------------------------------- a worker that dies ---

def _segfault(seq):
  import ctypes  # pylint: disable=import-outside-toplevel
  ctypes.string_at(0)      # a real SIGSEGV inside C, as a crashing extension would
  return {"name": seq.name}


def test_dead_worker_is_one_clear_error_and_nothing_is_written(tiny_raw, tmp_path):
  out = tmp_path / "processed"
  with pytest.raises(ingest.WorkerCrash) as e:
    ingest.ingest("synthetic", tiny_raw, str(out), num_workers=2, log=lambda s: None,
                  process_fn=_segfault)
  msg = str(e.value)
  assert "\n" not in msg and "SIGSEGV" in msg, msg
  assert os.path.basename(e.value.item) in ("DANCE_C_1", "DANCE_W_1"), msg
  assert e.value.item in msg and e.value.completed == 0
  assert os.listdir(tmp_path) == []          # no output, no temporary folder


# -------------------------------------------------------------------------- bad audio ---

def test_text_file_named_mp3_is_one_line_in_our_words(tmp_path, capfd):
  fake = tmp_path / "song.mp3"
  fake.write_text("this is a text file, not music\n" * 20)
  with pytest.raises(DataError) as e:
    audio.load_audio(fake)
  problem = e.value.problem
  assert "not a decodable audio file" in problem and "libsndfile" in problem and "MP3" in problem
  assert "possibly a pipe" not in problem and "does not exist" not in problem
  err = capfd.readouterr().err
  assert "Illegal Audio-MPEG-Header" not in err and "resync" not in err, err
  # stderr works again after decoding
  os.write(2, b"still here\n")
  assert "still here" in capfd.readouterr().err


def test_generate_launcher_text_mp3_one_line(tmp_path):
  fake = tmp_path / "song.mp3"
  fake.write_text("this is a text file, not music\n" * 20)
  out = tmp_path / "out.npz"
  r = subprocess.run([sys.executable, os.path.join(REPO, "launch", "generate.py"),
                      f"--music={fake}", f"--checkpoint={tmp_path}", f"--out={out}"],
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and str(fake) in lines[0] and "not a decodable audio file" in lines[0], (
      r.stderr)
  assert not out.exists()
