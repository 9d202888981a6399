"""Whole compiled programs kept between processes (``d2m_jax/executable_cache.py``): a later
call loads the executable without tracing (observed through a trace counter, not time), gives
the same numbers as the jitted function, keys on shapes, survives a damaged entry, and never
keeps an executable that JAX's persistent cache handed back (on CPU those do not run again)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax import executable_cache as ec

REPO = str(pathlib.Path(__file__).resolve().parents[1])
TRACES = []


def _scan_sum(xs, h0):
  TRACES.append(1)   # runs only while tracing
  def body(h, x):
    h = jnp.tanh(h * 0.5 + x)
    return h, h.sum()
  return jax.lax.scan(body, h0, xs)[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setattr(ec, "_MEMO", {})
  ec.enable(str(tmp_path / "exe"))
  yield tmp_path / "exe"
  ec.enable(None)


def _reference(xs, h0):
  h, out = np.asarray(h0, np.float64), []
  for x in np.asarray(xs, np.float64):
    h = np.tanh(h * 0.5 + x)
    out.append(h.sum())
  return np.asarray(out)


def test_off_is_the_jitted_function():
  fn = jax.jit(_scan_sum)
  xs, h0 = jnp.ones((4, 3)), jnp.zeros(3)
  np.testing.assert_array_equal(ec.call("t", fn, (xs, h0)), fn(xs, h0))


def test_kept_executable_is_loaded_without_tracing(cache, monkeypatch):
  fn = jax.jit(_scan_sum)
  xs = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
  h0 = jnp.zeros(3)
  TRACES.clear()
  first = ec.call("t", fn, (xs, h0), key="k")
  assert len(TRACES) == 1 and len(list(cache.glob("t-*.exe"))) == 1
  np.testing.assert_allclose(first, _reference(xs, h0), rtol=1e-5)
  monkeypatch.setattr(ec, "_MEMO", {})          # as a new process would: only the file remains
  again = ec.call("t", fn, (xs, h0), key="k")
  assert len(TRACES) == 1                       # loaded, not traced
  np.testing.assert_array_equal(again, first)
  ec.call("t", fn, (xs[:5], h0), key="k")       # another shape: another entry
  ec.call("t", fn, (xs, h0), key="other")       # another key (the config): another entry
  # (its trace of the same shapes is jit's own in-memory one: 2 traces, 3 entries)
  assert len(TRACES) == 2 and len(list(cache.glob("t-*.exe"))) == 3


def test_damaged_entry_is_compiled_again(cache, monkeypatch, caplog):
  fn = jax.jit(_scan_sum)
  xs, h0 = jnp.ones((5, 2)), jnp.ones(2)
  want = ec.call("t", fn, (xs, h0))
  (entry,) = cache.glob("t-*.exe")
  entry.write_bytes(b"not an executable")
  monkeypatch.setattr(ec, "_MEMO", {})
  got = ec.call("t", fn, (xs, h0))
  np.testing.assert_array_equal(got, want)
  assert "could not be loaded" in caplog.text and str(entry) in caplog.text


CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from d2m_jax import compile_cache, executable_cache as ec
compile_cache.enable(True, sys.argv[1], min_compile_secs=0.0)
ec.enable(sys.argv[2])
traces = []
def f(xs):
  traces.append(1)
  return jax.lax.scan(lambda h, x: (jnp.tanh(h + x), h.sum()), jnp.zeros(4), xs)[1]
out = ec.call("child", jax.jit(f), (jnp.arange(12.0).reshape(3, 4) / 10,))
print(json.dumps(dict(out=[float(v) for v in out], traces=len(traces))))
"""


def test_across_processes_and_never_from_the_compilation_cache(tmp_path):
  jax_dir, exe_dir = tmp_path / "jax", tmp_path / "exe"

  def run():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", CHILD, str(jax_dir), str(exe_dir)], env=env,
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])

  first = run()                                  # compiled: kept
  assert first["traces"] == 1 and len(list(exe_dir.glob("*.exe"))) == 1
  second = run()                                 # loaded: no trace
  assert second == dict(first, traces=0)
  for f in exe_dir.glob("*.exe"):
    f.unlink()
  third = run()   # JAX's cache now hands the program back: used, not kept (it would not run)
  assert third["out"] == first["out"] and not list(exe_dir.glob("*.exe"))
