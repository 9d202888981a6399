"""Kakashi seq2seq: decoder scan vs a float64 numpy LSTM (PyTorch gate order), teacher forcing
ratios 1 and 0, task shapes in the three modes."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from d2m_jax.models.kakashi import Seq2Seq
from d2m_jax.nn import lstm_reference_numpy

B, T_IN, T_OUT, D, P, H = 2, 6, 5, 4, 3, 8


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  mfcc = rng.normal(size=(B, T_IN, D)).astype(np.float32)
  seed = rng.normal(size=(B, P)).astype(np.float32)
  targets = rng.normal(size=(B, T_OUT, P)).astype(np.float32)
  m = Seq2Seq(out_dim=P, hidden=H, num_layers=2, dropout=0.5)
  params = m.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, mfcc, seed,
                  targets, jax.random.key(3), 0.0, False)["params"]
  # U(+-0.08) init makes tiny activations; scale the weights so the runs differ clearly.
  params = jax.tree.map(lambda a: a * 8.0, params)
  enc = {k: np.asarray(v) for k, v in params["encoder"]["lstm"].items()}
  dec = {k: np.asarray(v) for k, v in params["decoder"].items()}
  _, state = lstm_reference_numpy(enc, mfcc, num_layers=2)
  return m, params, mfcc, seed, targets, dec, state


def _apply(m, train):
  return jax.jit(lambda params, mfcc, seed, targets, key, tf: m.apply(
      {"params": params}, mfcc, seed, targets, key, tf, train, rngs={"dropout": key}))


def _run(setup, tf):
  m, params, mfcc, seed, targets, *_ = setup
  if not hasattr(_run, "f"):
    _run.f = _apply(m, False)  # one compile for every ratio (tf is traced)
  return np.asarray(_run.f(params, mfcc, seed, targets, jax.random.key(5), jnp.float32(tf)))


def test_teacher_forcing_one_feeds_exactly_the_ground_truth(setup):
  _, _, _, seed, targets, dec, state = setup
  inputs = np.concatenate([seed[:, None], targets[:, :-1]], 1)  # [seed, gt_0 .. gt_{T-2}]
  hs, _ = lstm_reference_numpy(dec, inputs, state, num_layers=2)
  ref = hs @ np.float64(dec["out_kernel"]) + dec["out_bias"]
  np.testing.assert_allclose(_run(setup, 1.0), ref, atol=1e-5)


def test_teacher_forcing_zero_feeds_its_own_predictions(setup):
  _, _, _, seed, targets, dec, state = setup
  prev, st, outs = seed.astype(np.float64), state, []
  for _ in range(T_OUT):
    h, st = lstm_reference_numpy(dec, prev[:, None], st, num_layers=2)
    prev = h[:, 0] @ np.float64(dec["out_kernel"]) + dec["out_bias"]
    outs.append(prev)
  ref = np.stack(outs, 1)
  got = _run(setup, 0.0)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  # ...and it differs from the teacher-forced run (the inputs really are different).
  assert np.max(np.abs(got - _run(setup, 1.0))) > 1e-3


def test_train_mode_coins_mix_truth_and_predictions(setup):
  # With dropout off, a ratio of 0.5 gives a run equal to neither extreme (coins per step).
  m, params, mfcc, seed, targets, *_ = setup
  m0 = Seq2Seq(out_dim=P, hidden=H, num_layers=2, dropout=0.0)
  f = _apply(m0, True)
  outs = [np.asarray(f(params, mfcc, seed, targets, jax.random.key(k), jnp.float32(0.5)))
          for k in range(6)]
  t1, t0 = _run(setup, 1.0), _run(setup, 0.0)
  mixed = [o for o in outs if not (np.allclose(o, t1, atol=1e-6) or np.allclose(o, t0, atol=1e-6))]
  assert mixed, "ratio 0.5 never mixed ground truth and predictions in 6 draws"
  for o in outs:  # step 0 always reads the seed
    np.testing.assert_allclose(o[:, 0], t1[:, 0], atol=1e-6)


def test_full_size_parameter_count():
  # PyTorch: enc LSTM(20,512,2) + dec LSTM(69,512,2) + Linear(512,69).
  m = Seq2Seq(out_dim=69)
  shapes = jax.eval_shape(lambda: m.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                         jnp.zeros((1, 2, 20)), jnp.zeros((1, 69)),
                                         jnp.zeros((1, 2, 69)), jax.random.key(0), 0.0, False))
  n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  lstm = lambda d, h: 4 * h * (d + h) + 8 * h  # noqa: E731
  assert n == lstm(20, 512) + lstm(512, 512) + lstm(69, 512) + lstm(512, 512) + 512 * 69 + 69


@pytest.mark.parametrize("mode", ["sequence", "chunk", "frame"])
def test_task_modes_train_and_generate(mode):
  from d2m_jax.tasks import get_task
  from d2m_jax.train.defaults import base_config
  c = base_config()
  c.task = "kakashi"
  c.data.kind = "sequences"
  c.data.max_frames = 20
  c.model = ml_collections.ConfigDict(dict(joints=2, coords=3, fps=10.0, hidden=8, num_layers=2,
                                           dropout=0.5, teacher_forcing=0.5, mode=mode,
                                           chunk_seconds=0.5))
  c.optim = ml_collections.ConfigDict(dict(name="sgd", lr=0.005, momentum=0.9,
                                           clip_norm=1.0))
  task = get_task(c)
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  assert batch["mfcc20"].shape == (2, 20, 20) and batch["pose"].shape == (2, 20, 6)
  if mode != "chunk":  # shapes only (no compile): compiling every mode is slow on 2 cores
    state = jax.eval_shape(lambda k: task.init_state(k, batch, None), jax.random.key(0))
  else:
    state = task.init_state(jax.random.key(0), batch, None)
  # Example shapes of each mode: sequence (2, 20), chunk of 5 frames (8, 5), frame (40, 1).
  mfcc, pose, valid = jax.eval_shape(task._examples, state, batch)
  assert pose.shape == {"sequence": (2, 20, 6), "chunk": (8, 5, 6), "frame": (40, 1, 6)}[mode]
  assert mfcc.shape[:2] == valid.shape == pose.shape[:2]
  if mode != "chunk":  # the step is shared code: compiled once, in chunk mode
    return
  state2, metrics = jax.jit(task.train_step)(state, batch)
  assert int(state2.step) == 1 and np.isfinite(float(metrics["loss"]))
  # clip-norm 1: the SGD step moves parameters by at most lr * 1.
  delta = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), state2.params,
                                       state.params))
  assert float(np.sqrt(sum(delta))) <= 0.005 * 1.0 + 1e-6
  out = task.generate(state2, {"mfcc20": np.zeros((13, 20), np.float32)}, None, 13, None, 2)
  assert out.shape == (2, 13, 2, 3) and out.dtype == np.float32
