"""Atomic writes: every file the product writes goes through here.

A file is written to a temporary name in its own folder (so the final rename never crosses a
file system) and ``os.replace``d onto its name only once complete; on any error the temporary
file is removed and an existing file of that name is left as it was. Readers therefore see
either the old file or the whole new one, never half of it (a kill, a full disk, a bad value in
the middle of a JSON dump).

* :func:`atomic_path`: a temporary PATH with the final name's extension, for writers that want a
  path (``soundfile``, ``np.savez``, matplotlib, ffmpeg);
* :func:`atomic_open`: a file object;
* :func:`write_text`, :func:`write_json`, :func:`save_npz`: the common cases.

Temporary files are made with the usual mode (``0666 & ~umask``), not ``mkstemp``'s 0600.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Iterator, Optional

import numpy as np


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path next to ``path`` (same extension); on a clean exit it becomes
  ``path`` (``os.replace``), on an exception it is removed and ``path`` is untouched."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  base = os.path.basename(path)
  ext = os.path.splitext(base)[1]
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: Optional[str] = None):
  """``open``'s file object for a temporary file that becomes ``path`` on a clean exit."""
  if not mode.startswith("w"):
    raise ValueError(f"atomic_open({path!r}, mode={mode!r}): only write modes ('w', 'wb')")
  if encoding is None and "b" not in mode:
    encoding = "utf-8"
  with atomic_path(path) as tmp:
    with open(tmp, mode, encoding=encoding) as f:
      yield f


def write_with(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
  """Calls ``write(fileobj)`` on a temporary file that then becomes ``path``."""
  with atomic_open(path, mode) as f:
    write(f)


def write_text(path: str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def json_default(x):
  """``json.dump``'s ``default`` for numpy values: arrays as lists, scalars as Python numbers."""
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if hasattr(x, "__array__"):       # jax arrays
    return np.asarray(x).tolist()
  raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_json(path: str, obj: Any, *, indent: Optional[int] = 2, sort_keys: bool = True) -> None:
  """``obj`` as JSON (numpy values converted; a trailing newline)."""
  with atomic_open(path, "w") as f:
    json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=json_default)
    f.write("\n")


def save_npz(path: str, *, compressed: bool = False, **arrays) -> None:
  """``np.savez``/``np.savez_compressed`` of ``arrays`` to exactly ``path``."""
  with atomic_open(path, "wb") as f:
    (np.savez_compressed if compressed else np.savez)(f, **arrays)
