"""Multi-process data parallel on localhost: 2 processes x 2 CPU devices == 1 process x 4 devices.

The mechanics (``jax.distributed`` with CPU (gloo) collectives, a mesh over every process's
devices, global batches from per-process slices, cooperative Orbax checkpoints restored on a
different process count in both directions, cross-process agreement) are proven here with a
minimal jitted step that needs nothing but jax/optax/orbax; ``test_multihost_engine.py`` does the
same through the engine's ``train_and_evaluate``.

This file is also the worker: ``python tests/test_multihost.py worker ...`` (see ``_worker_main``).
The in-process (pytest) side has 4 CPU devices from ``conftest.py``.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16
FEATURES = 6


# ----------------------------------------------------------------------------------------------
# Launching helper processes (also used by test_multihost_engine.py).

def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def worker_env(devices_per_process: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices_per_process} "
                      "--xla_backend_optimization_level=0")
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  for k in [k for k in env if k.startswith(("SLURM_", "D2M_", "JAX_COORDINATOR", "OMPI_"))]:
    del env[k]
  return env


def run_processes(argvs, log_dir: pathlib.Path, timeout: float, devices_per_process: int = 2,
                  compilation_cache: pathlib.Path | None = None, envs=None):
  """Runs one process per argv concurrently; kills them all on failure or timeout.

  ``envs``: optional per-process extra environment variables. Each process gets its own
  session (process group) so that a hung one is killed together with
  anything it started. Raises AssertionError with the log tails when any process fails.
  """
  log_dir.mkdir(parents=True, exist_ok=True)
  procs, logs = [], []
  env = worker_env(devices_per_process)
  if compilation_cache is not None:   # later launches reuse the compiled steps of earlier ones
    env["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
  try:
    for i, argv in enumerate(argvs):
      log = open(log_dir / f"proc{i}.log", "w")
      logs.append(log)
      penv = dict(env, **(envs[i] if envs else {}))
      procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=penv,
                                    cwd=REPO, start_new_session=True))
    deadline = time.monotonic() + timeout
    failed = None
    while any(p.poll() is None for p in procs):
      bad = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      if bad:
        failed = f"process {bad[0]} exited with {procs[bad[0]].returncode}"
        break
      if time.monotonic() > deadline:
        failed = f"timed out after {timeout:.0f} s"
        break
      time.sleep(0.1)
    if failed is None:
      bad = [i for i, p in enumerate(procs) if p.returncode != 0]
      if bad:
        failed = f"process {bad[0]} exited with {procs[bad[0]].returncode}"
  finally:
    for p in procs:
      if p.poll() is None:
        try:
          os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
        p.wait()
    for log in logs:
      log.close()
  if failed:
    tails = "\n".join(f"--- proc{i} ---\n" + (log_dir / f"proc{i}.log").read_text()[-3000:]
                      for i in range(len(argvs)))
    raise AssertionError(f"multi-process run failed: {failed}\n{tails}")


# ----------------------------------------------------------------------------------------------
# The minimal model, step and checkpointing shared by the worker and the in-process run.

def _global_batch(step: int):
  """The global batch of a step: the same for any process count (each process slices it)."""
  rng = np.random.default_rng(1000 + step)
  x = rng.normal(size=(GLOBAL_BATCH, FEATURES)).astype(np.float32)
  y = (np.sin(x).sum(-1, keepdims=True) > 0).astype(np.float32)
  return {"x": x, "y": y}


def _make_trainer():
  import flax.struct
  import jax
  import jax.numpy as jnp
  import optax

  from d2m_jax.train import parallel_utils

  tx = optax.adam(3e-2)

  class State(flax.struct.PyTreeNode):
    step: jax.Array
    rng: jax.Array
    params: dict
    opt_state: optax.OptState

  def init(seed):
    rng = jax.random.PRNGKey(seed)
    k1, k2, rng = jax.random.split(rng, 3)
    params = {"w1": jax.random.normal(k1, (FEATURES, 8)) * 0.5, "b1": jnp.zeros((8,)),
              "w2": jax.random.normal(k2, (8, 1)) * 0.5, "b2": jnp.zeros((1,))}
    return State(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
                 opt_state=tx.init(params))

  def train_step(state, batch, axis_name=None):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(p):
      noise = 0.1 * jax.random.normal(rng, (FEATURES,))   # per-step randomness, batch-independent
      h = jnp.tanh((batch["x"] + noise) @ p["w1"] + p["b1"])
      logits = h @ p["w2"] + p["b2"]
      return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    grads, loss = parallel_utils.pmean((grads, loss), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {"loss": loss}

  return init, train_step


def train_segment(workdir: str, until: int, seed: int = 0) -> dict:
  """Restores the latest checkpoint in ``workdir`` (if any), trains to ``until``, saves.

  Works unchanged with 1 or N processes: the mesh spans ``jax.devices()`` (all processes), each
  process feeds its rows of the global batch, the restore target carries the current mesh's
  shardings. Returns host numpy params, step and last loss.
  """
  import jax
  import orbax.checkpoint as ocp
  from jax.sharding import NamedSharding, PartitionSpec as P

  from d2m_jax.train import distributed

  init, train_step = _make_trainer()
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  step_fn = jax.jit(train_step, in_shardings=(replicated, data), out_shardings=(replicated, None),
                    donate_argnums=0)
  mgr = ocp.CheckpointManager(os.path.abspath(workdir),
                              options=ocp.CheckpointManagerOptions(max_to_keep=5))
  latest = mgr.latest_step()
  if latest is None:
    state = jax.jit(init, static_argnums=0, out_shardings=replicated)(seed)
  else:
    shapes = jax.eval_shape(init, seed)
    state = mgr.restore(latest, args=ocp.args.StandardRestore(
        distributed.replicated_abstract_state(shapes, mesh)))
  n, p = jax.process_count(), jax.process_index()
  rows = slice(p * GLOBAL_BATCH // n, (p + 1) * GLOBAL_BATCH // n)
  loss = None
  for step in range(int(jax.device_get(state.step)), until):
    local = {k: v[rows] for k, v in _global_batch(step).items()}
    batch = {k: jax.make_array_from_process_local_data(data, v, (GLOBAL_BATCH,) + v.shape[1:])
             for k, v in local.items()}
    state, metrics = step_fn(state, batch)
    loss = metrics["loss"]
  mgr.save(until, args=ocp.args.StandardSave(state))
  mgr.wait_until_finished()
  mgr.close()
  host = jax.device_get(state)
  return {"params": host.params, "step": int(host.step),
          "loss": None if loss is None else float(jax.device_get(loss))}


def _worker_main(argv):
  """``worker NUM_PROCESSES PROCESS_ID PORT WORKDIR UNTIL OUT_JSON``; PORT 'slurm': everything
  from the (simulated) SLURM environment through JAX's own SLURM detection."""
  nproc, pid, port, workdir, until, out = argv
  nproc, pid, until = int(nproc), int(pid), int(until)
  from d2m_jax.train import distributed
  if port == "slurm":
    assert distributed.resolve(None).reason.startswith("SLURM job step with 2 tasks")
    assert distributed.maybe_initialize(None)
    assert jax_process_index() == int(os.environ["SLURM_PROCID"])
  else:
    assert distributed.maybe_initialize(
        {"mode": "on", "coordinator_address": f"localhost:{port}", "num_processes": nproc,
         "process_id": pid, "initialization_timeout": 60})
  assert distributed.maybe_initialize({"num_processes": nproc})     # idempotent
  import jax
  assert jax.process_count() == nproc and jax.device_count() == 2 * nproc, distributed.describe()
  # Agreement helpers: a flag raised on one process only (e.g. a NaN or SIGTERM seen there).
  agreement = {"any": distributed.agree_any(pid == nproc - 1),
               "all": distributed.agree_all(pid == nproc - 1),
               "all_true": distributed.agree_all(True),
               "broadcast": int(distributed.broadcast_from_main(np.int32(100 + pid)))}
  distributed.assert_same_everywhere(np.int32(until), "target step")
  result = train_segment(workdir, until)
  distributed.sync("segment done")
  if distributed.is_main_process():
    payload = {"agreement": agreement, "step": result["step"], "loss": result["loss"],
               "params": {k: np.asarray(v).tolist() for k, v in result["params"].items()}}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
      json.dump(payload, f)
    os.replace(tmp, out)


