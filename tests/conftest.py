"""Test set-up: 4 fake CPU devices (before jax is imported) and shared fixtures."""
import os
import pathlib

# 4 fake CPU devices; LLVM's backend optimisation off: the tests are compile-bound (tiny programs
# run once), and -O0 halves XLA:CPU compile time (a composition train step: 27 s -> 16 s) without
# changing what is computed. Speed figures come from benchmarks/, which keep the defaults.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "music_to_dance"


@pytest.fixture(scope="session")
def shared_data_dir():
  """The real dataset (../shared/data/music_to_dance); skips the test when it is absent."""
  if not (SHARED_DATA / "README.md").exists():
    pytest.skip(f"real dataset not present at {SHARED_DATA} (research data, never in the repo)")
  return SHARED_DATA


# ----------------------------------------------------------------- data fixtures (data helper) ---

TINY_SYNTHETIC = dict(synthetic_sequences_per_style=3, synthetic_seconds=10.0, synthetic_seed=0)


@pytest.fixture(scope="session")
def tiny_data_cfg(tmp_path_factory):
  """``config.data`` for a tiny synthetic dataset (4 styles x 3 sequences x 10 s; per style one
  train, one validation and one test sequence), generated, processed and built into a temporary
  folder once per session (all example kinds). Set ``cfg.kind`` to pick windows/units/sequences.

  Under pytest-xdist (the README's ``-n 2``) the workers share one copy: the first builds it in
  the run's common temporary folder under an exclusive lock, the others wait and reuse it.
  """
  import fcntl  # pylint: disable=import-outside-toplevel
  from d2m_jax.data import pipeline
  from d2m_jax.train.defaults import data_config
  cfg = data_config()
  cfg.source = "synthetic"
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent                  # common to every worker of this run
  cfg.data_dir = str(root / "d2m_tiny_data")
  cfg.batch_size = 8
  cfg.eval_batch_size = 8
  for k, v in TINY_SYNTHETIC.items():
    cfg[k] = v
  ready = root / "d2m_tiny_data.ready"
  with open(root / "d2m_tiny_data.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not ready.exists():
      pipeline.prepare(cfg, log=lambda s: None)
      ready.write_text("ok\n")
  return cfg
