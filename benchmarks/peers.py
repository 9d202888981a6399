"""Where ``benchmarks/compare.py`` runs the PyTorch peer: in its own process, or in JAX's.

Two runners with one interface (:class:`InlinePeers`, :class:`ProcessPeers`; :func:`open_peers`
picks one): ``build`` a named peer row, ``time`` some of its steps (wall and CPU seconds each),
``mm_seconds`` one float32 GEMM for the measured matmul ceiling, ``close``.

Why a process of its own (``isolation="process"``, the default on CPU). In one process both
frameworks share one C heap. XLA:CPU gets its temporary block (851 MB per GRU-512x2 step at B=256)
from ``malloc`` on every step; with :mod:`d2m_jax.host_memory`'s ``keep`` the freed block stays in
the heap and the next step reuses its pages, unless other allocations made between steps split it,
and the peer's are such allocations. No user trains both frameworks in one process; each in its own
is each as a user runs it. The rounds still alternate (the parent waits on the pipe while the peer
steps, the peer waits on it while JAX steps), so a noisy machine slows both alike.
``isolation="none"`` keeps the old arrangement (records before 2026-12-06 were measured so); on a
GPU it is the default, since two processes would each hold a CUDA context and JAX preallocates
most of the memory.

What it changed, measured (2-core VM, 2026-12-06, style_improved B=256, docs/performance.md): less
than hoped. JAX's median step beside the peer was 1.24-1.50 s in one process (five runs) and
1.22-1.44 s in two (twenty runs); its own heap still refaults the block now and then (any
Python allocations between steps can split it; ~207K faults, ~0.15-0.2 s, 17 of 135 timed
steps), and the VM moves both sides by up to 15%.

The child is ``python -m benchmarks.peers`` with this interpreter and environment; it speaks JSON
lines on a pipe (requests on stdin, answers on its original stdout, which nothing else writes to:
``sys.stdout`` is pointed at stderr there) and exits when the pipe closes, so it cannot outlive
the parent. It never imports JAX.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

from d2m_jax import host_memory

FACTORY = "benchmarks.torch_reference:build"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where -m finds benchmarks
ISOLATIONS = ("process", "none")


class PeerError(RuntimeError):
  """A peer row failed to build or step (the message is the peer's one-line error)."""


def minor_faults() -> int:
  """This process's minor page faults so far (0 where ``resource`` is missing): a step that
  faults is touching fresh pages, the cost :mod:`d2m_jax.host_memory` removes."""
  try:
    import resource  # pylint: disable=import-outside-toplevel
  except ImportError:
    return 0
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def warm_up(step, min_steps: int = 2, max_steps: int = 10, settled_pages: int = 1024) -> int:
  """Runs ``step()`` at least ``min_steps`` times and on until one step faults fewer than
  ``settled_pages`` fresh pages (4 MiB), at most ``max_steps``; returns the steps run.

  Why: under ``host_malloc=keep`` the heap settles over the first steps (a step's temporary block
  lands in fresh pages until freed blocks of the right size exist: 851 MB, ~207K faults, ~0.2 s
  for style_improved B=256). Those steps are start-up, like compilation; a long run sees the
  settled step. Both frameworks are warmed up by this same rule."""
  n = 0
  while n < max_steps:
    f0 = minor_faults()
    step()
    n += 1
    if n >= min_steps and minor_faults() - f0 < settled_pages:
      break
  return n


def _factory(spec: str):
  mod, fn = spec.split(":")
  return getattr(importlib.import_module(mod), fn)


def _one_line(e: BaseException) -> str:
  s = str(e)
  return f"{type(e).__name__}: {s.splitlines()[0][:200] if s else ''}"


class _Rows:
  """The peer rows themselves; what both runners call (one in the parent, one in the child)."""

  def __init__(self, factory: str = FACTORY):
    self.factory = factory
    self.rows: Dict[str, Any] = {}
    self._mm: Dict[int, Any] = {}
    self._mm_warm = set()
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:  # a stand-in factory (tests)
      torch = None
    self.torch = torch
    self.device = ("cuda" if torch.cuda.is_available() else "cpu") if torch else "cpu"
    self.version = torch.__version__ if torch else None

  def _threads(self, threads: Optional[int]) -> None:
    if self.torch is not None and threads:
      self.torch.set_num_threads(int(threads))

  def build(self, name: str, model: str, batch: int, threads: int, cast: str, amp: bool,  # pylint: disable=redefined-builtin
            compile: bool, kw: Dict[str, Any]) -> Dict[str, Any]:
    self._threads(threads)
    dtype = getattr(self.torch, cast) if self.torch is not None else cast
    try:
      with warnings.catch_warnings(record=True) as caught:  # e.g. cuDNN RNN weight compaction
        warnings.simplefilter("always")
        p = _factory(self.factory)(model, batch, device=self.device, dtype=dtype, amp=amp,
                                   compile=compile, **kw)
        t0 = time.perf_counter()
        p.step()
        p.step()  # warm-up (torch.compile compiles here)
        self._sync()
        compile_s = time.perf_counter() - t0
        warmup = 2 + warm_up(lambda: (p.step(), self._sync()), min_steps=0)
    except Exception as e:  # noqa: BLE001  (inductor needs a C++ toolchain on CPU)
      raise PeerError(_one_line(e)) from e
    self.rows[name] = p
    return {"examples": int(p.examples), "compile_s": compile_s, "warmup_steps": warmup,
            "warnings": sorted({str(w.message).splitlines()[0][:200] for w in caught})}

  def _sync(self) -> None:
    if self.device == "cuda":
      self.torch.cuda.synchronize()

  def time(self, name: str, steps: int, threads: int) -> Tuple[List[float], ...]:
    """Wall seconds, CPU seconds and minor page faults of each of ``steps`` steps."""
    self._threads(threads)
    p, wall, cpu, faults = self.rows[name], [], [], []
    for _ in range(steps):
      t0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
      p.step()
      self._sync()
      wall.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
      faults.append(minor_faults() - f0)
    return wall, cpu, faults

  def mm_seconds(self, n: int, threads: int) -> float:
    """One timed ``torch.mm`` of two n x n float32 matrices; an untimed one first, once per
    (n, threads)."""
    torch = self.torch
    if n not in self._mm:
      import numpy as np  # pylint: disable=import-outside-toplevel
      rng = np.random.default_rng(0)
      self._mm[n] = [torch.from_numpy(rng.standard_normal((n, n), np.float32)) for _ in "ab"]
    a, b = self._mm[n]
    self._threads(threads)
    if (n, threads) not in self._mm_warm:
      torch.mm(a, b)
      self._mm_warm.add((n, threads))
    t0 = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - t0


class InlinePeers(_Rows):
  """The peer in this process (``isolation="none"``)."""
  isolation = "none"

  @property
  def host_malloc(self) -> Optional[str]:
    return host_memory.current()

  def close(self) -> None:
    self.rows.clear()


class ProcessPeers:
  """The peer in a child process of its own (``isolation="process"``); same methods."""
  isolation = "process"

  def __init__(self, factory: str = FACTORY, host_malloc: Optional[str] = None):
    args = ["--factory", factory] + (["--host_malloc", host_malloc] if host_malloc else [])
    self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "benchmarks.peers", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        cwd=_REPO, env=os.environ.copy())
    hello = self._call({"op": "hello"})
    self.version, self.device = hello["version"], hello["device"]
    self.host_malloc = hello["host_malloc"]

  def _call(self, req: Dict[str, Any]) -> Dict[str, Any]:
    try:
      self._proc.stdin.write(json.dumps(req) + "\n")
      self._proc.stdin.flush()
      line = self._proc.stdout.readline()
    except (BrokenPipeError, OSError):
      line = ""
    if not line:
      rc = self._proc.wait()
      raise PeerError(f"the peer process exited (rc {rc}) during {req['op']!r}; its error is "
                      "above")
    out = json.loads(line)
    if "error" in out:
      raise PeerError(out["error"])
    return out

  def build(self, name, model, batch, threads, cast, amp,  # pylint: disable=redefined-builtin
            compile, kw):
    return self._call({"op": "build", "name": name, "model": model, "batch": batch,
                       "threads": threads, "cast": cast, "amp": amp, "compile": compile,
                       "kw": kw})

  def time(self, name: str, steps: int, threads: int):
    out = self._call({"op": "time", "name": name, "steps": steps, "threads": threads})
    return out["wall"], out["cpu"], out["faults"]

  def mm_seconds(self, n: int, threads: int) -> float:
    return self._call({"op": "mm", "n": n, "threads": threads})["s"]

  def close(self) -> None:
    if self._proc.poll() is None:
      try:
        self._proc.stdin.close()
      except OSError:
        pass
      try:
        self._proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()


