"""The one optimiser schema: every task builds its optimiser(s) here from ``config.optim``.

Keys (one spelling; defaults in :data:`DEFAULTS`):

* ``name``: adam | adamw | lamb | lars | sgd (all optax). ``lr``, ``b1``, ``b2``, ``eps`` (None:
  the optax default of that optimiser), ``momentum`` (sgd, lars), ``weight_decay`` (adamw, lamb,
  lars) on the leaves ``decay_mask`` selects: ``kernels`` (not biases, not norm scales/offsets:
  every leaf with ndim >= 2 not named bias/scale) or ``all``.
* ``clip_norm``: clip the global gradient norm first (0 = off).
* ``schedule``: constant | warmup_cosine | warmup_linear | multistep (MultiStepLR: x
  ``decay_factor`` at each of ``milestones``, the sequence WGAN's paper schedule), with
  ``warmup_steps`` and ``decay_steps`` (warmup included; 0 = ``config.num_train_steps``). Steps
  count optimiser updates of that network; a network updated several times per train step (the
  WGAN critic) gets them scaled by the task (``updates_per_step``).
* ``lr_scaling``: none | linear | sqrt: ``lr`` was tuned at ``reference_batch`` examples; the
  effective lr is ``lr x (G / reference_batch)`` (or its square root) for the global batch
  ``G = data.batch_size x accumulate_steps``. The effective lr is in the optimiser state and is
  logged (:func:`optimizer_metrics`) whenever scaling, a warmup schedule, accumulation or the
  noise scale is on; a constant (or multistep) unscaled lr adds no state, so the state layout,
  and old checkpoints, stay as before this schema (the start-up line prints the lr).
* ``accumulate_steps``: k >= 1. ``optax.MultiSteps``: each train step feeds one micro-batch of
  ``data.batch_size`` examples; every k-th step applies the mean gradient of the last k (the
  other steps leave the parameters alone), so one jitted step and donation stay. Batch
  statistics (BatchNorm running averages) are per micro-batch, as they are per device under
  data parallelism ("ghost batch"): they update on every micro-step.
* ``noise_scale``: True: the gradient noise scale (McCandlish et al. 2018, appendix A) from the
  k micro-batch gradients (B_small = data.batch_size) and their mean (B_big = k B_small), needs
  ``accumulate_steps >= 2``; EMAs with decay ``noise_scale_ema``; see :func:`noise_scale`.

Per network: a GAN's or a multi-module model's networks read ``config.optim.<network>`` (e.g.
``config.optim.generator.lr``, ``config.optim.critic.lr``, ``config.optim.stdp_dec.clip_norm``);
unset keys are inherited from ``config.optim``. Other keys of ``config.optim`` (the Dancing2Music
loss weights ``lambda_*``) are not the optimiser's and are ignored here.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from d2m_jax.train.defaults import OPTIM_DEFAULTS

DEFAULTS = OPTIM_DEFAULTS     # d2m_jax/train/defaults.py: every config.optim starts with them

NAMES = ("adam", "adamw", "lamb", "lars", "sgd")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "multistep")
SCALINGS = ("none", "linear", "sqrt")
# Spellings of the six optimiser builders before this module, with their one spelling now.
RENAMED = {"learning_rate": "lr", "lr_g": "generator.lr", "lr_d": "critic.lr",
           "decay": "decay_factor", "stdp_dec_lr_scale": "stdp_dec.lr"}


def _fail(field: str, problem: str):
  raise ValueError(f"config.optim.{field}: {problem}")


def resolve(config, network: Optional[str] = None) -> Dict[str, Any]:
  """The optimiser keys of ``network`` (its sub-dict over the top level over the defaults)."""
  optim = config.optim
  for old, new in RENAMED.items():
    if old in optim:
      _fail(old, f"renamed: use config.optim.{new} (d2m_jax/train/optim.py)")
  out = dict(DEFAULTS)
  for key in DEFAULTS:
    if key in optim and not hasattr(optim[key], "keys"):
      out[key] = optim[key]
  if network is not None and network in optim and hasattr(optim[network], "keys"):
    for key in optim[network].keys():
      if key not in DEFAULTS:
        _fail(f"{network}.{key}", f"unknown optimiser key (known: {', '.join(DEFAULTS)})")
      out[key] = optim[network][key]
  where = network + "." if network else ""
  if out["name"] not in NAMES:
    _fail(where + "name", f"{out['name']!r}: expected one of {NAMES}")
  if out["schedule"] not in SCHEDULES:
    _fail(where + "schedule", f"{out['schedule']!r}: expected one of {SCHEDULES}")
  if out["lr_scaling"] not in SCALINGS:
    _fail(where + "lr_scaling", f"{out['lr_scaling']!r}: expected one of {SCALINGS}")
  if out["lr_scaling"] != "none" and int(out["reference_batch"]) <= 0:
    _fail(where + "reference_batch", "lr_scaling needs the batch the lr was tuned at (> 0)")
  if int(out["accumulate_steps"]) < 1:
    _fail(where + "accumulate_steps", f"{out['accumulate_steps']}: must be >= 1")
  if out["noise_scale"] and int(out["accumulate_steps"]) < 2:
    _fail(where + "noise_scale", "needs accumulate_steps >= 2 (gradients at two batch sizes)")
  if out["decay_mask"] not in ("kernels", "all"):
    _fail(where + "decay_mask", f"{out['decay_mask']!r}: expected 'kernels' or 'all'")
  return out


def global_batch(config, network: Optional[str] = None) -> int:
  """Examples per optimiser update: data.batch_size (over all devices) x accumulate_steps."""
  return int(config.data.batch_size) * int(resolve(config, network)["accumulate_steps"])


def effective_lr(config, network: Optional[str] = None) -> float:
  """``optim.lr`` scaled by ``lr_scaling`` from ``reference_batch`` to the global batch."""
  o = resolve(config, network)
  ratio = global_batch(config, network) / max(int(o["reference_batch"]), 1)
  return float(o["lr"]) * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[o["lr_scaling"]]


def describe_batch(config, num_devices: int, networks=(None,)) -> str:
  """The start-up line: global batch = per-device batch x devices x accumulation steps, and
  each network's optimiser with its effective (scaled) learning rate."""
  b = int(config.data.batch_size)
  k = int(resolve(config)["accumulate_steps"])
  per_dev = b / max(num_devices, 1)
  per_dev_txt = f"{per_dev:g}" if per_dev != int(per_dev) else str(int(per_dev))
  parts = [f"global batch {b * k} = {per_dev_txt} per device x {num_devices} devices x "
           f"{k} accumulation steps"]
  for net in networks:
    o = resolve(config, net)
    label = f"{net}: " if net else ""
    sched = o["schedule"] + (f" warmup {o['warmup_steps']}" if o["warmup_steps"] else "")
    parts.append(f"{label}{o['name']} lr {effective_lr(config, net):.3g} (lr {o['lr']:g}, "
                 f"scaling {o['lr_scaling']}) {sched}")
  return "; ".join(parts)


