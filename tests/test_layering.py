"""The package's layers, enforced: no module under ``d2m_jax/`` imports from a layer above it.

Layer order, top to bottom (a module may import from its own layer and any layer below):

  launch/, benchmarks/         (not under d2m_jax/: the thin launchers; they build the Task
                                from the config and hand it down)
  evaluation                   d2m_jax.metrics.evaluation (generates dances, then scores them)
  generation                   d2m_jax.generate, d2m_jax.render, d2m_jax.generator_export
  tasks                        d2m_jax.tasks (each implements the engine's Task contract)
  engine                       d2m_jax.train (handed a Task; never looks tasks up itself)
  models                       d2m_jax.models, d2m_jax.metrics (the pure metrics)
  nn                           d2m_jax.nn (layers, recurrences, collectives)
  ground                       d2m_jax.data, d2m_jax.compile_cache and
                               d2m_jax.executable_cache, d2m_jax.configs (config
                               loading, optional fields), d2m_jax.files (atomic writes),
                               d2m_jax.target (the backend a program is traced for),
                               d2m_jax.host_memory (the allocator setting, set before JAX
                               starts), d2m_jax/__init__.py

Every import is checked, function-local (lazy) ones included, by parsing the source with ``ast``
(nothing is imported, so the test is fast and sees imports on code paths tests never run).
"""
from __future__ import annotations

import ast
import pathlib
from typing import Iterator, List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "d2m_jax"

# (layer name, module prefixes), top to bottom.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("evaluation", ("d2m_jax.metrics.evaluation",)),
    ("generation", ("d2m_jax.generate", "d2m_jax.render", "d2m_jax.generator_export")),
    ("tasks", ("d2m_jax.tasks",)),
    ("engine", ("d2m_jax.train",)),
    ("models", ("d2m_jax.models", "d2m_jax.metrics")),
    ("nn", ("d2m_jax.nn",)),
    ("ground", ("d2m_jax.data", "d2m_jax.compile_cache", "d2m_jax.executable_cache",
                "d2m_jax.configs", "d2m_jax.files", "d2m_jax.target", "d2m_jax.host_memory",
                "d2m_jax")),
]


def layer_of(module: str) -> int:
  """Index into LAYERS (0 = top) of the longest prefix that owns ``module``; -1 if none."""
  best, best_len = -1, -1
  for i, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      owns = module == p or (p != "d2m_jax" and module.startswith(p + "."))
      if owns and len(p) > best_len:
        best, best_len = i, len(p)
  return best


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[Tuple[int, str]]:
  """(line, absolute module name) of every d2m_jax import in ``source``. ``from d2m_jax.x
  import y`` yields ``d2m_jax.x.y`` when that is a module of ours, else ``d2m_jax.x``."""
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: resolve against this module's package
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
      else:
        target = node.module or ""
      for alias in node.names:
        sub = f"{target}.{alias.name}"
        yield node.lineno, sub if _is_our_module(sub) else target


def _is_our_module(name: str) -> bool:
  rel = pathlib.Path(*name.split("."))
  return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel).is_dir()  # (namespace pkgs too)


def upward_imports(source: str, module: str, is_package: bool = False) -> List[str]:
  """The imports of ``source`` (as module ``module``) that point to a layer above it."""
  mine = layer_of(module)
  bad = []
  for line, target in imported_modules(source, module, is_package):
    if not (target == "d2m_jax" or target.startswith("d2m_jax.")):
      continue
    theirs = layer_of(target)
    if theirs < mine:
      bad.append(f"{module}:{line} imports {target} "
                 f"({LAYERS[mine][0]} -> {LAYERS[theirs][0]}, which is above it)")
  return bad


def _package_files() -> List[pathlib.Path]:
  return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
  unassigned = [module_name(p) for p in _package_files() if layer_of(module_name(p)) < 0]
  assert not unassigned, f"modules in no layer (add them to LAYERS): {unassigned}"


def test_no_module_imports_from_a_layer_above():
  files = _package_files()
  assert len(files) > 20  # the walk found the package
  bad = []
  for p in files:
    bad += upward_imports(p.read_text(), module_name(p), p.name == "__init__.py")
  assert not bad, "upward imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("module,source", [
    ("d2m_jax.train.loop", "def f():\n  from d2m_jax.tasks import get_task\n"),
    ("d2m_jax.train.checkpoint", "import d2m_jax.tasks.style\n"),
    ("d2m_jax.models.kmeans", "from d2m_jax.train.parallel_utils import psum\n"),
    ("d2m_jax.nn.rnn", "from d2m_jax import models\n"),
    ("d2m_jax.data.features", "from ..generate import prepare_music\n"),
])
def test_checker_flags_the_imports_that_used_to_climb(module, source):
  """The checker itself: each of these (two were in the tree until this test came) is caught."""
  assert len(upward_imports(source, module)) == 1


def test_checker_allows_downward_and_sibling_imports():
  assert not upward_imports("from d2m_jax.nn.collectives import psum\n", "d2m_jax.models.kmeans")
  assert not upward_imports("from d2m_jax.train.task import Task\n", "d2m_jax.tasks.style")
  assert not upward_imports("from d2m_jax.data import pipeline\n", "d2m_jax.train.loop")
  assert not upward_imports("from . import rnn\n", "d2m_jax.nn", is_package=True)


def import_graph() -> dict:
  """{module: sorted d2m_jax modules it imports} over every module of the package, function-local
  imports included (a lazy import still makes a cycle: each module needs the other)."""
  graph = {}
  for p in _package_files():
    m = module_name(p)
    graph[m] = sorted({t for _, t in imported_modules(p.read_text(), m, p.name == "__init__.py")
                       if (t == "d2m_jax" or t.startswith("d2m_jax.")) and t != m})
  return graph


def import_cycles(graph: dict) -> List[List[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        cycles.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return cycles


def test_import_cycles_are_found():
  g = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": ["e2"], "e2": []}
  assert import_cycles(g) == [["a", "b", "c"]]
  assert import_cycles({"x": ["y"], "y": []}) == []


def test_no_import_cycles_inside_the_package():
  graph = import_graph()
  assert "d2m_jax.nn.rnn_pallas" in graph.get("d2m_jax.nn.rnn", [])   # the walk sees imports
  cycles = import_cycles(graph)
  assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(
      " <-> ".join(c) for c in cycles)
