"""The prepared accelerator run (``benchmarks/pack_gpu_run.sh`` + ``benchmarks/accelerator_run.sh``)
rehearsed on CPU at tiny sizes, as the accelerator image would run it: TensorFlow, TFDS, librosa,
soundfile and clu unimportable, no processed dataset (only the packed portable files), the
checkout's own code. Every stage must exit 0, each training stage must stop on its wall-clock
budget (``config.max_train_seconds``) with a checkpoint and a final evaluation of the held-out
test split, the composition's motion ratio on the test split must be written, and so must its
paper metrics there (the ``dance_metrics`` evaluator on the packed ``--for_eval`` export), whose
real-vs-real row must be the one the processed dataset gives (exactly, once its pose and root
are rounded to float16 as the export documents; within 5 % unrounded).
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np

from d2m_jax.data import portable
from d2m_jax.metrics import evaluation as ev
from import_blocker import write_blocker

REPO = pathlib.Path(__file__).resolve().parents[1]
BLOCKED = ("tensorflow", "tensorflow_datasets", "librosa", "soundfile", "clu")


def _metrics(workdir: pathlib.Path):
  path = next(workdir.rglob("metrics.jsonl"))
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _real_row(data_cfg, rounded_like=None):
  """The real-vs-real metrics of the test split from the processed dataset of ``data_cfg``;
  with ``rounded_like`` (a PortableData) its float16 arrays rounded as that export stores them."""
  inputs = ev.metric_inputs(data_cfg, "test")
  if rounded_like is not None:
    for s in inputs.train + inputs.seqs:
      for name in ("pose", "root"):
        if rounded_like.dtypes[name] == "float16":
          mean = rounded_like.stats[f"{name}_mean"]
          setattr(s, name, portable.from_f16(portable.to_f16(getattr(s, name), mean), mean))
  ref = ev.clip_features([s.pose for s in inputs.train], inputs.train,
                         roots=[s.root for s in inputs.train])
  return ev.row_metrics(ev.clip_features([s.pose for s in inputs.seqs], inputs.seqs,
                                         roots=[s.root for s in inputs.seqs]), ref)


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
                                            ("composition", "0"), ("motion", "0"),
                                            ("paper_metrics", "0")]
  for name, stage in (("style", "style"), ("d2m_decomp", "decomposition"),
                      ("d2m_comp", "composition")):
    log = (out / f"{stage}.log").read_text()
    assert "(time_budget)" in log, (name, log[-1500:])    # stopped by the wall clock
    recs = _metrics(out / name)
    assert any(k.startswith("eval_test/") for r in recs for k in r), (name, recs[-3:])
  motion = json.loads((out / "d2m_motion_test.json").read_text())
  assert motion, motion
  paper = json.loads((out / "paper_metrics" / "eval.json").read_text())["evals"]["paper_test"]
  for k in ("FID_k", "FID_g", "Div_k", "Div_g", "BAS", "real_FID_k", "real_FID_g", "real_BAS"):
    assert isinstance(paper.get(k), float) and math.isfinite(paper[k]), (k, paper)
  assert paper["clips"] >= 4, paper                       # one 10 s test sequence per style
  pack_file = portable.PortableData(pack / "data" / "d2m_composition.npz")
  assert pack_file.info["eval_arrays"] == ["d2m28", "pose", "root"], pack_file.info
  exact = _real_row(tiny_data_cfg, rounded_like=pack_file)
  for k in ("FID_k", "FID_g", "Div_k", "Div_g", "BAS"):
    np.testing.assert_allclose(paper[f"real_{k}"], exact[k], rtol=1e-9, err_msg=k)
  unrounded = _real_row(tiny_data_cfg)
  for k in ("FID_k", "FID_g", "Div_k", "Div_g", "BAS"):
    np.testing.assert_allclose(paper[f"real_{k}"], unrounded[k], rtol=0.05, err_msg=k)
