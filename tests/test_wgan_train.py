"""WGAN training steps on tiny models: the fused step equals the updates run one by one, the
Wasserstein estimate moves the right way, and long-song generation carries the GRU state."""
import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax.models.wgan_audio import AudioSeqGenerator, cut_windows
from d2m_jax.tasks import get_task
from d2m_jax.tasks.wgan_audio import audio_config
from d2m_jax.tasks.wgan_common import minmax_denormalise, minmax_normalise
from d2m_jax.tasks.wgan_pose import pose_config
from d2m_jax.tasks.wgan_seq import seq_config


def _close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


def test_fused_step_equals_separate_critic_and_generator_steps():
  # Conditional phase 2: slicing per critic update, labels, critic dropout, generator BatchNorm.
  c = seq_config(conditional=True)
  m = c.model
  m.n_critic, m.noise, m.n_cells, m.size, m.channels, m.nblocks_critic = 2, 4, 1, 8, 4, 1
  c.optim.milestones = (1,)  # the decay schedule is exercised too
  task = get_task(c)
  b = 2
  batch = task.synthetic_batch(b * m.n_critic, np.random.default_rng(0))
  state0 = task.init_state(jax.random.key(0), batch, None)
  fused, metrics = jax.jit(task.train_step)(state0, batch)

  _, k_critic, k_gen = task.step_keys(state0)
  state = state0
  critic_step = jax.jit(task.critic_step)
  for i in range(m.n_critic):   # critic update i sees batch examples [i*b, (i+1)*b)
    sl = slice(i * b, (i + 1) * b)
    real = minmax_normalise(jnp.asarray(batch["pose"][sl]), state.stats)
    cond = {"labels": jnp.asarray(batch["style"][sl])}
    state, _ = critic_step(state, real, cond, jax.tree.map(lambda k: k[i], k_critic))
  state, _ = jax.jit(task.generator_step)(state, real, cond, k_gen)

  assert int(fused.step) == 1 and np.isfinite(float(metrics["loss"]))
  _close(fused.d_params, state.d_params, rtol=2e-5, atol=2e-6)
  # Biases of Linear layers followed by BatchNorm have zero gradient up to rounding; Adam turns
  # that noise into +-lr steps whose sign depends on summation order. They are checked to move
  # by at most one Adam step apart; every other generator parameter tightly.
  lr = c.optim.lr
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(fused.g_params),
                          jax.tree.leaves(state.g_params)):
    name = jax.tree_util.keystr(path)
    if "decoder" in name and name.endswith("['bias']") and "fc_out" not in name:
      assert np.abs(np.asarray(x) - np.asarray(y)).max() <= 2 * lr + 1e-6, name
    else:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6,
                                 err_msg=name)
  _close(fused.g_batch_stats, state.g_batch_stats, rtol=2e-5, atol=2e-6)
  assert not np.allclose(np.asarray(jax.tree.leaves(fused.d_params)[0]),
                         np.asarray(jax.tree.leaves(state0.d_params)[0]))
  # The generator EMA in the state: one update from the initial parameters, by hand in float64.
  d = task.ema_decay
  assert 0.0 < d < 1.0
  for e, p0, p1 in zip(jax.tree.leaves(fused.g_ema), jax.tree.leaves(state0.g_params),
                       jax.tree.leaves(fused.g_params)):
    want = d * np.asarray(p0, np.float64) + (1 - d) * np.asarray(p1, np.float64)
    np.testing.assert_allclose(np.asarray(e, np.float64), want, rtol=1e-6, atol=1e-7)


def test_few_steps_raise_the_wasserstein_estimate():
  c = pose_config(latent=10, size=16, nblocks=1)
  c.model.batch_size = 16
  c.optim.lr = 1e-3
  task = get_task(c)
  rng = np.random.default_rng(1)
  batch = task.synthetic_batch(2, rng)
  # Structured "real" poses (a low-dimensional family) the random generator does not produce.
  t = rng.uniform(-1, 1, (2, 120, 1)).astype(np.float32)
  batch["pose"] = np.tile(np.sin(3 * t + np.linspace(0, 3, 69, dtype=np.float32)), 1)
  state = task.init_state(jax.random.key(0), batch, None)
  evaluate, step = jax.jit(task.eval_step), jax.jit(task.train_step)
  w0 = float(evaluate(state, batch)["w_dist"])
  for _ in range(4):
    state, m = step(state, batch)
  w1 = float(evaluate(state, batch)["w_dist"])
  assert w1 > w0 + 0.1, (w0, w1)
  assert float(m["w_dist"]) > 0


def test_generation_carries_gru_state_across_windows():
  c = audio_config("default")
  m = c.model
  m.enc_channels, m.enc_code, m.latent, m.noise, m.size, m.n_cells = 2, 6, 10, 3, 8, 2
  m.channels, m.audio_channels, m.critic_code, m.critic_hidden = 4, 2, 4, 4
  task = get_task(c)
  batch = task.synthetic_batch(m.n_critic, np.random.default_rng(0))
  # The fused step traces with the pipeline's batch (shapes and metrics only; no compile).
  abstract = jax.eval_shape(lambda: task.init_state(jax.random.key(0), batch, None))
  _, metrics = jax.eval_shape(task.train_step, abstract, batch)
  assert {"loss", "w_dist", "gp", "l1", "g_loss"} <= set(metrics)
  # Generation needs the generator only; initialise just it (the critic's init is slow to compile).
  g = AudioSeqGenerator(m.encoder, m.enc_code, m.latent, m.noise, m.size, 69, m.nblocks_gen,
                        m.n_cells, m.activ, m.enc_channels, m.enc_down)
  v = jax.jit(lambda k: g.init(k, jnp.zeros((1, 120, 3200)), jnp.zeros((1, 120, m.noise)),
                               train=False))(jax.random.key(0, impl="rbg"))
  pose = batch["pose"].reshape(-1, 69)
  state = abstract.replace(g_params=v["params"], g_ema=v["params"], g_batch_stats=v["batch_stats"],
                           stats={"pose_min": jnp.asarray(pose.min(0)),
                                  "pose_max": jnp.asarray(pose.max(0))})

  frames, S = 200, 2                     # 2 windows of 120 frames, the last one partial
  wave = np.random.default_rng(2).normal(size=frames * 640).astype(np.float32) * 0.1
  key = jax.random.key(5)
  out = task.generate(state, {"waveform16k": wave}, np.zeros(0, np.int32), frames, key, S)
  assert out.shape == (S, frames, 23, 3) and out.dtype == np.float32

  # One pass over the whole song (no window restarts) with the same per-window noise.
  padded = np.zeros(240 * 640 + 2560, np.float32)
  padded[1280:1280 + wave.size] = wave
  noise = jnp.concatenate([jax.random.normal(jax.random.fold_in(key, i), (S, 120, m.noise))
                           for i in range(2)], axis=1)

  @jax.jit
  def one_pass(v, padded, noise):
    codes = g.apply(v, cut_windows(padded[None], 240, 3200), train=False,
                    method=AudioSeqGenerator.encode)
    return g.apply(v, jnp.broadcast_to(codes, (S, 240, m.enc_code)), noise, train=False,
                   method=AudioSeqGenerator.decode)[0]

  poses = one_pass(v, jnp.asarray(padded), noise)
  ref = np.asarray(minmax_denormalise(poses, state.stats))[:, :frames]
  np.testing.assert_allclose(out.reshape(S, frames, 69), ref, rtol=1e-4, atol=1e-4)