def jax_process_index():
  import jax
  return jax.process_index()


def _launch_pair(tmp_path, name, workdir, until, slurm=False):
  port = free_port()
  out = tmp_path / f"{name}.json"
  envs = None
  if slurm:   # what srun sets for a 2-task job step on one node
    envs = [{"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
             "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i), "SLURM_STEP_NUM_NODES": "1",
             "JAX_COORDINATOR_PORT": str(port)} for i in range(2)]
  argvs = [[sys.executable, __file__, "worker", "2", str(i), "slurm" if slurm else str(port),
            str(workdir), str(until), str(out)] for i in range(2)]
  run_processes(argvs, tmp_path / name, timeout=180, envs=envs)
  result = json.loads(out.read_text())
  result["params"] = {k: np.asarray(v, np.float32) for k, v in result["params"].items()}
  return result


def _assert_params_close(a, b, what):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=2e-5, atol=2e-6,
                               err_msg=f"{what}: {k}")


# ----------------------------------------------------------------------------------------------
# Tests.

def test_two_processes_match_one_process_and_checkpoints_cross_process_counts(tmp_path):
  import jax
  assert jax.process_count() == 1 and jax.device_count() == 4
  multi, single = tmp_path / "ckpt_multi", tmp_path / "ckpt_single"

  # 2 processes x 2 devices, steps 0..3, checkpoint at 3; started as a (simulated) SLURM job step.
  two = _launch_pair(tmp_path, "two_0_3", multi, 3, slurm=True)
  assert two["agreement"] == {"any": True, "all": False, "all_true": True, "broadcast": 100}
  assert two["step"] == 3
  # 1 process x 4 devices, same global batches and seed.
  one = train_segment(str(single), 3)
  _assert_params_close(two["params"], one["params"], "2x2 vs 1x4 after 3 steps")
  assert abs(two["loss"] - one["loss"]) < 1e-5
  # Training moved the parameters (so the equality above is not vacuous).
  init_w1 = np.asarray(jax.device_get(_make_trainer()[0](0).params["w1"]))
  assert np.abs(one["params"]["w1"] - init_w1).max() > 1e-2

  # Save on 2 processes, resume on 1: continue the 2-process checkpoint here to step 5.
  resumed = train_segment(str(multi), 5)
  reference = train_segment(str(single), 5)
  assert resumed["step"] == 5
  _assert_params_close(resumed["params"], reference["params"], "2->1 resume at step 5")

  # Save on 1 process, resume on 2: the step-5 checkpoint above was written by this process.
  two_again = _launch_pair(tmp_path, "two_5_7", multi, 7)
  reference = train_segment(str(single), 7)
  assert two_again["step"] == 7
  _assert_params_close(two_again["params"], reference["params"], "1->2 resume at step 7")


