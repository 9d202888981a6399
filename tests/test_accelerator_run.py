"""The prepared accelerator run (``benchmarks/pack_gpu_run.sh`` + ``benchmarks/accelerator_run.sh``)
rehearsed on CPU at tiny sizes, as the accelerator image would run it: TensorFlow, TFDS, librosa,
soundfile and clu unimportable, no processed dataset (only the packed portable files), the
checkout's own code. Every stage must exit 0, each training stage must stop on its wall-clock
budget (``config.max_train_seconds``) with a checkpoint and a final evaluation of the held-out
test split, and the composition's motion ratio on the test split must be written.
"""
import json
import os
import pathlib
import subprocess
import sys

from import_blocker import write_blocker

REPO = pathlib.Path(__file__).resolve().parents[1]
BLOCKED = ("tensorflow", "tensorflow_datasets", "librosa", "soundfile", "clu")


def _metrics(workdir: pathlib.Path):
  path = next(workdir.rglob("metrics.jsonl"))
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_tiny_accelerator_run_without_tf_librosa_soundfile_clu(tmp_path, tiny_data_cfg):
  pack = tmp_path / "pack"
  env = dict(os.environ, PYTHON=sys.executable, PACK=str(pack), DATA_SOURCE="synthetic",
             NO_WHEELS="1", JAX_PLATFORMS="cpu",
             EXPORT_FLAGS=(f"--config.data.data_dir={tiny_data_cfg.data_dir} "
                           "--config.data.synthetic_sequences_per_style=3 "
                           "--config.data.synthetic_seconds=10.0 "
                           "--config.data.synthetic_seed=0"))
  p = subprocess.run(["bash", "benchmarks/pack_gpu_run.sh"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  assert sorted(x.name for x in (pack / "data").iterdir()) == [
      "d2m_composition.npz", "d2m_decomposition.npz", "style_paper.npz"]

  block = write_blocker(tmp_path / "block", BLOCKED)
  env = dict(env, PYTHONPATH=str(block), TINY="1", SUITE_BUDGET_S="0", STYLE_S="5",
             DECOMP_S="5", COMP_S="5", MOTION_EXAMPLES="4")
  check = subprocess.run([sys.executable, "-c", "import soundfile"], env=env,
                         capture_output=True, text=True)
  assert "No module named 'soundfile'" in check.stderr, check.stderr
  out = tmp_path / "out"
  p = subprocess.run(["bash", "benchmarks/accelerator_run.sh", str(out)], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=1800)
  logs = "".join(f"\n== {f.name}\n{f.read_text()[-2000:]}" for f in sorted(out.glob("*.log")))
  assert p.returncode == 0, p.stdout[-3000:] + logs
  stages = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()[1:]]
  assert [(s[0], s[1]) for s in stages] == [("style", "0"), ("decomposition", "0"),
                                            ("composition", "0"), ("motion", "0")]
  for name, stage in (("style", "style"), ("d2m_decomp", "decomposition"),
                      ("d2m_comp", "composition")):
    log = (out / f"{stage}.log").read_text()
    assert "(time_budget)" in log, (name, log[-1500:])    # stopped by the wall clock
    recs = _metrics(out / name)
    assert any(k.startswith("eval_test/") for r in recs for k in r), (name, recs[-3:])
  motion = json.loads((out / "d2m_motion_test.json").read_text())
  assert motion, motion
