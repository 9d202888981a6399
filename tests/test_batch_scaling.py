"""benchmarks/batch_scaling.py's analysis: the critical batch rule, the per-model summary and
the engine's time_to_target.json reader (no training here)."""
from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import batch_scaling as bs  # noqa: E402


def test_critical_batch_is_where_doubling_stops_saving_20_percent():
  # perfect scaling to 256, then 256 -> 512 saves 10% (< 20%): critical batch 256
  steps = {32: 800, 64: 400, 128: 200, 256: 100, 512: 90, 1024: 85}
  assert bs.critical_batch(steps) == 256
  assert bs.critical_batch({32: 100, 64: 81}) == 32          # 19% saved: no gain at 64
  assert bs.critical_batch({32: 100, 64: 80}) == 64          # exactly 20% counts
  assert bs.critical_batch({32: 100}) is None


def test_summary_counts_a_batch_only_when_every_seed_reached():
  rows = [dict(model="m", batch=32, seed=s, steps=100 + s, reached=True, b_simple=50.0)
          for s in (0, 1)]
  rows += [dict(model="m", batch=64, seed=0, steps=60, reached=True, b_simple=70.0),
           dict(model="m", batch=64, seed=1, steps=400, reached=False, b_simple=float("nan"))]
  s = bs.summarise(rows)["m"]
  assert s["steps"][32] == 100.5 and math.isnan(s["steps"][64])
  assert s["b_simple_median"] == 50.0
  assert s["critical_batch"] is None   # one batch with every seed at the target


def test_open_ended_critical_batch_is_flagged():
  rows = [dict(model="m", batch=b, seed=0, steps=st, reached=True, b_simple=1.0)
          for b, st in ((32, 100), (64, 60), (128, 40))]
  s = bs.summarise(rows)["m"]
  assert s["critical_batch"] == 128 and not s["critical_bounded"]
  rows.append(dict(model="m", batch=256, seed=0, steps=38, reached=True, b_simple=1.0))
  s = bs.summarise(rows)["m"]
  assert s["critical_batch"] == 128 and s["critical_bounded"]


def test_read_time_to_target(tmp_path):
  with pytest.raises(FileNotFoundError, match="time_to_target.json"):
    bs.read_time_to_target(str(tmp_path))
  (tmp_path / "time_to_target.json").write_text(json.dumps({"reached": True, "step": 40}))
  with pytest.raises(ValueError, match=r"missing \['examples'\]"):
    bs.read_time_to_target(str(tmp_path))
  (tmp_path / "time_to_target.json").write_text(
      json.dumps({"reached": True, "step": 40, "examples": 1280}))
  assert bs.read_time_to_target(str(tmp_path))["examples"] == 1280


def test_variants_are_summarised_apart():
  base = dict(model="style_paper", seed=0, reached=True, b_simple=1.0, optim="config",
              lr_ref=bs.ROWS["style_paper"].lr, lr_scaling="sqrt", warmup=0)
  rows = [dict(base, batch=64, steps=20), dict(base, batch=128, steps=10),
          dict(base, batch=64, steps=40, optim="lamb", lr_ref=0.02, warmup=5),
          dict(base, batch=128, steps=39, optim="lamb", lr_ref=0.02, warmup=5)]
  s = bs.summarise(rows)
  assert set(s) == {"style_paper", "style_paper lamb lr 0.02 warmup 5"}
  assert s["style_paper"]["critical_batch"] == 128
  assert s["style_paper lamb lr 0.02 warmup 5"]["steps"] == {64: 40.0, 128: 39.0}
  assert bs.variant(dict(base, lr_scaling="linear")) == "style_paper linear"


def test_engine_runner_flags_and_step_conversion(tmp_path, monkeypatch):
  seen = {}

  def fake_run(args, **kw):
    seen["args"] = args
    wd = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
    pathlib.Path(wd).mkdir(parents=True)
    (pathlib.Path(wd) / "time_to_target.json").write_text(
        json.dumps({"reached": True, "step": 14, "examples": 14 * 128}))
    return type("P", (), {"returncode": 0})()

  monkeypatch.setattr(bs.subprocess, "run", fake_run)
  row = bs.dataclasses.replace(bs.ROWS["style_paper"], warmup=5, optim_name="lamb")
  out = bs.run_engine(row, 256, 1, str(tmp_path / "w"), 2, ["--config.data.data_dir=/x"])
  args = seen["args"]
  for flag in ("--config.data.batch_size=128", "--config.optim.accumulate_steps=2",
               "--config.seed=1", "--config.target.metric=eval_validation/accuracy",
               "--config.eval_every_steps=2", "--config.optim.warmup_steps=5",
               "--config.optim.name=lamb", "--config.data.data_dir=/x"):
    assert flag in args, flag
  assert out["steps"] == 7 and out["examples"] == 7 * 256 and out["engine_step"] == 14
