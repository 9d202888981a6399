"""JAX's persistent compilation cache through ``d2m_jax.compile_cache``: a second process loads
what the first compiled (observed through JAX's own cache hit/miss monitoring events, not time),
and ``enable(False)`` writes nothing."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

REPO = str(pathlib.Path(__file__).resolve().parents[1])

# One jitted program (a small scan, so it is a real XLA compile), then the counter's view.
CHILD = r"""
import json, sys
from d2m_jax import compile_cache
path = compile_cache.enable(sys.argv[1] == "on", min_compile_secs=0.0)
counter = compile_cache.CacheCounter()
import jax, jax.numpy as jnp
def body(h, x):
  h = jnp.tanh(h @ jnp.eye(8) + x)
  return h, h.sum()
f = jax.jit(lambda xs: jax.lax.scan(body, jnp.zeros(8), xs)[1].sum())
value = float(f(jnp.ones((5, 8))))
print(json.dumps(dict(path=path, hits=counter.hits, misses=counter.misses, value=value)))
"""


def _run(cache_dir: pathlib.Path, mode: str = "on") -> dict:
  env = dict(os.environ, D2M_JAX_CACHE=str(cache_dir), JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  r = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, cwd=REPO,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


def _entries(d: pathlib.Path):
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_second_process_loads_what_the_first_compiled(tmp_path):
  cache = tmp_path / "jax_cache"
  first = _run(cache)
  assert first["path"] == str(cache)
  assert first["misses"] >= 1 and first["hits"] == 0
  written = _entries(cache)
  assert any(name.startswith("jit_") for name in written), written
  second = _run(cache)
  assert second["hits"] >= 1 and second["misses"] == 0  # nothing recompiled
  assert second["value"] == first["value"]  # the loaded program computes the same
  assert _entries(cache) == written  # nothing new written


def test_disabled_cache_writes_nothing(tmp_path):
  cache = tmp_path / "jax_cache"
  out = _run(cache, mode="off")
  assert out["path"] is None and out["hits"] == 0 and out["misses"] == 0
  assert _entries(cache) == []


def test_default_dir_precedence(monkeypatch, tmp_path):
  from d2m_jax import compile_cache
  monkeypatch.delenv("D2M_JAX_CACHE", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.default_dir() == str(tmp_path / "xdg" / "d2m_jax" / "jax_cache")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compile_cache.default_dir() == str(tmp_path / "home" / ".cache" / "d2m_jax" / "jax_cache")
  monkeypatch.setenv("D2M_JAX_CACHE", str(tmp_path / "mine"))
  assert compile_cache.default_dir() == str(tmp_path / "mine")
