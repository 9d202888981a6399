"""The engine across processes: ``train_and_evaluate`` on 2 processes x 2 CPU devices equals 1
process x 4 devices (same global batch and seed), and its workdir resumes across process counts.

The data come from the real input pipeline on the tiny synthetic dataset (``tiny_data_cfg``):
each process's ``make_iterator`` yields its rows of the same global batch, which
``to_global`` assembles into one global array; evaluation runs on every process and is written
by process 0 only. The worker is this
file run as a script (``python tests/test_multihost_engine.py worker ...``); the in-process
(pytest) side has 4 CPU devices from ``conftest.py``. Mechanics without the engine:
``test_multihost.py`` (whose process launcher is reused here).
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_multihost import free_port, run_processes  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16


def tiny_config(num_train_steps: int, data_cfg_json: str | None = None):
  """configs/style_paper.py shrunk: GRU-8 over 10 frames, global batch 16, tiny data."""
  import ml_collections
  sys.path.insert(0, str(REPO))
  from configs import style_paper  # pylint: disable=g-import-not-at-top
  c = style_paper.get_config()
  if data_cfg_json is not None:
    c.data = ml_collections.ConfigDict(json.loads(data_cfg_json))
  c.model.hidden = 8
  c.model.num_frames = 10
  c.optim.lr = 3e-2
  c.data.batch_size = GLOBAL_BATCH
  c.data.eval_batch_size = GLOBAL_BATCH
  c.num_train_steps = num_train_steps
  c.log_every_steps = 2
  c.eval_every_steps = 0            # evaluation at the end only
  c.checkpoint_every_steps = 4
  c.num_eval_batches = 0
  c.keep_checkpoints = 10
  c.async_checkpoints = True
  return c


STATS = {"d2m28_mean": np.zeros(28, np.float32), "d2m28_std": np.ones(28, np.float32)}


def _run_engine(workdir: str, steps: int, data_cfg_json: str):
  """The engine with the real input pipeline (train and eval)."""
  from d2m_jax.tasks import get_task
  from d2m_jax.train import loop
  import jax
  config = tiny_config(steps, data_cfg_json)
  state = loop.train_and_evaluate(config, workdir, task=get_task(config))
  return jax.device_get(state)


def _worker_main(argv):
  """``worker NUM_PROCESSES PROCESS_ID PORT WORKDIR STEPS OUT_JSON DATA_CFG_JSON_FILE``."""
  nproc, pid, port, workdir, steps, out, data_cfg_file = argv
  from d2m_jax.train import distributed
  assert distributed.maybe_initialize(
      {"coordinator_address": f"localhost:{port}", "num_processes": int(nproc),
       "process_id": int(pid), "initialization_timeout": 60})
  state = _run_engine(workdir, int(steps), pathlib.Path(data_cfg_file).read_text())
  import jax
  if distributed.is_main_process():
    params = {jax.tree_util.keystr(k): np.asarray(v).tolist()
              for k, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"step": int(state.step), "params": params}, f)
    os.replace(tmp, out)


def _launch_pair(tmp_path, name, workdir, steps):
  port = free_port()
  out = tmp_path / f"{name}.json"
  argvs = [[sys.executable, __file__, "worker", "2", str(i), str(port), str(workdir), str(steps),
            str(out), str(tmp_path / "data_cfg.json")] for i in range(2)]
  run_processes(argvs, tmp_path / name, timeout=300,
                compilation_cache=tmp_path / "jax_cache")
  result = json.loads(out.read_text())
  return result["step"], {k: np.asarray(v, np.float32) for k, v in result["params"].items()}


def _flat(params):
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def _assert_close(a, b, what):
  assert a.keys() == b.keys(), what
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=2e-6, err_msg=f"{what}: {k}")


def _eval(workdir):
  with open(os.path.join(workdir, "eval.json")) as f:
    return json.load(f)


def _checkpoint_params(workdir, step):
  """Params of ``workdir``'s checkpoint at ``step`` (restored onto this process's 4 devices)."""
  import jax
  from d2m_jax.tasks import get_task
  from d2m_jax.train import checkpoint, distributed, parallel
  task = get_task(tiny_config(1))
  batch = task.synthetic_batch(4, np.random.default_rng(0))
  shapes = jax.eval_shape(lambda r: task.init_state(r, batch, STATS), jax.random.PRNGKey(0))
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, async_save=False)
  try:
    state, _ = ckpt.restore(distributed.replicated_abstract_state(shapes, parallel.make_mesh()),
                            step=step)
  finally:
    ckpt.close()
  return _flat(jax.device_get(state.params))


def test_engine_two_processes_equal_one_and_resume_on_one_process(tmp_path, tiny_data_cfg):
  """2 processes x 2 devices train 0 -> 4 and checkpoint; 1 process x 4 devices resumes that
  workdir 4 -> 6; both equal one uninterrupted 1-process run 0 -> 6 (the reverse direction,
  saved on 1 and resumed on 2, is in test_multihost.py)."""
  import jax
  assert jax.process_count() == 1 and jax.device_count() == 4
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  data = tiny_data_cfg.copy_and_resolve_references()
  data.batch_size = data.eval_batch_size = GLOBAL_BATCH
  data.waveform = False            # the style model reads d2m28 only: smaller batches
  data_json = data.to_json()
  (tmp_path / "data_cfg.json").write_text(data_json)

  step, two = _launch_pair(tmp_path, "two_0_4", multi, 4)
  reference = _run_engine(single, 6, data_json)      # checkpoints at 4 and 6
  assert step == 4 and int(reference.step) == 6
  _assert_close(two, _checkpoint_params(single, 4), "2x2 vs 1x4 after 4 steps")
  init = _flat(jax.device_get(_init_params()))
  assert max(np.abs(v - init[k]).max() for k, v in two.items()) > 1e-3  # it trained
  assert not any(p.name.startswith(".") for p in pathlib.Path(multi).iterdir())  # no temp files
  # Logs from process 0 only; both processes evaluated (collectives), process 0 reported.
  logs = [(tmp_path / "two_0_4" / f"proc{i}.log").read_text() for i in range(2)]
  assert "eval test @ step 4" in logs[0] and "eval test" not in logs[1]
  assert "step 4/4" in logs[0] and "step 4/4" not in logs[1]
  # eval.json of the 2-process run (process 0 writes it) counts every example of the split once.
  e2, e1 = _eval(multi)["final"]["test"], _eval(single)["final"]["test"]
  assert e2["num_examples"] == e1["num_examples"] >= GLOBAL_BATCH
  assert sum(map(sum, e2["confusion"])) == e1["num_examples"]

  # Saved on 2 processes, resumed on 1 (4 devices): 4 -> 6, equal to the uninterrupted run,
  # evaluation included.
  resumed = _run_engine(multi, 6, data_json)
  assert int(resumed.step) == 6
  _assert_close(_flat(resumed.params), _flat(reference.params), "2->1 process resume")
  e_resumed, e_ref = _eval(multi)["final"], _eval(single)["final"]
  assert e_resumed["test"]["confusion"] == e_ref["test"]["confusion"]
  np.testing.assert_allclose(e_resumed["validation"]["loss"], e_ref["validation"]["loss"],
                             rtol=1e-5)


def _init_params():
  import jax
  from d2m_jax.tasks import get_task
  task = get_task(tiny_config(1))
  batch = task.synthetic_batch(4, np.random.default_rng(0))
  return task.init_state(jax.random.PRNGKey(0), batch, STATS).params


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "worker":
    _worker_main(sys.argv[2:])
  else:
    raise SystemExit(f"usage: {sys.argv[0]} worker NPROC PID PORT WORKDIR STEPS OUT_JSON")
