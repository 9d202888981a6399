"""The fused WGAN training step shared by the three music2dance phases (spec §1).

One call of :meth:`WGANTask.train_step` is one iteration of the original loop: ``n_critic``
critic updates (a ``lax.scan``, the gradient penalty's double backward inside) followed by one
generator update, all in one jitted program with no host round-trip.

Batch slicing: the step's batch is split into ``n_critic`` equal slices along the batch axis;
critic update ``i`` uses slice ``i`` and the generator update reuses the last slice (the original
also reuses the real batch of the iteration's last critic step for the generator). So a config
with per-update batch ``b`` sets ``config.data.batch_size = n_critic * b``; the batch size must
be a multiple of ``n_critic`` (or ``model.slice_batch=False``: every update sees the whole batch,
with fresh noise). Phase 1 draws its single poses from all frames of the batch's windows instead
(see :mod:`d2m_jax.tasks.wgan_pose`).

Randomness: ``k = fold_in(state.rng, state.step)``; critic update ``i`` uses ``fold_in(k_c, i)``
and the generator update ``k_g``, so the fused step equals the same updates run one by one
(:meth:`critic_step`, :meth:`generator_step`, tested).

Normalisation: per-coordinate min-max to [0, 1] with the train split's ``pose_min/pose_max``
(from ``pipeline.load_stats``), kept in the state so generation de-normalises without the data.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from d2m_jax.data import batch_layout
from d2m_jax.models.wgan_losses import gradient_penalty, interpolate
from d2m_jax.train import optim
from d2m_jax.train.parallel_utils import pmean
from d2m_jax.train.task import Task, compute_dtype

WINDOW_FRAMES = batch_layout.WINDOW_FRAMES
WAVE_LEN = batch_layout.WAVE_SAMPLES  # 79360


class WGANState(flax.struct.PyTreeNode):
  step: jax.Array
  rng: jax.Array
  g_params: Any
  g_batch_stats: Any
  g_ema: Any                    # exponential moving average of g_params (used for sampling)
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  stats: Dict[str, jax.Array]   # pose_min, pose_max (P,)
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)



def minmax_normalise(x, stats):
  lo, hi = stats["pose_min"], stats["pose_max"]
  rng = jnp.where(hi - lo > 1e-6, hi - lo, 1.0)
  return (x - lo) / rng


def minmax_denormalise(x, stats):
  lo, hi = stats["pose_min"], stats["pose_max"]
  rng = jnp.where(hi - lo > 1e-6, hi - lo, 1.0)
  return x * rng + lo


def windows_synthetic_batch(batch_size: int, rng: np.random.Generator, pose_dim: int = 69,
                            waveform: bool = True):
  """A batch with exactly the 'windows' pipeline keys, shapes and dtypes (data contract);
  ``waveform=False`` as ``data.waveform=False`` (the pipeline's smaller 'windows_nowave')."""
  return batch_layout.windows_batch(batch_size, rng, pose_dim, waveform=waveform)


def apply_update(tx: optax.GradientTransformation, grads, opt_state, params,
                 axis_name: Optional[str] = None):
  """One optimiser update of ``params`` with the device-averaged ``grads`` -> (params, state).
  Every GAN of the package (the WGAN phases, the learn2dance pose and sequence GANs) updates
  its generator and critic through this."""
  grads = pmean(grads, axis_name)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _slice_tree(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


class WGANTask(Task):
  """Base of the WGAN tasks; subclasses define the models and the data preparation.

  Subclass hooks: :meth:`init_models`, :meth:`prepare`, :meth:`sample_fake`,
  :meth:`critic_pair`, :meth:`penalty_inputs`, :meth:`gen_regulariser`.
  """
  one_sided = False        # WGAN-LP instead of WGAN-GP
  penalty_wrt = (0,)       # which critic inputs get a penalty term

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.n_critic = int(m.n_critic)
    self.gamma = float(m.gamma)
    self.dtype = compute_dtype(config)
    self.ema_decay = float(config.model.get("ema_decay", 0.999))
    b = self.update_batch()
    self.g_tx = optim.build_optimizer(config, "generator", update_batch=b)
    self.d_tx = optim.build_optimizer(config, "critic", self.n_critic, update_batch=b)

  def update_batch(self) -> int:
    """Examples one critic or generator update sees (the noise scale's B_small): a slice of
    ``data.batch_size / n_critic`` (the whole batch with ``model.slice_batch=False``)."""
    b = int(self.config.data.batch_size)
    return b // self.n_critic if self.config.model.get("slice_batch", True) else b

  # -- hooks ------------------------------------------------------------------------------------
  def init_models(self, rng, pose_dim: int):
    """-> (generator variables {'params', 'batch_stats'}, critic params); jitted."""
    raise NotImplementedError

  def prepare(self, batch, stats, rng):
    """-> (real, cond): normalised real data and conditioning, leading axis n_critic."""
    raise NotImplementedError

  def sample_fake(self, g_params, g_batch_stats, cond, rng, axis_name, num, train=True):
    """-> (``num`` fakes shaped like a real slice, new generator batch_stats)."""
    raise NotImplementedError

  def critic_scores(self, d_params, x, cond, rng):
    raise NotImplementedError

  def critic_pair(self, d_params, real, fake, cond, rng):
    k1, k2 = (None, None) if rng is None else jax.random.split(rng)
    return self.critic_scores(d_params, real, cond, k1), self.critic_scores(d_params, fake,
                                                                             cond, k2)

  def penalty(self, d_params, real, fake, cond, rng):
    """(gamma-free penalty, mean gradient norm) at a random real/fake interpolate."""
    k_a, k_d = jax.random.split(rng)
    alpha = jax.random.uniform(k_a, (real.shape[0],))
    x_hat = interpolate(real, fake, alpha)
    return gradient_penalty(lambda x: self.critic_scores(d_params, x, cond, k_d), [x_hat],
                            one_sided=self.one_sided)

  def gen_regulariser(self, fake, real, cond):
    return jnp.float32(0.0), {}

  # -- state ------------------------------------------------------------------------------------
  def _stats(self, batch, stats):
    if stats is None or "pose_min" not in stats:
      pose = jnp.asarray(batch["pose"], jnp.float32)
      pose = pose.reshape(-1, pose.shape[-1])
      stats = {"pose_min": pose.min(0), "pose_max": pose.max(0)}
    return {"pose_min": jnp.asarray(stats["pose_min"], jnp.float32),
            "pose_max": jnp.asarray(stats["pose_max"], jnp.float32)}

  def init_state(self, rng, batch, stats=None):
    stats = self._stats(batch, stats)
    k_init, k_state = jax.random.split(rng)
    pose_dim = int(batch["pose"].shape[-1])
    # Parameter init with the 'rbg' generator (XLA's native RngBitGenerator): compiling threefry
    # for every parameter shape dominated start-up on CPU (the init is deterministic either way).
    k_init = jax.random.wrap_key_data(jax.random.bits(k_init, (4,), jnp.uint32), impl="rbg")
    g_vars, d_params = jax.jit(self.init_models, static_argnums=1)(k_init, pose_dim)
    g_params = g_vars["params"]
    return WGANState(
        step=jnp.zeros((), jnp.int32), rng=k_state, g_params=g_params,
        g_batch_stats=g_vars.get("batch_stats", {}), g_ema=g_params, d_params=d_params,
        g_opt_state=self.g_tx.init(g_params), d_opt_state=self.d_tx.init(d_params),
        stats=stats, g_tx=self.g_tx, d_tx=self.d_tx)

  def split_slices(self, x):
    """``(B, ...)`` -> ``(n_critic, B / n_critic, ...)`` (or broadcast, slice_batch=False)."""
    n, B = self.n_critic, x.shape[0]
    if not self.config.model.get("slice_batch", True):
      return jnp.broadcast_to(x[None], (n,) + x.shape)
    if B % n:
      raise ValueError(
          f"batch of {B} examples is not a multiple of n_critic={n}: each critic update takes "
          f"its own slice. Set data.batch_size to n_critic * per-update batch, or "
          f"model.slice_batch=False to reuse the whole batch in every update.")
    return x.reshape((n, B // n) + x.shape[1:])

  # -- steps ------------------------------------------------------------------------------------
  def critic_step(self, state: WGANState, real, cond, rng, axis_name=None):
    """One critic update on one slice (the generator's fakes are detached)."""
    k_fake, k_pair, k_pen = jax.random.split(rng, 3)
    fake, g_bs = self.sample_fake(state.g_params, state.g_batch_stats, cond, k_fake, axis_name,
                                  real.shape[0])
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(d_params):
      d_real, d_fake = self.critic_pair(d_params, real, fake, cond, k_pair)
      w = jnp.mean(d_real) - jnp.mean(d_fake)
      gp, gnorm = self.penalty(d_params, real, fake, cond, k_pen)
      return -w + self.gamma * gp, (w, gp, gnorm)

    (loss, (w, gp, gnorm)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt = apply_update(state.d_tx, grads, state.d_opt_state, state.d_params,
                                   axis_name)
    metrics = pmean({"d_loss": loss, "w_dist": w, "gp": gp, "grad_norm": gnorm}, axis_name)
    return state.replace(d_params=d_params, d_opt_state=d_opt, g_batch_stats=g_bs), metrics

  def generator_step(self, state: WGANState, real, cond, rng, axis_name=None):
    """One generator update: ``-D(fake)`` plus the task's regulariser (L1, TV)."""
    k_fake, k_d = jax.random.split(rng)

    def loss_fn(g_params):
      fake, g_bs = self.sample_fake(g_params, state.g_batch_stats, cond, k_fake, axis_name,
                                    real.shape[0])
      adv = -jnp.mean(self.critic_scores(state.d_params, fake, cond, k_d))
      reg, reg_metrics = self.gen_regulariser(fake, real, cond)
      return adv + reg, (g_bs, adv, reg_metrics)

    (loss, (g_bs, adv, reg_m)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params)
    g_params, g_opt = apply_update(state.g_tx, grads, state.g_opt_state, state.g_params,
                                   axis_name)
    g_ema = optax.incremental_update(g_params, state.g_ema, 1.0 - self.ema_decay)
    metrics = pmean({"g_loss": loss, "g_adv": adv, **reg_m}, axis_name)
    return state.replace(g_params=g_params, g_ema=g_ema, g_opt_state=g_opt,
                         g_batch_stats=g_bs), metrics

  def sampling_params(self, state: WGANState):
    """Generator parameters for sampling: the EMA (``model.sample_with_ema``, default) or the
    raw parameters. The originals keep no EMA; it is added here as the field's usual practice
    (``model.ema_decay=0`` makes the EMA equal the raw parameters)."""
    return state.g_ema if self.config.model.get("sample_with_ema", True) else state.g_params

  def step_keys(self, state):
    k = jax.random.fold_in(state.rng, state.step)
    return jax.random.split(k, 3)  # prepare, critic, generator

  def train_step(self, state: WGANState, batch, axis_name: Optional[str] = None):
    k_prep, k_c, k_g = self.step_keys(state)
    real, cond = self.prepare(batch, state.stats, k_prep)

    def body(st, xs):
      i, r, c = xs
      return self.critic_step(st, r, c, jax.random.fold_in(k_c, i), axis_name)

    state, cm = jax.lax.scan(body, state, (jnp.arange(self.n_critic), real, cond))
    state, gm = self.generator_step(state, _slice_tree(real, -1), _slice_tree(cond, -1), k_g,
                                    axis_name)
    metrics = {k: jnp.mean(v) for k, v in cm.items()}
    metrics["w_dist_last"] = cm["w_dist"][-1]
    metrics.update(gm)
    metrics["loss"] = cm["d_loss"][-1] + gm["g_loss"]
    metrics = {k: v.astype(jnp.float32) for k, v in metrics.items()}
    return state.replace(step=state.step + 1), metrics

  def eval_step(self, state: WGANState, batch, axis_name: Optional[str] = None):
    """Wasserstein estimate ``D(real) - D(fake)`` with the generator in inference mode."""
    k = jax.random.fold_in(state.rng, 0x7FFFFFFF)  # fixed eval noise
    real, cond = self.prepare(batch, state.stats, k)
    real, cond = _slice_tree(real, -1), _slice_tree(cond, -1)
    fake, _ = self.sample_fake(state.g_params, state.g_batch_stats, cond, k, axis_name,
                               real.shape[0], train=False)
    d_real, d_fake = self.critic_pair(state.d_params, real, fake, cond, None)
    m = {"w_dist": jnp.mean(d_real) - jnp.mean(d_fake)}
    m.update(self.eval_extra(real, fake, cond))
    return pmean({k: v.astype(jnp.float32) for k, v in m.items()}, axis_name)

  def eval_extra(self, real, fake, cond):
    return {}

  def forward(self, state: WGANState, batch):
    """Forward-only cost of one critic update plus one generator loss on the batch's first
    slice, for benchmarks: no parameter gradient, no update, rng from ``fold_in(rng, step)``;
    the generator's BatchNorm runs in train mode and its statistics are discarded. (The
    penalty's input gradient is part of the critic loss, so it is computed.)"""
    k_prep, k_c, k_g = self.step_keys(state)
    real, cond = self.prepare(batch, state.stats, k_prep)
    real, cond = _slice_tree(real, 0), _slice_tree(cond, 0)
    k_fake, k_pair, k_pen = jax.random.split(k_c, 3)
    fake, _ = self.sample_fake(state.g_params, state.g_batch_stats, cond, k_fake, None,
                               real.shape[0])
    d_real, d_fake = self.critic_pair(state.d_params, real, fake, cond, k_pair)
    gp, _ = self.penalty(state.d_params, real, fake, cond, k_pen)
    d_loss = jnp.mean(d_fake) - jnp.mean(d_real) + self.gamma * gp
    reg, _ = self.gen_regulariser(fake, real, cond)
    return (d_loss - jnp.mean(d_fake) + reg).astype(jnp.float32)

  def synthetic_batch(self, batch_size: int, rng: np.random.Generator):
    """``batch_size`` windows as the pipeline yields them. One train step consumes all of them:
    ``n_critic`` slices of ``batch_size / n_critic`` (one per critic update; the generator
    reuses the last), so the per-update batch is ``batch_size / n_critic`` (phase 1: the frames
    of all windows are pooled and ``n_critic * model.batch_size`` of them drawn)."""
    return windows_synthetic_batch(batch_size, rng, int(self.config.model.get("pose_dim", 69)),
                                   bool(self.config.data.get("waveform", True)))


def apply_generator(module, g_params, g_batch_stats, args, rng, train, **kw):
  """Runs a generator with BatchNorm statistics updated in training mode."""
  variables = {"params": g_params, "batch_stats": g_batch_stats}
  if not train:
    return module.apply(variables, *args, train=False, **kw), g_batch_stats
  out, mut = module.apply(variables, *args, train=True, rngs={"dropout": rng},
                          mutable=["batch_stats"], **kw)
  return out, mut["batch_stats"]
