"""Test set-up: 4 fake CPU devices (before jax is imported) and shared fixtures."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
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