def make_schedule(config, network: Optional[str] = None, updates_per_step: int = 1):
  """The learning-rate schedule (a float for 'constant') of ``network``."""
  o = resolve(config, network)
  lr = effective_lr(config, network)
  s = int(updates_per_step)
  if o["schedule"] == "constant":
    return lr
  if o["schedule"] == "multistep":
    if not o["milestones"]:
      return lr
    return optax.piecewise_constant_schedule(
        lr, {int(m) * s: float(o["decay_factor"]) for m in o["milestones"]})
  warm = int(o["warmup_steps"]) * s
  total = (int(o["decay_steps"]) or int(config.num_train_steps) // int(o["accumulate_steps"])) * s
  if total <= warm:
    _fail("decay_steps", f"{total // s} must exceed warmup_steps={warm // s}")
  if o["schedule"] == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warm, 1), total, 0.0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, max(warm, 1)),
       optax.linear_schedule(lr, 0.0, total - warm)], [warm])


def decay_mask(params):
  """True on the leaves weight decay applies to: kernels/embeddings, not biases or norms."""
  def keep(path, leaf):
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", ""))) if path else ""
    return leaf.ndim >= 2 and name not in ("bias", "scale")
  return jax.tree_util.tree_map_with_path(keep, params)


class LrState(NamedTuple):
  """The learning rate the last update used (effective: scaled and scheduled)."""
  count: jax.Array
  lr: jax.Array


