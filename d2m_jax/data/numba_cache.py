"""numba's on-disk cache for librosa's kernels: a folder of the project's own, filled safely.

librosa compiles its numba kernels with ``cache=True``. numba's docs ("Notes on Caching", cache
sharing) call concurrent reading and writing of one cache folder safe, because every file is
written to a unique temporary name and then replaced; its ``@guvectorize`` cache is the
exception: numba issue #10128 ("Race condition in GUFunc caching can lead to segmentation
faults", open; a fix is proposed in numba PR #10545) shows two processes compiling the same
gufuncs at once leaving a kernel ``.nbc`` from one process paired with a ``guf-*.nbc`` wrapper from
the other, and every later process that loads the pair segfaults. librosa's beat tracker kernels
are such gufuncs, compiled at import: a first ``launch/preprocess.py`` with 2 workers on a fresh
install poisoned the cache that way (tracker issue 12). So:

* :func:`configure` points ``NUMBA_CACHE_DIR`` at ``$XDG_CACHE_HOME/d2m_jax/numba`` (default
  ``~/.cache/d2m_jax/numba``) unless the user set it; it runs when ``d2m_jax.data.features`` is
  imported, which is before anything of ours imports librosa or numba.
* :func:`import_librosa` imports librosa's gufunc modules holding a lock file in that folder
  (exclusive until the cache is known good, shared after), so first compilations never overlap.
* :func:`ensure_warm` compiles every kernel the features use once, in a child process, on a
  2 s signal, and records that in a marker file. If the child is killed by a signal (a cache
  poisoned by an older version, or by another program sharing the folder), the folder is moved
  aside and the warm-up retried once with a fresh one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from d2m_jax import files

ENV = "NUMBA_CACHE_DIR"
WARMING_ENV = "D2M_NUMBA_WARMING"      # set in the warm-up child: no nested warm-up
MARKER = "d2m_warm.json"
LOCK = ".d2m_compile.lock"
WARM_VERSION = 1                       # bump when the features start using other kernels
_LIBROSA_MODULES = ("librosa.util", "librosa.onset", "librosa.beat", "librosa.feature")
# The warm-up child runs the features themselves (features imports this module, never the
# reverse: no import cycle).
_WARM_CODE = "from d2m_jax.data import features; features.warm_kernels()"


class NumbaCacheError(RuntimeError):
  """The numba cache crashes processes even after a fresh start."""


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "d2m_jax", "numba")


def configure() -> str:
  """Sets NUMBA_CACHE_DIR (a user's own setting wins) and returns it. Cheap and idempotent."""
  path = os.environ.get(ENV) or default_dir()
  os.environ[ENV] = path
  if "numba" in sys.modules:  # numba reads NUMBA_CACHE_DIR at import; re-read it if imported
    from numba.core import config  # pylint: disable=import-outside-toplevel
    if config.CACHE_DIR != path:
      config.reload_config()
  return path


def _versions() -> dict:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  return dict(warm=WARM_VERSION, python=sys.version.split()[0],
              numba=metadata.version("numba"), librosa=metadata.version("librosa"))


def is_warm(path: str | None = None) -> bool:
  path = path or configure()
  try:
    with open(os.path.join(path, MARKER)) as f:
      return json.load(f) == _versions()
  except (OSError, ValueError):
    return False


@contextlib.contextmanager
def compile_lock(path: str, exclusive: bool = True):
  """A lock file in the cache folder: one compiling process at a time."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, LOCK), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def import_librosa():
  """librosa, with its numba kernels loaded from (or compiled into) the project cache safely."""
  import importlib  # pylint: disable=import-outside-toplevel
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = configure()
  if importlib.util.find_spec("librosa") is None:   # the usual error, not a failed warm-up
    raise ModuleNotFoundError("No module named 'librosa'", name="librosa")
  if not os.environ.get(WARMING_ENV) and "librosa.beat" not in sys.modules:
    ensure_warm(path)
  if "librosa.beat" not in sys.modules:
    lock = (contextlib.nullcontext() if os.environ.get(WARMING_ENV)   # the parent holds it
            else compile_lock(path, exclusive=not is_warm(path)))
    with lock:
      for name in _LIBROSA_MODULES:
        importlib.import_module(name)
  import librosa  # pylint: disable=import-outside-toplevel
  return librosa


def quarantine(path: str) -> str:
  """Moves a cache folder aside (kept for a bug report, not deleted); returns the new name."""
  base = f"{path.rstrip(os.sep)}.crashed-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
  aside, n = base, 1
  while os.path.exists(aside):        # two crashes within one second of one process
    aside, n = f"{base}-{n}", n + 1
  os.replace(path, aside)
  os.makedirs(path, exist_ok=True)
  return aside


def signal_name(returncode: int) -> str:
  try:
    return signal.Signals(-returncode).name
  except ValueError:
    return f"signal {-returncode}"


def _run_warm_child(path: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, **{ENV: path, WARMING_ENV: "1"})
  return subprocess.run([sys.executable, "-c", _WARM_CODE], env=env, capture_output=True,
                        text=True, check=False)


def ensure_warm(path: str | None = None, log=None) -> str:
  """Makes sure the cache folder holds good compiled kernels for the features; returns it.

  Free when the marker says so. Otherwise compiles in a child process (holding the compile lock);
  a child killed by a signal means a poisoned cache: the folder is moved aside and the warm-up
  retried once. Raises NumbaCacheError if it crashes again, RuntimeError on another failure.
  """
  path = path or configure()
  if is_warm(path):
    return path
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  for attempt in range(2):
    with compile_lock(path):
      if is_warm(path):           # another process warmed it while we waited
        return path
      t0 = time.time()
      proc = _run_warm_child(path)
      if proc.returncode == 0:
        files.write_text(os.path.join(path, MARKER), json.dumps(_versions()))
        log(f"numba: compiled librosa's kernels into {path} ({time.time() - t0:.1f} s, once)")
        return path
    if proc.returncode > 0:
      tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
      raise RuntimeError(f"{path}: warming numba's cache failed: {tail}")
    sig = signal_name(proc.returncode)
    if attempt == 0:
      aside = quarantine(path)
      log(f"numba: the cache in {path} crashed a process ({sig}): moved it to {aside}, "
          "compiling afresh")
  raise NumbaCacheError(f"{path}: librosa's numba kernels crash ({sig}) even with a fresh "
                        "cache folder")
