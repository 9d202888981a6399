"""benchmarks/run_figures.py: metrics.jsonl parsing, and both figures written atomically."""
import json

import numpy as np
import pytest

from benchmarks import run_figures


def test_read_metrics_series_and_both_figures(tmp_path):
  wd = tmp_path / "wd"
  wd.mkdir()
  recs = [{"step": 0, "perf/compile_seconds": 3.0},
          {"step": 50, "train/loss": 2.0, "train/self_recon": 1.0, "note": "text"},
          {"step": 100, "train/loss": 1.5, "train/self_recon": 0.75}]
  (wd / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
  m = run_figures.read_metrics(str(wd))
  np.testing.assert_array_equal(m["train/loss"][0], [50, 100])
  np.testing.assert_array_equal(m["train/loss"][1], [2.0, 1.5])
  assert "note" not in m and m["perf/compile_seconds"][1].tolist() == [3.0]
  out = tmp_path / "c.png"
  run_figures.curves([("run", str(wd))], str(out))
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  joints = np.random.default_rng(0).normal(size=(1, 50, 4, 3)).astype(np.float32) * 10
  np.savez(tmp_path / "d.npz", joints=joints, fps=np.float32(25), bones=np.array([[0, 1], [1, 2]]),
           mid_bones=np.array([[[2, 3], [0, 0]]]), music_beats=np.array([10, 20]))
  strip = tmp_path / "s.png"
  run_figures.main(["strip", f"--dance={tmp_path / 'd.npz'}", f"--out={strip}", "--frames=4"])
  assert strip.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not list(tmp_path.glob("tmp*.png"))


def test_missing_workdir_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit, match="no metrics.jsonl"):
    run_figures.read_metrics(str(tmp_path))
