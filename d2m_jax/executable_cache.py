"""Whole compiled programs kept between processes: a second call skips tracing and lowering too.

JAX's persistent compilation cache (:mod:`d2m_jax.compile_cache`) saves the XLA compile, but
every process still traces the Python function and lowers it to find the cache key: for the
Dancing2Music generator (a scan of while loops over vmapped GRUs) that is ~0.6-0.9 s of the
~0.9 s "model" phase of a second ``launch/generate.py`` call on 2 CPU cores (cProfile,
2026-12-04). Here the *compiled executable* is serialized
(``jax.experimental.serialize_executable``) after its first compile and loaded by later
processes, keyed by everything that decides what was traced:

* the caller's name and key (the generator passes its task config as JSON);
* the argument tree, shapes and dtypes;
* jax, jaxlib and flax versions, ``$XLA_FLAGS``, the backend, its device kind and count;
* a hash of the source of the whole ``d2m_jax`` package (a code change is a new key).

Opt-in per process (:func:`enable`; ``launch/generate.py`` turns it on beside the compilation
cache, in ``<compilation cache>_executables``). Entries are written atomically; an entry that
cannot be read or loaded is reported in one warning line and compiled again. Like JAX's own
cache it holds code: keep it in a folder only you can write to.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pathlib
import pickle
from typing import Any, Callable, Dict, Optional

import jax

_DIR: Optional[str] = None
_MEMO: Dict[str, Any] = {}          # key -> loaded executable, for several calls in one process
_CACHE_HITS = [0]                    # JAX persistent-cache hits seen by this process
_LISTENING = [False]


def enable(path: Optional[str]) -> Optional[str]:
  """Keeps executables in ``path`` (created); None turns the cache off. Returns the folder."""
  global _DIR
  if path is None:
    _DIR = None
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.warning("executable cache %s: %s; running without it", path, e)
    path = None
  _DIR = path
  if path and not _LISTENING[0]:  # listeners cannot be removed: one per process
    jax.monitoring.register_event_listener(_on_event)
    _LISTENING[0] = True
  return path


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event == "/jax/compilation_cache/cache_hits":
    _CACHE_HITS[0] += 1


@functools.lru_cache(maxsize=None)
def source_hash() -> str:
  """sha256 over the path and bytes of every ``.py`` file of the ``d2m_jax`` package."""
  root = pathlib.Path(__file__).resolve().parent
  h = hashlib.sha256()
  for f in sorted(root.rglob("*.py")):
    h.update(str(f.relative_to(root)).encode())
    h.update(f.read_bytes())
  return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _environment() -> tuple:
  """What decides a program and stays fixed for the process: versions, flags, device, source."""
  dev = jax.devices()[0]
  return tuple(sorted(dict(
      jax=jax.__version__, jaxlib=jax.lib.__version__, flax=_version("flax"),
      xla_flags=os.environ.get("XLA_FLAGS", ""), platform=dev.platform,
      device_kind=getattr(dev, "device_kind", ""), devices=jax.device_count(),
      source=source_hash()).items()))


def cache_key(name: str, key: str, args: tuple) -> str:
  """The entry's name: a hash of what decides the traced program (see the module docstring)."""
  leaves, tree = jax.tree.flatten(args)
  parts = dict(name=name, key=key, tree=str(tree),
               avals=[(tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x).__name__)))
                      for x in leaves],
               environment=_environment())
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def _version(package: str) -> str:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return ""


def _load(path: str):
  from jax.experimental import serialize_executable  # pylint: disable=import-outside-toplevel
  with open(path, "rb") as f:
    payload, in_tree, out_tree, num_devices = pickle.load(f)
  return serialize_executable.deserialize_and_load(
      payload, in_tree, out_tree, execution_devices=jax.local_devices()[:num_devices])


def _store(path: str, compiled) -> None:
  from jax.experimental import serialize_executable  # pylint: disable=import-outside-toplevel
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  num_devices = max((len(s.device_set) for s in jax.tree.leaves(compiled.input_shardings)),
                    default=1)
  blob = pickle.dumps((*serialize_executable.serialize(compiled), num_devices))
  with files.atomic_open(path, "wb") as f:
    f.write(blob)


def call(name: str, fn: Callable, args: tuple, *, key: str = ""):
  """``fn(*args)`` for a ``jax.jit``-ed ``fn``, through a kept executable when the cache is on.

  Off (the default): exactly ``fn(*args)``. On: the executable of ``(name, key, args' avals)`` is
  taken from this process's memo, else loaded from the folder, else compiled (``fn.lower(*args)
  .compile()``) and written there.
  """
  if _DIR is None:
    return fn(*args)
  k = cache_key(name, key, args)
  exe = _MEMO.get(k)
  if exe is None:
    path = os.path.join(_DIR, f"{name}-{k}.exe")
    if os.path.exists(path):
      try:
        exe = _load(path)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("executable cache: %s could not be loaded (%s: %s); compiling again",
                        path, type(e).__name__, e)
    if exe is None:
      exe, fresh = _compile(fn, args, f"{name}_{k[:12]}")
      if fresh:
        try:
          _store(path, exe)
        except Exception as e:  # pylint: disable=broad-except
          logging.warning("executable cache: could not write %s (%s: %s)", path,
                          type(e).__name__, e)
    _MEMO[k] = exe
  return exe(*args)


def _compile(fn: Callable, args: tuple, module_name: str):
  """(executable, compiled afresh?). The program is wrapped under its entry's name, so JAX's
  persistent cache (keyed by the module) holds it only if this entry was compiled before:
  on CPU (jaxlib 0.10) an executable loaded from that cache serializes into bytes that do not
  run ("Function ... not found"), so such a one is used but not kept (checked through JAX's
  cache-hit events)."""
  def program(*a):
    return fn(*a)
  program.__name__ = program.__qualname__ = module_name
  hits = _CACHE_HITS[0]
  exe = jax.jit(program).lower(*args).compile()
  return exe, _CACHE_HITS[0] == hits
