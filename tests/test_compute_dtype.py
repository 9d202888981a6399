"""``config.dtype``: 'auto' (the default) is bfloat16 on GPU/TPU and float32 on CPU."""
import jax.numpy as jnp
import ml_collections
import pytest

from d2m_jax.train import task
from d2m_jax.train.defaults import base_config


def test_auto_per_backend_and_explicit_names():
  c = ml_collections.ConfigDict({"dtype": "auto"})
  assert task.compute_dtype(c, "cpu") == jnp.float32
  assert task.compute_dtype(c, "gpu") == jnp.bfloat16
  assert task.compute_dtype(c, "tpu") == jnp.bfloat16
  assert task.compute_dtype(c) == jnp.float32  # the tests run on CPU
  for name, want in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    c.dtype = name
    assert task.compute_dtype(c, "gpu") == want and task.compute_dtype(c, "cpu") == want
  c.dtype = "float16"
  with pytest.raises(ValueError, match="config.dtype='float16'"):
    task.compute_dtype(c)


def test_default_is_auto():
  assert base_config().dtype == "auto"


def test_engine_logs_the_resolved_dtype():
  from d2m_jax.train import loop  # pylint: disable=import-outside-toplevel
  assert loop._dtype_label(ml_collections.ConfigDict({"dtype": "auto"})) == "auto->float32"
  assert loop._dtype_label(ml_collections.ConfigDict({"dtype": "bfloat16"})) == "bfloat16"