def record_lr(schedule) -> optax.GradientTransformation:
  """Leaves the updates alone; keeps ``schedule(count)`` in its state for the logs."""
  fn = schedule if callable(schedule) else (lambda _: schedule)

  def init(params):
    del params
    return LrState(jnp.zeros((), jnp.int32), jnp.asarray(fn(0), jnp.float32))

  def update(updates, state, params=None):
    del params
    lr = jnp.asarray(fn(state.count), jnp.float32)
    return updates, LrState(optax.safe_increment(state.count), lr)

  return optax.GradientTransformation(init, update)


def records_lr(config, network: Optional[str] = None) -> bool:
  """Whether ``network``'s optimiser keeps its effective lr in its state (see lr_scaling)."""
  o = resolve(config, network)
  return (o["schedule"] not in ("constant", "multistep") or o["lr_scaling"] != "none"
          or int(o["accumulate_steps"]) > 1 or bool(o["noise_scale"]))


def build_optimizer(config, network: Optional[str] = None, updates_per_step: int = 1,
                    update_batch: Optional[int] = None) -> optax.GradientTransformation:
  """The optax transform of ``network`` (None: the single network) from ``config.optim``.

  ``updates_per_step``: how many times the task updates this network per train step (the WGAN
  critic: n_critic), so schedule steps count train steps for every network. ``update_batch``:
  the examples one update's gradient is taken over (None: ``data.batch_size``; a WGAN's slice
  of it), the noise scale's B_small.
  """
  o = resolve(config, network)
  lr = make_schedule(config, network, updates_per_step)
  eps = o["eps"]
  mask = decay_mask if o["decay_mask"] == "kernels" else None
  wd = float(o["weight_decay"])
  name = o["name"]
  if name == "adam":
    tx = optax.adam(lr, b1=o["b1"], b2=o["b2"], **({} if eps is None else {"eps": eps}))
  elif name == "adamw":
    tx = optax.adamw(lr, b1=o["b1"], b2=o["b2"], weight_decay=wd, mask=mask,
                     **({} if eps is None else {"eps": eps}))
  elif name == "lamb":
    tx = optax.lamb(lr, b1=o["b1"], b2=o["b2"], weight_decay=wd, mask=mask,
                    **({} if eps is None else {"eps": eps}))
  elif name == "lars":
    tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=mask if mask else True,
                    trust_ratio_mask=mask if mask else True, momentum=float(o["momentum"]),
                    **({} if eps is None else {"eps": eps}))
  else:
    m = float(o["momentum"])
    tx = optax.sgd(lr, momentum=m if m else None)
  if float(o["weight_decay"]) and name in ("adam", "sgd"):
    _fail(("%s." % network if network else "") + "weight_decay",
          f"{name} has no decoupled weight decay: use adamw, lamb or lars")
  parts = [optax.clip_by_global_norm(float(o["clip_norm"]))] if o["clip_norm"] else []
  k = int(o["accumulate_steps"])
  # The effective lr is kept in the state (and logged) whenever it is not simply the configured
  # one; otherwise the state keeps the layout the tasks had before this schema, so checkpoints
  # written before it restore (constant lr and the paper's multistep: no extra state).
  record = records_lr(config, network)
  if parts or record:
    tx = optax.chain(*parts, tx, *([record_lr(lr)] if record else []))
  if k > 1:
    tx = optax.MultiSteps(tx, k).gradient_transformation()
  if o["noise_scale"]:
    from d2m_jax.train.noise_scale import noise_scale  # pylint: disable=import-outside-toplevel
    tx = noise_scale(tx, k, int(update_batch or config.data.batch_size),
                     float(o["noise_scale_ema"]))
  return tx


