"""What the launchers share for bad input: flag/config parsing that ends in one line.

``app.run(main, flags_parser=cli.flags_parser())`` parses the flags like absl does, but a
misspelled config key (``--config.optim.lrr=1``: the key path and the nearest valid keys, by
difflib), a config file that does not exist or does not load, a value of the wrong type or a
missing required flag print ``error: <one line>`` to stderr and exit 2 instead of a traceback.
:func:`fail` is the one way the launchers print such a line and exit; :data:`USER_ERRORS` are the
exception types they turn into it (matched by type, never by class name).
"""
from __future__ import annotations

import errno
import importlib.util
import os
import sys
from typing import Optional, Sequence

from absl import flags

from d2m_jax.data.errors import DataError
from d2m_jax.train import errors
from d2m_jax.train import workdir as workdir_lib

USER_ERRORS = (errors.UserError, DataError)


def fail(message: str, code: int = 1):
  """Prints ``error: message`` (one line) to stderr and exits with ``code``; with
  ``D2M_TRACEBACK`` set the current exception is re-raised instead (for debugging)."""
  if os.environ.get("D2M_TRACEBACK") and sys.exc_info()[0] is not None:
    raise  # pylint: disable=misplaced-bare-raise
  text = " ".join(str(message).split())  # one line, whatever the exception held
  print(f"error: {text}", file=sys.stderr, flush=True)
  sys.exit(code)


def _config_path(argv: Sequence[str], name: str) -> Optional[str]:
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config(spec: str):
  path, arg = spec, None
  if not os.path.exists(path) and ":" in spec:
    path, arg = spec.rsplit(":", 1)
  mod_spec = importlib.util.spec_from_file_location("_d2m_cli_config", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _override_problem(argv: Sequence[str], name: str) -> Optional[str]:
  """The first ``--name.a.b=...`` override whose key path the config lacks (one line)."""
  spec = _config_path(argv, name)
  if spec is None:
    return None
  try:
    config = _load_config(spec)
  except Exception:  # pylint: disable=broad-except
    return None
  for a in argv:
    if a.startswith(f"--{name}.") or a.startswith(f"--no{name}."):
      dotted = a.split("=", 1)[0][len(f"--{name}."):] if a.startswith("--" + name) else \
          a.split("=", 1)[0][len(f"--no{name}."):]
      msg = workdir_lib.unknown_key_message(config, dotted, flag=f"--{name}")
      if msg:
        return msg
  return None


def flags_parser(config_names: Sequence[str] = ("config",), code: int = 2):
  """An ``app.run`` flags parser: absl's parse, with every config/flag problem as one line."""

  def parse(argv):
    fl = flags.FLAGS
    try:
      rest = fl(argv)
    except flags.Error as e:
      fail(str(e).splitlines()[0] if str(e) else type(e).__name__, code)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      problem = None
      for name in config_names:
        problem = problem or _override_problem(argv, name)
      fail(problem or f"bad config override: {type(e).__name__}: {e}", code)
    for name in config_names:
      if name not in fl or _config_path(argv, name) is None:
        continue
      try:
        fl[name].value  # pylint: disable=pointless-statement  (loads the file lazily)
        _ = getattr(fl, name).keys()
      except Exception as e:  # pylint: disable=broad-except
        spec = _config_path(argv, name)
        path = spec if os.path.exists(spec) or ":" not in spec else spec.rsplit(":", 1)[0]
        if not os.path.exists(path):
          fail(f"--{name}={spec}: config file not found", code)
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        fail(f"--{name}={spec}: the config file does not load ({first[-1] if first else e})",
             code)
    return rest

  return parse


def guarded(main, argv, code: int = 2) -> int:
  """Runs a launcher's ``main(argv)``; every :data:`USER_ERRORS` (a damaged checkpoint met
  while restoring, a locked workdir, bad data, ...) becomes one line and exit ``code``."""
  try:
    return main(argv)
  except USER_ERRORS as e:
    fail(str(e), code)
  except OSError as e:
    if e.errno == errno.ENOSPC:
      fail(f"no space left on device: {e}", code)
    raise
