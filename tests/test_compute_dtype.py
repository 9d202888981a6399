"""``config.dtype``: 'auto' (the default) is bfloat16 on GPU/TPU and float32 on CPU."""
import re

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


@pytest.mark.parametrize("name", ["style_paper", "wgan_audio", "d2m_composition"])
def test_shipped_configs_compute_in_bfloat16_on_accelerators_only(name):
  """The configs as shipped (none pins a dtype) resolve per backend, and the model the task
  builds from one traces its matmuls in that dtype: float32 on CPU, bfloat16 on GPU/TPU."""
  from d2m_jax import configs  # pylint: disable=import-outside-toplevel
  c = configs.load(name)
  assert task.compute_dtype(c, "gpu") == jnp.bfloat16
  assert task.compute_dtype(c, "tpu") == jnp.bfloat16
  assert task.compute_dtype(c, "cpu") == jnp.float32
  assert base_config().dtype == c.dtype


@pytest.mark.parametrize("backend,want", [("cpu", "f32"), ("gpu", "bf16")])
def test_default_config_builds_a_model_with_the_resolved_dtype(monkeypatch, backend, want):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax import configs  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  c = configs.load("style_paper", {"model.hidden": 4, "model.num_frames": 5})
  t = get_task(c)
  batch = t.synthetic_batch(2, np.random.default_rng(0))
  state = jax.eval_shape(lambda: t.init_state(jax.random.key(0), batch, None))
  jaxpr = str(jax.make_jaxpr(t.forward)(state, batch))
  # The result type of every matmul: "name:f32[...] = dot_general[...]".
  dots = re.findall(r":(\w+)\[[^\]]*\] = dot_general", jaxpr)
  assert dots and set(dots) == {want}, dots


def test_engine_logs_the_resolved_dtype():
  from d2m_jax.train import loop  # pylint: disable=import-outside-toplevel
  assert loop._dtype_label(ml_collections.ConfigDict({"dtype": "auto"})) == "auto->float32"
  assert loop._dtype_label(ml_collections.ConfigDict({"dtype": "bfloat16"})) == "bfloat16"