def upgrade_legacy(config):
  """A config written before this schema (a workdir's config.json) in the one spelling, with the
  optimisers it trained with: ``learning_rate`` -> ``lr``; the WGANs' ``lr_g``/``lr_d`` ->
  ``generator.lr``/``critic.lr`` and their milestones -> ``schedule="multistep"`` (decay 0.8
  unless set); the D2M decomposition's clip on ``movement_enc``/``stdp_dec`` only; the
  composition's ``stdp_dec_lr_scale`` -> ``stdp_dec.lr``; music_style's adamw (decaying all).
  Configs already in the new spelling come back unchanged. Returns a copy."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  c = ml_collections.ConfigDict(config.to_dict())
  o = c.optim
  task = c.get("task", "")
  # before the schema a config had no "schedule" (every config.optim has it since)
  old_decomp = (task == "d2m_decomposition" and "movement_enc" not in o and "clip_norm" in o
                and "schedule" not in o)
  if not any(k in o for k in RENAMED) and not old_decomp:
    return c
  if "learning_rate" in o:
    o.lr = o.learning_rate
    del o["learning_rate"]
    if task == "music_style" and "name" not in o:
      o.name, o.decay_mask = "adamw", "all"
  for old, net in (("lr_g", "generator"), ("lr_d", "critic")):
    if old in o:
      o[net] = ml_collections.ConfigDict({"lr": o[old]})
      del o[old]
  if "milestones" in o and tuple(o.milestones or ()):
    o.schedule = "multistep"
    o.decay_factor = o.get("decay", 0.8)
  if "decay" in o:
    del o["decay"]
  if "stdp_dec_lr_scale" in o:
    o.stdp_dec = ml_collections.ConfigDict({"lr": o.lr * o.stdp_dec_lr_scale})
    del o["stdp_dec_lr_scale"]
  if old_decomp:
    for net in ("movement_enc", "stdp_dec"):
      o[net] = ml_collections.ConfigDict({"clip_norm": o.clip_norm})
    o.clip_norm = 0.0
  return c


def _path_name(path) -> str:
  """'g', 'movement_enc', ... from a key path into the train state (generic parts dropped)."""
  names = []
  for p in path:
    key = getattr(p, "key", getattr(p, "name", None))
    if isinstance(key, str) and key not in ("opt_state", "inner_opt_state", "inner_state", "inner"):
      names.append(key[:-len("_opt_state")] if key.endswith("_opt_state") else
                   key[:-len("_opt")] if key.endswith("_opt") else key)
  return "/".join(names)


def optimizer_metrics(state) -> Dict[str, jax.Array]:
  """Scalars to log from anywhere in a train state: ``optim/[<network>/]lr`` (effective lr) and,
  where the noise scale is on, ``optim/[<network>/]gns_*`` (see d2m_jax/train/noise_scale.py)."""
  from d2m_jax.train.noise_scale import NoiseScaleState, metrics  # pylint: disable=import-outside-toplevel
  out = {}
  for kind in (LrState, NoiseScaleState):   # an LrState may sit inside a NoiseScaleState
    found = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x, t=kind: isinstance(x, t))
    for path, leaf in found[0]:
      if not isinstance(leaf, kind):
        continue
      name = _path_name(path)
      prefix = f"optim/{name}/" if name else "optim/"
      if kind is LrState:
        out[prefix + "lr"] = leaf.lr
      else:
        out.update({prefix + k: v for k, v in metrics(leaf).items()})
  return out


class ModuleOptimizers:
  """One optax transform per module name (the Dancing2Music tasks).

  The original keeps one ``torch.optim.Adam`` per network and clips the global gradient norm of
  *some* networks separately (``clip_grad_norm_(net.parameters(), 0.5)``). This holds one optax
  chain per named sub-tree of the parameter dict (each from ``config.optim`` and
  ``config.optim.<module>``), so that a phase can step exactly the modules it trains (other
  modules' Adam moments and counts stay untouched, as in PyTorch), and all phases still run
  inside ONE jitted step."""

  def __init__(self, txs: Mapping[str, optax.GradientTransformation]):
    self.txs = dict(txs)

  @classmethod
  def from_config(cls, config, names: Iterable[str]) -> "ModuleOptimizers":
    """``optim.build_optimizer(config, name)`` for each module (``config.optim.<name>``)."""
    txs = {}
    for name in names:
      tx = build_optimizer(config, name)
      # A chain per module, as before the schema (the same state layout: old checkpoints load).
      if not resolve(config, name)["clip_norm"] and not records_lr(config, name):
        tx = optax.chain(tx)
      txs[name] = tx
    return cls(txs)

  def init(self, params: Mapping) -> Dict:
    return {name: tx.init(params[name]) for name, tx in self.txs.items()}

  def apply(self, params: Dict, opt_state: Dict, grads: Mapping, names: Iterable[str]):
    """Steps the modules ``names`` with ``grads[name]``; the rest are returned unchanged."""
    params, opt_state = dict(params), dict(opt_state)
    for name in names:
      updates, opt_state[name] = self.txs[name].update(grads[name], opt_state[name], params[name])
      params[name] = optax.apply_updates(params[name], updates)
    return params, opt_state
