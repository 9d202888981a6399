"""The one GAN training step of the package: the three music2dance WGAN phases (spec §1) and
the learn2dance pose and sequence GANs are :class:`GANTask` subclasses that plug into it.

One call of :meth:`GANTask.train_step` is one iteration of the original loop: ``n_critic``
critic updates (a ``lax.scan``, the gradient penalty's double backward inside) followed by one
generator update, all in one jitted program with no host round-trip.

What a task plugs in: ``loss``, the adversarial loss (:data:`WASSERSTEIN`: critic
``D(fake) - D(real) + gamma * penalty``, generator ``-D(fake)``; :data:`NON_SATURATING`: BCE on
logits, no penalty); :meth:`~GANTask.step_keys`, which key each update's fake sample, critic
scores and penalty get; the models and data (``init_state``, ``prepare``, ``sample_fake``,
``critic_scores``/``critic_pair``, ``penalty``, ``gen_regulariser``); the bookkeeping
(``opt_fields``, ``critic_updates_bn_stats``, ``step_metrics``; a ``g_ema`` state field gets the
generator EMA). The WGAN phases take the defaults below; the learn2dance GANs:
:class:`d2m_jax.tasks.l2d_common.L2DGANTask`.

Batch slicing (WGAN phases): the step's batch is split into ``n_critic`` equal slices along the
batch axis; critic update ``i`` uses slice ``i`` and the generator update reuses the last slice
(the original also reuses the real batch of the iteration's last critic step for the generator).
So a config with per-update batch ``b`` sets ``config.data.batch_size = n_critic * b``; the batch
size must be a multiple of ``n_critic`` (or ``model.slice_batch=False``: every update sees the
whole batch, with fresh noise). Phase 1 draws its single poses from all frames of the batch's
windows instead (see :mod:`d2m_jax.tasks.wgan_pose`).

Randomness (WGAN phases): ``k = fold_in(state.rng, state.step)`` split into (prepare, critic,
generator); critic update ``i`` uses ``fold_in(k_c, i)`` split into (fake, pair, penalty) and the
generator update ``k_g`` split into (fake, critic), so the fused step equals the same updates
run one by one (:meth:`~GANTask.critic_step`, :meth:`~GANTask.generator_step`, tested).

Normalisation (WGAN phases): per-coordinate min-max to [0, 1] with the train split's
``pose_min/pose_max`` (from ``pipeline.load_stats``), kept in the state so generation
de-normalises without the data.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional

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


class AdversarialLoss(NamedTuple):
  """Scores -> ``critic(d_real, d_fake) = (loss, metrics)``, ``generator(d_fake) = loss``."""
  critic: Callable
  generator: Callable
  penalised: bool   # the critic loss adds gamma * penalty


def _wasserstein(d_real, d_fake):
  w = jnp.mean(d_real) - jnp.mean(d_fake)
  return -w, {"w_dist": w}


def _bce(logits, target):
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def _bce_critic(d_real, d_fake):
  return _bce(d_real, 1.0) + _bce(d_fake, 0.0), {"d_real": jnp.mean(jax.nn.sigmoid(d_real)),
                                                  "d_fake": jnp.mean(jax.nn.sigmoid(d_fake))}


WASSERSTEIN = AdversarialLoss(_wasserstein, lambda d_fake: -jnp.mean(d_fake), True)
NON_SATURATING = AdversarialLoss(_bce_critic, lambda d_fake: _bce(d_fake, 1.0), False)


def minmax_normalise(x, stats):
  lo, hi = stats["pose_min"], stats["pose_max"]
  rng = jnp.where(hi - lo > 1e-6, hi - lo, 1.0)
  return (x - lo) / rng


def minmax_denormalise(x, stats):
  lo, hi = stats["pose_min"], stats["pose_max"]
  rng = jnp.where(hi - lo > 1e-6, hi - lo, 1.0)
  return x * rng + lo


def apply_update(tx: optax.GradientTransformation, grads, opt_state, params,
                 axis_name: Optional[str] = None):
  """One optimiser update of ``params`` with the device-averaged ``grads`` -> (params, state)."""
  grads = pmean(grads, axis_name)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _two_keys(rng):
  return rng if isinstance(rng, tuple) else tuple(jax.random.split(rng))


def _slice_tree(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


class GANTask(Task):
  """Base of every GAN task: the one train step; subclasses plug in what the module docstring
  lists (defaults: the WGAN phases' Wasserstein loss, keys, state and bookkeeping)."""
  loss = WASSERSTEIN
  one_sided = False        # WGAN-LP instead of WGAN-GP
  opt_fields = ("g_opt_state", "d_opt_state")
  critic_updates_bn_stats = True

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.n_critic = int(m.get("n_critic", 1))
    self.gamma = float(m.get("gamma", 0.0))
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

  def prepare(self, state, batch, rng):
    """-> (real, cond): normalised real data and conditioning, leading axis n_critic."""
    raise NotImplementedError

  def sample_fake(self, state, g_params, cond, rng, axis_name, num, train=True):
    """-> (``num`` fakes of ``g_params`` (with ``state``'s batch statistics and frozen parts)
    shaped like a real slice, new generator batch_stats)."""
    raise NotImplementedError

  def critic_scores(self, d_params, x, cond, rng):
    """Scores of ``x`` by ``self._critic()`` with ``cond`` as keyword inputs; dropout from
    ``rng`` (None: inference mode)."""
    train = {"train": False} if rng is None else {"train": True, "rngs": {"dropout": rng}}
    return self._critic().apply({"params": d_params}, x, **cond, **train)

  def critic_pair(self, d_params, real, fake, cond, rng):
    """Scores of real and fake; ``rng``: None, a key split in two, or the two dropout keys."""
    k1, k2 = (None, None) if rng is None else _two_keys(rng)
    return self.critic_scores(d_params, real, cond, k1), self.critic_scores(d_params, fake,
                                                                             cond, k2)

  def penalty(self, d_params, real, fake, cond, rng):
    """(gamma-free penalty, mean gradient norm) at a random real/fake interpolate; ``rng``: a
    key split in two, or the (interpolation, critic dropout) keys."""
    k_a, k_d = _two_keys(rng)
    alpha = jax.random.uniform(k_a, (real.shape[0],))
    x_hat = interpolate(real, fake, alpha)
    return gradient_penalty(lambda x: self.critic_scores(d_params, x, cond, k_d), [x_hat],
                            one_sided=self.one_sided)

  def gen_regulariser(self, fake, real, cond):
    return jnp.float32(0.0), {}

  def step_keys(self, state, axis_name: Optional[str] = None):
    """-> (prepare key, critic keys (fake, pair, penalty) with leading axis n_critic, generator
    keys (fake, critic)); each in the form the task's hooks take. The same on every device."""
    k_prep, k_c, k_g = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    critic = jax.vmap(lambda i: tuple(jax.random.split(jax.random.fold_in(k_c, i), 3)))
    return k_prep, critic(jnp.arange(self.n_critic)), tuple(jax.random.split(k_g))

  def step_metrics(self, cm, gm):
    """Critic metrics (leading axis: the n_critic updates), generator metrics -> logged ones."""
    return {**{k: jnp.mean(v) for k, v in cm.items()}, "w_dist_last": cm["w_dist"][-1], **gm,
            "loss": cm["d_loss"][-1] + gm["g_loss"]}

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
        stats=stats)

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
  def critic_loss(self, d_params, real, fake, cond, k_pair, k_pen):
    """-> (adversarial loss (+ gamma * penalty when penalised), (metrics, fake scores))."""
    d_real, d_fake = self.critic_pair(d_params, real, fake, cond, k_pair)
    loss, metrics = self.loss.critic(d_real, d_fake)
    if self.loss.penalised:
      gp, gnorm = self.penalty(d_params, real, fake, cond, k_pen)
      loss = loss + self.gamma * gp
      metrics.update(gp=gp, grad_norm=gnorm)
    return loss, (metrics, d_fake)

  def critic_step(self, state, real, cond, keys, axis_name=None):
    """One critic update on one slice, ``keys`` from :meth:`step_keys` (fakes detached)."""
    k_fake, k_pair, k_pen = keys
    fake, g_bs = self.sample_fake(state, state.g_params, cond, k_fake, axis_name, real.shape[0])
    (loss, (m, _)), grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
        state.d_params, real, jax.lax.stop_gradient(fake), cond, k_pair, k_pen)
    opt = self.opt_fields[1]
    d_params, d_opt = apply_update(self.d_tx, grads, getattr(state, opt), state.d_params,
                                   axis_name)
    new = {"d_params": d_params, opt: d_opt}
    if self.critic_updates_bn_stats:
      new["g_batch_stats"] = g_bs
    return state.replace(**new), pmean({"d_loss": loss, **m}, axis_name)

  def generator_step(self, state, real, cond, keys, axis_name=None):
    """One generator update: adversarial loss + the task's regulariser (L1, TV)."""
    k_fake, k_d = keys

    def loss_fn(g_params):
      fake, g_bs = self.sample_fake(state, g_params, cond, k_fake, axis_name, real.shape[0])
      adv = self.loss.generator(self.critic_scores(state.d_params, fake, cond, k_d))
      reg, reg_metrics = self.gen_regulariser(fake, real, cond)
      return adv + reg, (g_bs, adv, reg_metrics)

    (loss, (g_bs, adv, reg_m)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params)
    opt = self.opt_fields[0]
    g_params, g_opt = apply_update(self.g_tx, grads, getattr(state, opt), state.g_params,
                                   axis_name)
    new = {"g_params": g_params, opt: g_opt, "g_batch_stats": g_bs}
    if hasattr(state, "g_ema"):
      new["g_ema"] = optax.incremental_update(g_params, state.g_ema, 1.0 - self.ema_decay)
    return state.replace(**new), pmean({"g_loss": loss, "g_adv": adv, **reg_m}, axis_name)

  def sampling_params(self, state: WGANState):
    """Generator parameters for sampling: the EMA (``model.sample_with_ema``, default) or the
    raw parameters. The originals keep no EMA; it is added here as the field's usual practice
    (``model.ema_decay=0`` makes the EMA equal the raw parameters)."""
    return state.g_ema if self.config.model.get("sample_with_ema", True) else state.g_params

  def train_step(self, state, batch, axis_name: Optional[str] = None):
    k_prep, k_critic, k_gen = self.step_keys(state, axis_name)
    real, cond = self.prepare(state, batch, k_prep)

    def body(st, xs):
      return self.critic_step(st, *xs, axis_name)

    state, cm = jax.lax.scan(body, state, (real, cond, k_critic))
    state, gm = self.generator_step(state, _slice_tree(real, -1), _slice_tree(cond, -1), k_gen,
                                    axis_name)
    metrics = {k: v.astype(jnp.float32) for k, v in self.step_metrics(cm, gm).items()}
    return state.replace(step=state.step + 1), metrics

  def eval_step(self, state: WGANState, batch, axis_name: Optional[str] = None):
    """Wasserstein estimate ``D(real) - D(fake)`` with the generator in inference mode."""
    k = jax.random.fold_in(state.rng, 0x7FFFFFFF)  # fixed eval noise
    real, cond = self.prepare(state, batch, k)
    real, cond = _slice_tree(real, -1), _slice_tree(cond, -1)
    fake, _ = self.sample_fake(state, state.g_params, cond, k, axis_name, real.shape[0],
                               train=False)
    d_real, d_fake = self.critic_pair(state.d_params, real, fake, cond, None)
    m = {"w_dist": jnp.mean(d_real) - jnp.mean(d_fake)}
    m.update(self.eval_extra(real, fake, cond))
    return pmean({k: v.astype(jnp.float32) for k, v in m.items()}, axis_name)

  def eval_extra(self, real, fake, cond):
    return {}

  def forward(self, state, batch):
    """Benchmarks' forward-only cost: the first critic update's loss (with the penalty's input
    gradient) plus the generator's on its slice; no parameter gradient or update."""
    k_prep, k_critic, _ = self.step_keys(state)
    real, cond = self.prepare(state, batch, k_prep)
    real, cond = _slice_tree(real, 0), _slice_tree(cond, 0)
    k_fake, k_pair, k_pen = _slice_tree(k_critic, 0)
    fake, _ = self.sample_fake(state, state.g_params, cond, k_fake, None, real.shape[0])
    loss, (_, d_fake) = self.critic_loss(state.d_params, real, fake, cond, k_pair, k_pen)
    reg, _ = self.gen_regulariser(fake, real, cond)
    return (loss + self.loss.generator(d_fake) + reg).astype(jnp.float32)

  def synthetic_batch(self, batch_size: int, rng: np.random.Generator):
    """``batch_size`` windows as the pipeline yields them. One train step consumes all of them:
    ``n_critic`` slices of ``batch_size / n_critic`` (one per critic update; the generator
    reuses the last), so the per-update batch is ``batch_size / n_critic`` (phase 1: the frames
    of all windows are pooled and ``n_critic * model.batch_size`` of them drawn)."""
    return batch_layout.windows_batch(batch_size, rng, int(self.config.model.get("pose_dim", 69)),
                                      waveform=bool(self.config.data.get("waveform", True)))


def apply_generator(module, g_params, g_batch_stats, args, rng, train, **kw):
  """Runs a generator with BatchNorm statistics updated in training mode."""
  variables = {"params": g_params, "batch_stats": g_batch_stats}
  if not train:
    return module.apply(variables, *args, train=False, **kw), g_batch_stats
  out, mut = module.apply(variables, *args, train=True, rngs={"dropout": rng},
                          mutable=["batch_stats"], **kw)
  return out, mut["batch_stats"]
