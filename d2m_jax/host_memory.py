"""Host memory: keep the memory XLA:CPU frees between steps instead of handing it back to the OS.

XLA:CPU allocates the temporaries of each execution as one block and frees it when the step
ends: 851 MB for the style_improved (GRU-512x2) training step at batch 256. glibc serves a block
that size with ``mmap`` and returns it with ``munmap`` (its worker threads' arenas map large
blocks whatever ``M_MMAP_MAX`` says), so every step first-touches all of its temporary memory
again: 208,000 page faults per step, each a kernel trap that zeroes 4 KiB. Measured on the 2-core
development VM (docs/performance.md, "Host memory"): 1.45 s -> 1.26 s per style_improved B=256
step, 2.78 -> 2.47 CPU-seconds, 208K -> 0 page faults per step.

``configure("keep")`` sets glibc's ``mallopt``: one arena for every thread (``M_ARENA_MAX=1``),
no ``mmap`` for large blocks (``M_MMAP_MAX=0``) and no trimming of the heap's top
(``M_TRIM_THRESHOLD`` never reached; a 2 GiB threshold still unmapped the 4 GB of the
d2m_decomposition B=256 step), so a freed step's block is reused by the next step already
mapped. The cost: the process keeps its peak heap for its lifetime, and every thread allocates
from one arena (glibc's per-thread caches still serve small blocks without the lock). ``"system"`` leaves glibc's defaults.

It must run before JAX starts its backend (the first array or compile): XLA's worker threads
take their arena then and keep it. Called later it changes nothing for them and says so. On a
C library other than glibc (macOS, musl) it does nothing and says so.

The launchers call it first (``--host_malloc``, default ``$D2M_HOST_MALLOC`` or ``keep``), and so
do the benchmarks, whose records carry the mode; the PyTorch peer in ``benchmarks/compare.py``
runs under the same setting, in a process of its own on CPU (``benchmarks/peers.py``).
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Optional

MODES = ("keep", "system")
ENV = "D2M_HOST_MALLOC"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1   # mallopt's int -1 becomes glibc's size_t SIZE_MAX: a threshold never reached

_state = {"mode": None}


def default_mode() -> str:
  """``$D2M_HOST_MALLOC`` when set, else ``keep``."""
  return os.environ.get(ENV, "keep")


def _glibc():
  """The process's C library when it is glibc (has ``gnu_get_libc_version``), else None."""
  try:
    libc = ctypes.CDLL(None)
    version = libc.gnu_get_libc_version
  except (OSError, AttributeError):
    return None, None
  version.restype = ctypes.c_char_p
  return libc, version().decode()


def _backend_started() -> bool:
  if "jax" not in sys.modules:   # nothing can have started it: no need to import jax to ask
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):   # no jax, or an API that moved: cannot tell
    return False


def configure(mode: Optional[str] = None) -> str:
  """Applies ``mode`` (``keep`` | ``system``; None: :func:`default_mode`) once per process and
  returns what is in force, for records and logs: ``keep``, ``system``, or ``system (<why>)``
  when ``keep`` was asked for but cannot apply. Raises ``ValueError`` on an unknown mode."""
  mode = default_mode() if mode is None else mode
  if mode not in MODES:
    raise ValueError(f"unknown host_malloc {mode!r} (argument or ${ENV}); expected one of "
                     f"{', '.join(MODES)}")
  if _state["mode"] is not None:
    if _state["mode"] != mode and not _state["mode"].startswith(mode):
      logging.getLogger(__name__).warning(
          "host_malloc is already %s in this process; %r changes nothing", _state["mode"], mode)
    return _state["mode"]
  if mode == "system":
    _state["mode"] = "system"
    return "system"
  libc, version = _glibc()
  if libc is None:
    _state["mode"] = "system (not glibc)"
  elif _backend_started():
    _state["mode"] = "system (JAX backend already started)"
  else:
    ok = all(libc.mallopt(p, v) == 1 for p, v in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER)))
    _state["mode"] = "keep" if ok else f"system (glibc {version} refused mallopt)"
  if _state["mode"] != "keep":
    logging.getLogger(__name__).warning("host_malloc=keep not applied: %s", _state["mode"])
  return _state["mode"]


def configure_or_exit(mode: Optional[str] = None) -> str:
  """:func:`configure` for entry points: an unknown mode (a bad ``$D2M_HOST_MALLOC``) ends the
  process with one ``error:`` line and exit status 1 instead of a traceback."""
  try:
    return configure(mode)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None


def current() -> Optional[str]:
  """What :func:`configure` put in force in this process (None: not called)."""
  return _state["mode"]
