"""d2m_jax/files.py: the one atomic writer (whole file or nothing, the usual mode, extensions)."""
import json
import os
import stat

import numpy as np
import pytest

from d2m_jax import files


def test_write_json_converts_numpy_and_replaces_whole(tmp_path):
  p = tmp_path / "sub" / "x.json"
  files.write_json(str(p), {"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(7)})
  assert json.loads(p.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": 7}
  assert p.read_text().endswith("\n")
  assert os.listdir(p.parent) == ["x.json"]          # no temporary left behind


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
  p = tmp_path / "x.json"
  files.write_text(str(p), "old\n")
  with pytest.raises(TypeError):
    files.write_json(str(p), {"bad": object()})     # fails in the middle of the dump
  assert p.read_text() == "old\n"
  assert os.listdir(tmp_path) == ["x.json"]


def test_mode_follows_the_umask_not_mkstemp(tmp_path):
  old = os.umask(0o022)
  try:
    files.write_text(str(tmp_path / "t.txt"), "x")
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "t.txt").st_mode) == 0o644


def test_atomic_path_keeps_the_extension_and_save_npz_round_trips(tmp_path):
  with files.atomic_path(str(tmp_path / "a.wav")) as tmp:
    assert tmp.endswith(".wav") and os.path.dirname(tmp) == str(tmp_path)
    open(tmp, "wb").close()
  assert os.listdir(tmp_path) == ["a.wav"]
  files.save_npz(str(tmp_path / "z.npz"), compressed=True, x=np.arange(4.0))
  with np.load(tmp_path / "z.npz") as z:
    np.testing.assert_array_equal(z["x"], np.arange(4.0))
  with pytest.raises(ValueError, match="only write modes"):
    with files.atomic_open(str(tmp_path / "r.txt"), "r"):
      pass
