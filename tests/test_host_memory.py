"""d2m_jax.host_memory: with ``keep`` the memory of one XLA:CPU step is reused by the next
without new page faults; ``system`` pays them every step; too late or unknown modes say so.

Each case runs in a fresh interpreter: the setting only applies before JAX's backend starts, and
this test process has long started it.
"""
import json
import os
import statistics
import subprocess
import sys

import pytest

from d2m_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted step whose temporaries are ~100 MB (the stacked outputs of a scan and their square),
# called 30 times; prints the mode in force and the page faults of each call after the first.
# Under keep the heap grows while it settles: a call now and then finds its freed block split by
# a smaller allocation and maps more (measured over 150 calls: such calls at 1, 2 and 20, none
# after; peak RSS 653 MB against 392 MB under system). The tests read the last ten calls.
PROBE = r"""
import json, resource, sys
from d2m_jax import host_memory
if sys.argv[2] == "early":
  mode = host_memory.configure(sys.argv[1])
import jax, jax.numpy as jnp
if sys.argv[2] == "late":
  jnp.ones(3).block_until_ready()
  mode = host_memory.configure(sys.argv[1])

@jax.jit
def step(x):
  def body(c, xi):
    return c + 1.0, jnp.sin(xi + c)
  _, ys = jax.lax.scan(body, 0.0, x)          # (64, 512, 384) float32 = 50 MB stacked
  return jnp.sum(ys * ys) + jnp.sum(jnp.cos(ys))

x = jnp.ones((64, 512, 384), jnp.float32)
step(x).block_until_ready()
faults = []
for _ in range(30):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"mode": mode, "faults": faults}))
"""

TEMP_PAGES = 64 * 512 * 384 * 4 // 4096   # pages of one 50 MB temporary


def _probe(mode: str, when: str = "early") -> dict:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop(host_memory.ENV, None)
  out = subprocess.run([sys.executable, "-c", PROBE, mode, when], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


glibc = pytest.mark.skipif(host_memory._glibc()[0] is None,  # pylint: disable=protected-access
                           reason="mallopt is glibc's: this C library has none")


@glibc
def test_keep_reuses_the_steps_memory_and_system_faults_it_in_again():
  system, keep = _probe("system"), _probe("keep")
  assert system["mode"] == "system" and keep["mode"] == "keep"
  # glibc's default maps and unmaps the step's temporaries: every call touches fresh pages
  assert min(system["faults"][-10:]) > TEMP_PAGES // 2, system
  # kept: the freed block is reused already mapped. A call may now and then find part of it
  # taken by a smaller allocation and grow the heap once more, so the typical call is checked.
  assert statistics.median(keep["faults"][-10:]) < TEMP_PAGES // 50, keep


@glibc
def test_too_late_is_reported_not_silently_ignored():
  late = _probe("keep", "late")
  assert late["mode"] == "system (JAX backend already started)"
  assert min(late["faults"][-10:]) > TEMP_PAGES // 2


def test_unknown_mode_names_the_choices():
  with pytest.raises(ValueError, match="expected one of keep, system"):
    host_memory.configure("tcmalloc")


def test_a_bad_environment_value_is_one_error_line_and_exit_1(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **{host_memory.ENV: "tcmalloc"})
  out = subprocess.run([sys.executable, "launch/train.py", "--config=configs/style_paper.py",
                        f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      "error: unknown host_malloc 'tcmalloc' (argument or $D2M_HOST_MALLOC); expected one of "
      "keep, system")
  assert not (tmp_path / "w").exists()   # stopped before anything was written
