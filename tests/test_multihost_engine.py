"""The engine across processes: ``train_and_evaluate`` on 2 processes x 2 CPU devices equals 1
process x 4 devices (same global batch and seed), and its workdir resumes across process counts.

Each process feeds its rows of the same global batch (what ``pipeline.make_iterator`` does per
process); evaluation runs on every process and is written by process 0 only. The worker is this
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
from test_multihost import free_port, run_processes  # noqa: E402  pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16
EVAL_BATCHES = 2


def tiny_config(num_train_steps: int):
  """configs/style_paper.py shrunk: GRU-8 over 10 frames, global batch 16."""
  sys.path.insert(0, str(REPO))
  from configs import style_paper  # pylint: disable=g-import-not-at-top
  c = style_paper.get_config()
  c.model.hidden = 8
  c.model.num_frames = 10
  c.optim.learning_rate = 3e-2
  c.data.batch_size = GLOBAL_BATCH
  c.data.eval_batch_size = GLOBAL_BATCH
  c.num_train_steps = num_train_steps
  c.log_every_steps = 2
  c.eval_every_steps = 2
  c.checkpoint_every_steps = 2
  c.num_eval_batches = 0
  c.keep_checkpoints = 10
  c.async_checkpoints = True
  return c


def _global(seed: int, batch: int = GLOBAL_BATCH):
  rng = np.random.default_rng(seed)
  style = rng.integers(0, 4, (batch,)).astype(np.int32)
  # Class-dependent features so that training and eval accuracy move.
  d2m28 = (rng.standard_normal((batch, 120, 28)) + style[:, None, None] * 0.5).astype(np.float32)
  return {"d2m28": d2m28, "style": style}


def _rows(batch):
  import jax
  n, p = jax.process_count(), jax.process_index()
  size = len(batch["style"])
  return {k: v[p * size // n:(p + 1) * size // n] for k, v in batch.items()}


def train_iter_fn(start_step: int):
  """Process-local slices of the global batch of each step, from ``start_step`` (exact resume)."""
  step = start_step
  while True:
    yield _rows(_global(step))
    step += 1


def eval_iter_fn(split: str):
  base = {"validation": 10_000, "test": 20_000}[split]
  return [_rows(_global(base + i)) for i in range(EVAL_BATCHES)]


STATS = {"d2m28_mean": np.zeros(28, np.float32), "d2m28_std": np.ones(28, np.float32)}


def run_engine(workdir: str, steps: int):
  from d2m_jax.train import loop
  import jax
  state = loop.train_and_evaluate(tiny_config(steps), workdir, train_iter=train_iter_fn,
                                  eval_iter_fn=eval_iter_fn, stats=STATS)
  return jax.device_get(state)


def _worker_main(argv):
  """``worker NUM_PROCESSES PROCESS_ID PORT WORKDIR STEPS OUT_JSON``."""
  nproc, pid, port, workdir, steps, out = argv
  from d2m_jax.train import distributed
  assert distributed.maybe_initialize(
      {"coordinator_address": f"localhost:{port}", "num_processes": int(nproc),
       "process_id": int(pid), "initialization_timeout": 60})
  state = run_engine(workdir, int(steps))
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
            str(out)] for i in range(2)]
  run_processes(argvs, tmp_path / name, timeout=120,
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
  shapes = jax.eval_shape(lambda r: task.init_state(r, _rows(_global(0)), STATS),
                          jax.random.PRNGKey(0))
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, async_save=False)
  try:
    state, _ = ckpt.restore(distributed.replicated_abstract_state(shapes, parallel.make_mesh()),
                            step=step)
  finally:
    ckpt.close()
  return _flat(jax.device_get(state.params))


def test_engine_two_processes_equal_one_and_resume_across_process_counts(tmp_path):
  """One uninterrupted 1-process run (0 -> 8) against 2 processes (0 -> 4), then 1 process
  resuming that workdir (4 -> 6), then 2 processes resuming it again (6 -> 8)."""
  import jax
  assert jax.process_count() == 1 and jax.device_count() == 4
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")

  step, two = _launch_pair(tmp_path, "two_0_4", multi, 4)
  reference = run_engine(single, 8)            # checkpoints at 2, 4, 6, 8 are kept
  assert step == 4 and int(reference.step) == 8
  _assert_close(two, _checkpoint_params(single, 4), "2x2 vs 1x4 after 4 steps")
  init = _flat(jax.device_get(_init_params()))
  assert max(np.abs(v - init[k]).max() for k, v in two.items()) > 1e-3  # it trained
  assert not any(p.name.startswith(".") for p in pathlib.Path(multi).iterdir())  # no temp files
  e2 = _eval(multi)["final"]["test"]           # written by process 0 of the 2-process run
  assert e2["num_examples"] == EVAL_BATCHES * GLOBAL_BATCH
  assert sum(map(sum, e2["confusion"])) == EVAL_BATCHES * GLOBAL_BATCH

  # Saved on 2 processes, resumed on 1 (4 devices): 4 -> 6.
  resumed = run_engine(multi, 6)
  assert int(resumed.step) == 6
  _assert_close(_flat(resumed.params), _checkpoint_params(single, 6), "2->1 process resume")
  # The 1-process run's eval agrees with the reference's at the same step and parameters.
  e1, ref = _eval(multi)["history"], _eval(single)["history"]
  at6 = lambda hist: [h for h in hist if h["step"] == 6 and h["split"] == "validation"][0]
  np.testing.assert_allclose(at6(e1)["loss"], at6(ref)["loss"], rtol=1e-5)

  # Saved on 1 process, resumed on 2: 6 -> 8, equal to the uninterrupted 1-process run.
  step, two = _launch_pair(tmp_path, "two_6_8", multi, 8)
  assert step == 8
  _assert_close(two, _flat(jax.device_get(reference.params)), "1->2 process resume")
  assert _eval(multi)["final"]["test"]["confusion"] == _eval(single)["final"]["test"]["confusion"]


def _init_params():
  import jax
  from d2m_jax.tasks import get_task
  task = get_task(tiny_config(1))
  return task.init_state(jax.random.PRNGKey(0), _rows(_global(0)), STATS).params


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "worker":
    _worker_main(sys.argv[2:])
  else:
    raise SystemExit(f"usage: {sys.argv[0]} worker NPROC PID PORT WORKDIR STEPS OUT_JSON")
