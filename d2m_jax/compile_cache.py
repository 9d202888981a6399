"""JAX's persistent compilation cache, on by default for the launchers.

XLA executables compiled by one process are written to a folder and loaded by the next process
that compiles the same program on the same backend/jax version, so a second
``launch/generate.py`` (or a resumed ``launch/train.py``) does not recompile. JAX supports it on
CPU, GPU and TPU (jax >= 0.4.x; checked by ``tests/test_compile_cache.py`` on this jax).

Folder: ``$D2M_JAX_CACHE`` if set, else ``$XDG_CACHE_HOME/d2m_jax/jax_cache`` (default
``~/.cache/d2m_jax/jax_cache``). A folder the user gave jax itself (``JAX_COMPILATION_CACHE_DIR``)
is left as it is. The cache is trusted code: keep it in a folder only you can write to (JAX's
docs: "Sharing a compilation cache is equivalent to allowing anyone who can write to the cache
directory to run code on your machine").

Call :func:`enable` at the top of ``main``, BEFORE the first jax computation: jax decides once
per process, at its first compile, whether the cache is in use. :class:`CacheCounter` counts
hits and misses (JAX's ``/jax/compilation_cache/*`` monitoring events) so a launcher can say
what the cache did.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import jax

ENV_DIR = "D2M_JAX_CACHE"
# Programs that compile faster than this are not written. jax's default (1 s) skipped most of
# generation's programs, and on a busy 2-core machine even 0.2 s let tiny programs cross the line
# from one run to the next (a second run still compiled 4 of 7); entries of the small ones are a
# few KB, so every program is written and a second run compiles nothing.
MIN_COMPILE_SECS = 0.0

_HIT = "/jax/compilation_cache/cache_hits"
_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"


def default_dir() -> str:
  """``$D2M_JAX_CACHE``, else ``$XDG_CACHE_HOME/d2m_jax/jax_cache`` (``~/.cache/...``)."""
  if os.environ.get(ENV_DIR):
    return os.path.expanduser(os.environ[ENV_DIR])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "d2m_jax", "jax_cache")


def enable(enabled: bool = True, cache_dir: Optional[str] = None, *,
           min_compile_secs: float = MIN_COMPILE_SECS) -> Optional[str]:
  """Turns JAX's persistent compilation cache on (or, with ``enabled=False``, off).

  Args:
    enabled: False turns the cache off for this process (``--nocompilation_cache``), even when
      ``JAX_COMPILATION_CACHE_DIR`` is set.
    cache_dir: the folder (None: ``JAX_COMPILATION_CACHE_DIR`` if the user set it, else
      :func:`default_dir`). Created if missing.
    min_compile_secs: programs compiling faster than this are not written.
  Returns:
    The cache folder in use, or None when off.
  """
  if not enabled:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  path = cache_dir or jax.config.jax_compilation_cache_dir or default_dir()
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:  # an unwritable home must not stop the command: run uncached
    print(f"warning: compilation cache folder {path}: {e}; compiling without a cache",
          flush=True)
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  # Unbounded (jax's default max size, -1): a bound needs the `filelock` package, which GPU
  # images lack. Entries are written by process 0 only, never overwritten, and a half-written
  # entry read by a concurrent process is a warning and a recompile in jax, not a crash.
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
  # -1: write entries of any size (0 would let jax raise it for remote file systems).
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path


class CacheCounter:
  """Counts this process's persistent-cache lookups from the moment it is made.

  ``hits``: programs loaded from the folder; ``misses``: programs looked up, not found and
  compiled (those compiling faster than ``min_compile_secs`` are then not written, so they miss
  again next time). From JAX's monitoring events ``compile_requests_use_cache`` (one per lookup)
  and ``cache_hits``; listeners cannot be removed, so make one per process (launchers) or test.
  """

  def __init__(self):
    self.requests = 0
    self.hits = 0
    self._lock = threading.Lock()
    jax.monitoring.register_event_listener(self._on_event)

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event in (_REQUEST, _HIT):
      with self._lock:
        if event == _HIT:
          self.hits += 1
        else:
          self.requests += 1

  @property
  def misses(self) -> int:
    return self.requests - self.hits
