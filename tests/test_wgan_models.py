"""WGAN model shapes and parameter counts against the spec's layer arithmetic (jax.eval_shape,
no compute), on-device window cutting against numpy slices, and the residual-block fix."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from d2m_jax.models.wgan_audio import (AudioSeqCritic, AudioSeqGenerator, cut_windows,
                                       encoder_output_lengths, make_encoder)
from d2m_jax.models.wgan_layers import LinearBlock
from d2m_jax.models.wgan_seq import SeqCritic, SeqGenerator


def conv(cin, cout, k):  # PyTorch Conv1d with bias
  return cin * cout * k + cout


def lin(i, o):
  return i * o + o


def bn(c):  # BatchNorm1d affine parameters
  return 2 * c


def gru(i, h):  # one PyTorch GRU layer
  return 3 * h * (i + h) + 6 * h


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _encoder_params(name, window=3200, n_down=5, code=250):
  enc = make_encoder(name, code=code, n_down=n_down)
  v = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((3, window)), train=False))
  out = jax.eval_shape(lambda vv: enc.apply(vv, jnp.zeros((3, window)), train=False), v)
  return count(v["params"]), out.shape


EXPECTED_ENCODER = {
    # Conv(1->32, k250, s50, p124) BN, 5 x Conv(c->2c, k4, s2, p1) BN, Conv(1024->250, k2).
    "default": conv(1, 32, 250) + bn(32)
               + sum(conv(c, 2 * c, 4) + bn(2 * c) for c in (32, 64, 128, 256, 512))
               + conv(1024, 250, 2),
    # 4 x Conv(k25, s4) BN (1->32->64->128->256), Conv(256->250, k5).
    "wavegan": conv(1, 32, 25) + bn(32) + conv(32, 64, 25) + bn(64) + conv(64, 128, 25)
               + bn(128) + conv(128, 256, 25) + bn(256) + conv(256, 250, 5),
    # Conv(1->32, k160) BN, 2 x Conv(k4, s2) BN, 4 down conv blocks 128->128 (k3) BN,
    # 3 up conv blocks 256->128 (k3) BN, Conv(128->250, k200).
    "unet": conv(1, 32, 160) + bn(32) + conv(32, 64, 4) + bn(64) + conv(64, 128, 4) + bn(128)
            + 4 * (conv(128, 128, 3) + bn(128)) + 3 * (conv(256, 128, 3) + bn(128))
            + conv(128, 250, 200),
}


@pytest.mark.parametrize("name", ["default", "wavegan", "unet"])
def test_encoder_param_count_and_shape(name):
  n, shape = _encoder_params(name)
  assert n == EXPECTED_ENCODER[name]
  assert shape == (3, 250)


def test_encoder_lengths_follow_spec():
  assert encoder_output_lengths("default") == [64, 32, 16, 8, 4, 2]
  assert encoder_output_lengths("wavegan") == [794, 193, 43, 5]
  assert encoder_output_lengths("unet") == [800, 400, 200]
  # minimal ablation: 0.04 s windows, 3 stride-2 blocks (lengths 13, 6, 3, 1), code 50.
  assert encoder_output_lengths("default", 640, 3) == [13, 6, 3, 1]
  n, shape = _encoder_params("default", 640, 3, 50)
  assert shape == (3, 50)
  assert n == (conv(1, 32, 250) + bn(32) + sum(conv(c, 2 * c, 4) + bn(2 * c) for c in (32, 64, 128))
               + conv(256, 50, 1))


def test_phase3_generator_and_critic_param_counts():
  P, T = 69, 120
  g = AudioSeqGenerator()
  v = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, T, 3200)),
                                    jnp.zeros((1, T, 10)), train=False))
  decoder = (lin(250, 256) + bn(256) + 2 * (2 * lin(256, 256) + 2 * bn(256)) + lin(256, P))
  rnn = gru(250, 240) + 2 * gru(240, 240) + gru(10, 10)
  assert count(v["params"]) == EXPECTED_ENCODER["default"] + rnn + decoder
  out = jax.eval_shape(lambda vv: g.apply(vv, jnp.zeros((2, T, 3200)), jnp.zeros((2, T, 10)),
                                          train=False), v)
  assert out[0].shape == (2, T, P) and out[1][0].shape == (3, 2, 240)

  stick = conv(P, 128, 25) + 2 * 2 * conv(128, 128, 7) + conv(128, 100, 120)
  audio = (sum(conv(c, 2 * c, 25) for c in (16, 32, 64, 128, 256)) - conv(16, 32, 25)
           + conv(1, 32, 25) + conv(512, 100, 75))
  for ablated, head in ((False, lin(200, 128) + lin(128, 1)), (True, lin(100, 128) + lin(128, 1))):
    d = AudioSeqCritic(ablated=ablated)
    dv = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros((1, T, P)),
                                       jnp.zeros((1, T * 640))))
    assert count(dv["params"]) == stick + head + (0 if ablated else audio)
    s = jax.eval_shape(lambda vv: d.apply(vv, jnp.zeros((4, T, P)), jnp.zeros((4, T * 640))), dv)
    assert s.shape == (4,)


def test_phase2_param_counts():
  P, T = 69, 120
  for k, extra in ((0, 0), (4, 4)):
    g = SeqGenerator(num_classes=k)
    v = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, T, 50)),
                                      jnp.zeros((1,), jnp.int32), train=False))
    decoder = lin(50, 256) + bn(256) + 2 * (2 * lin(256, 256) + 2 * bn(256)) + lin(256, P)
    emb = 4 * 4 if k else 0
    assert count(v["params"]) == gru(50 + extra, 50) + 2 * gru(50, 50) + decoder + emb
    d = SeqCritic(num_classes=k)
    dv = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros((1, T, P)),
                                       jnp.zeros((1,), jnp.int32), train=False))
    assert count(dv["params"]) == (conv(P + extra, 128, 25) + 3 * 2 * conv(128, 128, 7)
                                   + conv(128, 1, 120) + emb)


@pytest.mark.parametrize("window", [3200, 640, 1000])
def test_window_cutting_equals_numpy_slices(window):
  wave = np.random.default_rng(0).normal(size=(2, 79360)).astype(np.float32)
  out = np.asarray(jax.jit(lambda w: cut_windows(w, 120, window))(wave))
  off = 1280 - (window - 640) // 2   # windows centred on their frame
  ref = np.stack([wave[:, off + 640 * k: off + 640 * k + window] for k in range(120)], axis=1)
  assert out.shape == (2, 120, window)
  np.testing.assert_array_equal(out, ref)
  if window == 3200:  # the contract: frame k's window is waveform[640 k : 640 k + 3200]
    np.testing.assert_array_equal(out[:, 7], wave[:, 4480:7680])


@pytest.mark.parametrize("parity_bug", [False, True])
def test_linear_block_residual_fix(parity_bug):
  x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
  blk = LinearBlock(4, use_bn=False, parity_bug=parity_bug)
  v = blk.init(jax.random.key(0), x)
  p = jax.tree.map(np.asarray, v["params"])
  relu = lambda a: np.maximum(a, 0)
  fc = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  h = relu(fc("fc1", x))
  ref = x + relu(fc("fc2", x if parity_bug else h))
  np.testing.assert_allclose(np.asarray(blk.apply(v, x)), ref, rtol=1e-5, atol=1e-6)