def default_isolation(backend: str) -> str:
  return "process" if backend == "cpu" else "none"


def open_peers(isolation: str, factory: str = FACTORY):
  """The runner for ``isolation``; a child process gets this process's host-memory setting
  (:mod:`d2m_jax.host_memory`), so both frameworks run under the same allocator, as they did in
  one process."""
  if isolation not in ISOLATIONS:
    raise ValueError(f"peer isolation {isolation!r}: expected one of {ISOLATIONS}")
  if isolation == "none":
    return InlinePeers(factory)
  mode = host_memory.current()
  return ProcessPeers(factory, mode.split()[0] if mode else None)


def serve(factory: str, host_malloc: Optional[str] = None) -> int:
  """The child's loop: one JSON request per line on stdin, one JSON answer per line."""
  malloc = host_memory.configure(host_malloc) if host_malloc else None   # before torch loads
  out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
  sys.stdout = sys.stderr          # prints from torch or a peer cannot corrupt the protocol
  rows = None
  for line in sys.stdin:
    req = json.loads(line)
    op = req.pop("op")
    try:
      if rows is None:
        rows = _Rows(factory)
      if op == "hello":
        ans = {"version": rows.version, "device": rows.device, "host_malloc": malloc}
      elif op == "build":
        ans = rows.build(**req)
      elif op == "time":
        wall, cpu, faults = rows.time(**req)
        ans = {"wall": wall, "cpu": cpu, "faults": faults}
      elif op == "mm":
        ans = {"s": rows.mm_seconds(**req)}
      else:
        ans = {"error": f"unknown request {op!r}"}
    except PeerError as e:
      ans = {"error": str(e)}
    except Exception as e:  # noqa: BLE001  (answered, so the parent can record the row)
      ans = {"error": _one_line(e)}
    out.write(json.dumps(ans) + "\n")
  return 0


if __name__ == "__main__":
  _args = sys.argv[1:]
  _opt = lambda k, d=None: _args[_args.index(k) + 1] if k in _args else d  # noqa: E731
  sys.exit(serve(_opt("--factory", FACTORY), _opt("--host_malloc")))
