"""Loading the model configs (``configs/<name>.py``) and reading optional config fields.

The command line's interface stays ``ml_collections.config_flags`` (``--config=configs/x.py
--config.model.hidden=8``); everything else (tests, benchmarks, configs that build on another
config) goes through :func:`load`, which runs the same ``config_flags`` parser, so a field is
parsed the same way whether it comes from a launcher's command line or from code:

* :func:`names`: every config in ``configs/``; :func:`variants`: its named variants (a config
  module's ``VARIANTS``, passed to ``get_config(variant)``; ``configs/x.py:variant`` on the
  command line);
* :func:`module`: ``configs/<name>.py`` as the module ``configs.<name>`` (for a config that
  reuses another's pieces);
* :func:`load`: a config by name, ``name:variant`` or path, with dotted overrides;
* :func:`get`: an optional field of a config (dict, ConfigDict or object), ``default`` when it
  is missing or None.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

_MISSING = object()


def get(config: Any, name: str, default: Any = None) -> Any:
  """``config.<name>`` (dotted names walk sub-configs), or ``default`` when a field on the way
  is missing or the value is None (an unset ``FieldReference``). Works on ConfigDicts, plain
  mappings and attribute objects; ``config=None`` gives ``default``."""
  node = config
  for part in name.split("."):
    if node is None:
      return default
    if isinstance(node, Mapping) or hasattr(node, "keys"):
      try:
        node = node[part] if part in node else _MISSING
      except TypeError:
        node = getattr(node, part, _MISSING)
    else:
      node = getattr(node, part, _MISSING)
    if node is _MISSING:
      return default
  return default if node is None else node


def names() -> Tuple[str, ...]:
  """Every config in ``configs/`` (file names without ``.py``), sorted."""
  return tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_")))


def module(name: str):
  """``configs/<name>.py`` imported as ``configs.<name>`` (once per process)."""
  path = CONFIG_DIR / f"{name}.py"
  if not path.is_file():
    raise FileNotFoundError(f"configs/{name}.py does not exist (configs: {', '.join(names())})")
  _register_package()
  return importlib.import_module(f"configs.{name}")


def variants(name: str) -> Tuple[Optional[str], ...]:
  """The named variants of a config (its module's ``VARIANTS``); ``(None,)`` when it has none."""
  return tuple(getattr(module(name), "VARIANTS", None) or (None,))


def _register_package():
  """Makes ``configs`` importable as the package in :data:`CONFIG_DIR` (whatever sys.path is)."""
  pkg = sys.modules.get("configs")
  if pkg is not None:
    paths = [pathlib.Path(p).resolve() for p in getattr(pkg, "__path__", [])]
    if CONFIG_DIR in paths:
      return
    raise ImportError(f"another package named 'configs' is imported ({paths}); the model "
                      f"configs live in {CONFIG_DIR}")
  spec = importlib.util.spec_from_file_location(
      "configs", CONFIG_DIR / "__init__.py", submodule_search_locations=[str(CONFIG_DIR)])
  pkg = importlib.util.module_from_spec(spec)
  sys.modules["configs"] = pkg
  spec.loader.exec_module(pkg)


def config_path(spec: str) -> Tuple[str, Optional[str]]:
  """(file path, variant) of ``name``, ``name:variant``, ``path.py`` or ``path.py:variant``."""
  spec = os.fspath(spec)
  base, _, variant = spec.partition(":")
  if base.endswith(".py") or os.sep in base:
    path = base
  else:
    path = str(CONFIG_DIR / f"{base}.py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config {spec!r}: {path} does not exist "
                            f"(configs: {', '.join(names())})")
  return path, (variant or None)


def load(spec: str, overrides: Union[Mapping[str, Any], Sequence[str], None] = None,
         variant: Optional[str] = None):
  """The config ``spec`` (a name, ``name:variant`` or a path) with ``overrides`` applied.

  ``overrides``: ``{"model.hidden": 8, ...}`` or ``["model.hidden=8", ...]``. String values are
  parsed by ``config_flags`` exactly as ``--config.model.hidden=8`` on a launcher's command line
  (the field's type decides); other values are set as they are. An unknown field is a KeyError
  naming it. Returns an unlocked ConfigDict.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  path, spec_variant = config_path(spec)
  variant = variant or spec_variant
  if isinstance(overrides, Mapping):
    items = list(overrides.items())
  else:
    items = [tuple(o.split("=", 1)) for o in (overrides or ())]
    bad = [o for o, i in zip(overrides or (), items) if len(i) != 2]
    if bad:
      raise ValueError(f"config overrides {bad}: expected 'field=value'")
  argv = ["load", f"--config={path}" + (f":{variant}" if variant else "")]
  direct = []
  for key, value in items:
    if isinstance(value, str):
      argv.append(f"--config.{key}={value}")
    else:
      direct.append((key, value))
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=False,
                                  sys_argv=argv)
  try:
    fv(argv)
  except (flags.Error, KeyError, AttributeError) as e:
    if not isinstance(e, flags.Error):  # an override naming no field: say which
      base = load(path, variant=variant)
      for key, _ in items:
        _check_field(base, key, spec)
    raise ValueError(f"config {spec!r}: {e}") from None
  config = fv["config"].value
  for key, value in direct:
    node, last = _check_field(config, key, spec)
    node[last] = value
  return config


def _check_field(config, key: str, spec: str):
  """(parent node, last name) of the dotted field ``key``; KeyError naming it when missing."""
  *parents, last = key.split(".")
  node = config
  for p in parents:
    if not hasattr(node, "keys") or p not in node:
      raise KeyError(f"config {spec!r} has no field {key!r}")
    node = node[p]
  if not hasattr(node, "keys") or last not in node:
    raise KeyError(f"config {spec!r} has no field {key!r}")
  return node, last
