"""The backend a program is being built for: ``jax.default_backend()`` unless overridden.

Every backend-dependent choice made while tracing (``config.dtype='auto'``, ``rnn_impl='auto'``
and the Pallas fallbacks of :func:`d2m_jax.nn.rnn.resolve_impl`, Pallas interpret mode,
``conv_impl='auto'``) asks :func:`backend` rather than ``jax.default_backend()``. Inside
``with targeting("gpu"):`` a CPU-only jaxlib traces exactly the program a GPU run would trace, so
``jax.export`` can lower it for ``platforms=("cuda",)`` (tests/test_export.py does this for every
config on every commit).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

_STATE = threading.local()

# jax.export platform names -> jax backend names
PLATFORM_BACKENDS = {"cuda": "gpu", "rocm": "gpu", "tpu": "tpu", "cpu": "cpu"}


def backend() -> str:
  """``'cpu'`` | ``'gpu'`` | ``'tpu'``: the override of :func:`targeting`, else jax's default."""
  override: Optional[str] = getattr(_STATE, "backend", None)
  if override is not None:
    return override
  import jax  # pylint: disable=import-outside-toplevel
  return jax.default_backend()


@contextlib.contextmanager
def targeting(name: str) -> Iterator[str]:
  """Within the block, :func:`backend` returns ``name`` (a backend or an export platform name)."""
  name = PLATFORM_BACKENDS.get(name, name)
  if name not in ("cpu", "gpu", "tpu"):
    raise ValueError(f"unknown target backend {name!r}; expected cpu, gpu, tpu, cuda or rocm")
  previous = getattr(_STATE, "backend", None)
  _STATE.backend = name
  try:
    yield name
  finally:
    _STATE.backend = previous
