"""benchmarks/roofline.py: the jaxpr walk counts what a hand count gives, and the calibration
reproduces its fit points exactly (so the held-out ratios it prints are the model's error)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import roofline


def _gru_like(unroll):
  def f(h, w, xs):
    def step(h, x):
      return jnp.tanh(h @ w + x), None
    h, _ = jax.lax.scan(step, h, xs, unroll=unroll)
    return (h @ w).sum()
  return f


@pytest.mark.parametrize("unroll,kind", [(1, "loop"), (4, "unrolled")])
def test_walk_counts_scan_flops_bytes_and_steps(unroll, kind):
  B, H, T = 8, 16, 5
  args = (jnp.zeros((B, H)), jnp.zeros((H, H)), jnp.zeros((T, B, H)))
  c = roofline.walk(jax.make_jaxpr(_gru_like(unroll))(*args).jaxpr, roofline.Counts())
  dot = 2 * B * H * H
  assert c.flops == (T + 1) * dot                       # T steps in the scan + one outside
  assert c.seq_flops == T * dot
  assert c.seq == {"loop": 0.0, "unrolled": 0.0, "pallas": 0.0, **{kind: float(T)}}
  assert c.bytes == (T + 1) * 4 * (B * H + H * H + B * H)  # operands + result, float32


def test_walk_counts_the_gradient_scan_too():
  B, H, T = 4, 8, 6
  args = (jnp.zeros((B, H)), jnp.zeros((H, H)), jnp.zeros((T, B, H)))
  g = jax.grad(_gru_like(1), argnums=1)
  c = roofline.walk(jax.make_jaxpr(g)(*args).jaxpr, roofline.Counts())
  assert c.seq["loop"] == 2 * T           # forward and transposed scans, one step each
  assert c.flops >= 3 * T * 2 * B * H * H  # forward + two backward matmuls per step


def test_calibration_reproduces_its_fit_points():
  # loop steps only / unrolled steps only / loop steps + recurrent FLOPs: a positive solution
  fit = roofline.FIT_POINTS
  counts = {k: {"dtype": k[1], "flops": 0.0, "bytes": 0.0, "seq_flops": 0.0,
                "seq": {"loop": 0.0, "unrolled": 0.0, "pallas": 0.0}} for k in roofline.MEASURED_H200}
  counts[fit["loop"]]["seq"]["loop"] = 100.0
  counts[fit["unrolled"]]["seq"]["unrolled"] = 100.0
  counts[fit["seq_slowdown"]]["seq"]["loop"] = 10.0
  counts[fit["seq_slowdown"]]["seq_flops"] = 1e12
  tau = roofline.calibrate(counts)
  assert tau["loop"] == pytest.approx(19.8e-3 / 100)
  assert tau["unrolled"] == pytest.approx(10.4e-3 / 100)
  dev = roofline.DEVICES["h200"]
  for k in fit.values():
    assert roofline.predict_s(counts[k], dev, tau) * 1e3 == pytest.approx(
        roofline.MEASURED_H200[k], rel=1e-9)


def test_walk_counts_a_pallas_kernel_per_program_times_its_grid():
  from d2m_jax import target
  from d2m_jax.nn import rnn_pallas
  T, B, H = 6, 32, 16                      # H = Hp = 16, two programs of block_b = 16
  args = (jnp.zeros((T, B, 3 * H)), jnp.zeros((B, H)), jnp.zeros((H, 3 * H)), jnp.zeros(3 * H))
  with target.targeting("gpu"):            # the Triton kernel, not interpret mode
    jaxpr = jax.make_jaxpr(lambda *a: rnn_pallas.gru_layer_pallas(*a, block_b=16)[0])(*args)
  c = roofline.walk(jaxpr.jaxpr, roofline.Counts())
  assert c.seq["pallas"] == T and c.seq["loop"] == 0    # the time loop inside the kernel
  assert c.flops == 2 * T * 3 * (2 * 16 * H * H)       # grid 2 x T steps x 3 gate dots
  assert c.seq_flops == c.flops


def test_count_step_takes_a_config_and_host_batch():
  """A config at another size (benchmarks/batch_scaling.py's predictions): the GRU-30 over 30
  frames is 30 forward + 30 backward loop steps at any batch, and its FLOPs double with it."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from benchmarks import train_step as ts  # pylint: disable=import-outside-toplevel
  cfg = ts.load_config("style_paper")
  cfg.model.hidden = 16
  got = {}
  for b in (8, 16):
    host = {"d2m28": np.zeros((b, 40, 28), np.float32), "style": np.zeros((b,), np.int32)}
    got[b] = roofline.count_step("style_paper", "float32", b, "scan", "gpu", config=cfg, host=host)
  assert got[8]["seq"]["loop"] == got[16]["seq"]["loop"] == 60
  assert got[16]["flops"] == pytest.approx(2 * got[8]["flops"], rel=0.05)
  assert cfg.model.hidden == 16 and cfg.data.batch_size != 16   # the caller's config untouched
