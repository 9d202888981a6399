"""benchmarks/peers.py: the PyTorch peer in a process of its own (or in this one), and
benchmarks/compare.py driving it, with a stand-in peer (no PyTorch needed)."""
import os
import textwrap

import pytest

from benchmarks import compare
from benchmarks import peers

# A stand-in for benchmarks.torch_reference.build: the same call, a Peer whose step sleeps, prints
# (which must not reach the protocol's pipe) and appends the process id to a file.
FAKE = textwrap.dedent('''
    import os, time
    from benchmarks.torch_reference import Peer

    def build(model, batch, *, device, dtype, amp, compile, pid_file=None, sleep=0.01, **kw):
      if model == "broken":
        raise RuntimeError("no such peer\\nsecond line")
      def step():
        print("a peer that prints")
        time.sleep(sleep)
        if pid_file:
          with open(pid_file, "a") as f:
            f.write(f"{os.getpid()} {dtype} {amp} {compile}\\n")
      return Peer(step=step, examples=batch * 2, params=0)
''')


@pytest.fixture
def fake_factory(tmp_path, monkeypatch):
  (tmp_path / "fake_peer.py").write_text(FAKE)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(tmp_path), os.environ.get("PYTHONPATH", "")]))
  return "fake_peer:build"


@pytest.mark.parametrize("isolation", ["process", "none"])
def test_runner_builds_times_and_reports_errors(isolation, fake_factory, tmp_path):
  pid_file = tmp_path / "pids"
  runner = peers.open_peers(isolation, fake_factory)
  try:
    built = runner.build("row", "m", 3, 1, "float32", False, False,
                         {"pid_file": str(pid_file), "sleep": 0.02})
    assert built["examples"] == 6 and built["compile_s"] >= 0.04 and built["warnings"] == []
    assert built["warmup_steps"] == 3             # two, then one that faults no fresh heap
    wall, cpu, faults = runner.time("row", 4, 1)
    assert len(wall) == len(cpu) == len(faults) == 4 and all(f >= 0 for f in faults)
    assert all(w >= 0.02 for w in wall)         # each step timed on its own, sleep included
    assert all(c < w for c, w in zip(cpu, wall))  # sleeping is not CPU time
    with pytest.raises(peers.PeerError, match="RuntimeError: no such peer$"):
      runner.build("bad", "broken", 3, 1, "float32", False, False, {})
    wall, _, _ = runner.time("row", 1, 1)            # a failed row leaves the runner usable
    assert len(wall) == 1
  finally:
    runner.close()
  lines = pid_file.read_text().splitlines()
  assert len(lines) == 3 + 4 + 1                 # warm-up, timed, timed after the error
  pids = {l.split()[0] for l in lines}
  assert len(pids) == 1
  assert (pids.pop() != str(os.getpid())) == (isolation == "process")
  assert lines[0].split()[1:] == ["float32", "False", "False"]


def test_process_runner_exits_with_its_pipe_and_takes_the_host_malloc(fake_factory):
  runner = peers.ProcessPeers(fake_factory, "keep")
  assert runner.host_malloc in ("keep", "system (not glibc)")
  assert runner.version is None or isinstance(runner.version, str)
  runner.close()
  assert runner._proc.returncode == 0            # pylint: disable=protected-access


def test_a_dead_peer_process_is_a_clear_error(fake_factory):
  runner = peers.ProcessPeers(fake_factory)
  runner._proc.kill()                             # pylint: disable=protected-access
  runner._proc.wait()                             # pylint: disable=protected-access
  with pytest.raises(peers.PeerError, match="peer process exited"):
    runner.time("row", 1, 1)
  runner.close()


def test_unknown_isolation_is_refused():
  with pytest.raises(ValueError, match="isolation"):
    peers.open_peers("thread")


def test_compare_records_where_the_peer_ran(fake_factory, tmp_path):
  out = tmp_path / "records.jsonl"
  recs = compare.compare("style_paper", 4, rounds=2, steps=2, torch_threads=[1],
                         isolation="process", peer_factory=fake_factory, out=str(out))
  timed = [r for r in recs if "step_median_s" in r]
  jax_row, peer_row = timed
  assert jax_row["framework"] == "jax (jit)" and peer_row["framework"].startswith("torch eager")
  assert all(r["peer_isolation"] == "process" for r in recs)
  assert len(peer_row["step_times_s"]) == 4 and peer_row["examples_per_step"] == 8
  assert len(jax_row["minor_faults_per_step"]) == len(peer_row["minor_faults_per_step"]) == 4
  eps_peer = 8 / peer_row["step_median_s"]
  assert peer_row["examples_per_s"] == pytest.approx(eps_peer)
  assert jax_row["ratio_vs_best_peer"] == pytest.approx(jax_row["examples_per_s"] / eps_peer)
  assert peer_row["ratio"] == pytest.approx(jax_row["examples_per_s"] / eps_peer)
  assert "gemm2048_gflops_jax" in jax_row         # the stand-in has no torch: JAX's GEMM only
  assert len(out.read_text().splitlines()) == len(recs)


def test_minor_faults_counts_first_touches():
  import mmap
  size = 8 << 20
  buf = mmap.mmap(-1, size)
  if hasattr(mmap, "MADV_NOHUGEPAGE"):   # one fault per 4 KiB page, even where THP is "always"
    buf.madvise(mmap.MADV_NOHUGEPAGE)
  before = peers.minor_faults()
  for off in range(0, size, mmap.PAGESIZE):
    buf[off] = 1
  assert peers.minor_faults() - before >= size // mmap.PAGESIZE
  buf.close()


def _touching_step(fresh_calls):
  """A step that first-touches 8 MiB of new pages on its first ``fresh_calls`` calls."""
  import mmap
  kept, calls = [], [0]

  def step():
    calls[0] += 1
    if calls[0] <= fresh_calls:
      buf = mmap.mmap(-1, 8 << 20)
      if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
      for off in range(0, 8 << 20, mmap.PAGESIZE):
        buf[off] = 1
      kept.append(buf)
  return step


@pytest.mark.parametrize("fresh,expected", [(0, 2), (1, 2), (4, 5), (50, 10)])
def test_warm_up_runs_until_a_step_stops_faulting(fresh, expected):
  assert peers.warm_up(_touching_step(fresh), min_steps=2, max_steps=10) == expected