def test_resolve_precedence_and_cluster_detection():
  from d2m_jax.train import distributed as d

  assert not d.resolve(None, env={}).initialize
  spec = d.resolve({"coordinator_address": "h0:1234", "num_processes": 4, "process_id": 2},
                   env={})
  assert spec.initialize and spec.kwargs()["coordinator_address"] == "h0:1234"
  assert (spec.num_processes, spec.process_id) == (4, 2)
  # Flags win over config, config wins over D2M_* environment variables.
  env = {"D2M_COORDINATOR_ADDRESS": "envhost:1", "D2M_NUM_PROCESSES": "8", "D2M_PROCESS_ID": "7"}
  spec = d.resolve({"num_processes": 2, "process_id": 1}, env=env, process_id=0)
  assert (spec.coordinator_address, spec.num_processes, spec.process_id) == ("envhost:1", 2, 0)
  assert d.resolve(None, env=env).process_id == 7
  # SLURM: multi-task job steps initialize and leave the values to JAX's SLURM detection.
  slurm = {"SLURM_JOB_ID": "42", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "16",
           "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}
  spec = d.resolve(None, env=slurm)
  assert spec.initialize and "SLURM" in spec.reason and spec.num_processes is None
  assert not d.resolve(None, env=dict(slurm, SLURM_NTASKS="1")).initialize
  # ... except when SLURM bound a single GPU to the task: it is then local device 0.
  assert d.resolve(None, env=dict(slurm, CUDA_VISIBLE_DEVICES="3")).local_device_ids == (0,)
  assert d.resolve(None, env=dict(slurm, CUDA_VISIBLE_DEVICES="0,1")).local_device_ids is None
  assert not d.resolve({"mode": "off"}, env=slurm).initialize
  assert d.resolve(None, env={"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}).initialize
  assert not d.resolve(None, env={"TPU_WORKER_HOSTNAMES": "t0"}).initialize
  # mode='on' with nothing known: JAX's own detection (a GCE TPU pod) decides.
  spec = d.resolve({"mode": "on"}, env={})
  assert spec.initialize and spec.coordinator_address is None
  assert d.resolve({"local_device_ids": "0,1"}, env={"SLURM_NTASKS": "1"},
                   mode="on").local_device_ids == (0, 1)
  assert not d.resolve({"num_processes": 1, "process_id": 0}, env={}).initialize


@pytest.mark.parametrize("fields, message", [
    ({"coordinator_address": "nohostport", "num_processes": 2, "process_id": 0}, "host:port"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "process_id"),
    ({"num_processes": 2}, "missing coordinator_address, process_id"),
    ({"mode": "sometimes"}, "distributed.mode"),
    ({"local_device_ids": "0,a", "mode": "on"}, "local_device_ids"),
])
def test_resolve_rejects_bad_settings(fields, message):
  from d2m_jax.train import distributed as d
  with pytest.raises(d.DistributedError, match=message):
    d.resolve(fields, env={})


def test_initialize_after_jax_use_is_a_clear_error():
  import jax
  from d2m_jax.train import distributed as d
  jax.devices()   # the backend is up (as in any test process)
  assert d.maybe_initialize(None) is False   # nothing requested: a no-op
  with pytest.raises(d.DistributedError, match="first thing in main"):
    d.maybe_initialize({"coordinator_address": "localhost:1", "num_processes": 2,
                        "process_id": 0})
  # Single process: the helpers are plain local operations.
  assert d.agree_any(True) and not d.agree_any(False) and not d.agree_all(False)
  assert d.broadcast_from_main({"a": 3}) == {"a": 3} and d.is_main_process()


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "worker":
    _worker_main(sys.argv[2:])
  else:
    raise SystemExit(f"usage: {sys.argv[0]} worker NPROC PID PORT WORKDIR UNTIL OUT_JSON")
