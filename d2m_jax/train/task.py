"""The contract between a model family and the engine.

A *task* is one trainable model family (the style classifier, the Dancing2Music decomposition
stage, the phase-3 WGAN, ...). It lives in ``d2m_jax/tasks/<name>.py`` and exposes
``make_task(config) -> Task``; ``config.task = "<name>"`` selects it (see
:func:`d2m_jax.tasks.get_task`). The engine (``d2m_jax.train.loop``) owns everything else: the
input pipeline, the mesh and the three parallel modes, jit with donation, checkpoints, resume,
logging, NaN stop and SIGTERM.

State: one pytree per model (a ``flax.struct.PyTreeNode``) holding at least ``step`` (int32
scalar array) and ``rng`` (a PRNG key), plus parameters, optimiser states, EMA, batch statistics
and the dataset normalisation statistics the model needs at generation time (so that a
checkpoint is self-contained). GANs keep generator, critic, EMA and rng in the same state.

Steps are pure per-device bodies: randomness comes from
``jax.random.fold_in(state.rng, state.step)``; gradients, metrics and batch statistics go
through :func:`d2m_jax.train.parallel_utils.pmean` with the ``axis_name`` given; the step
returns the new state with ``step + 1`` and a dict of float32 scalar metrics (``"loss"`` is the
one the engine checks for NaN/inf).
"""
from __future__ import annotations

import abc
from typing import Any, Dict, Optional, Tuple

import jax.numpy as jnp
import ml_collections
import numpy as np

Batch = Dict[str, Any]
Metrics = Dict[str, Any]

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DTYPE_CHOICES = ("auto",) + tuple(COMPUTE_DTYPES)


def resolve_dtype_name(name: str, backend: Optional[str] = None) -> str:
  """``'auto'`` -> ``'bfloat16'`` on GPU/TPU, ``'float32'`` elsewhere (CPU); other names pass.

  bfloat16 on accelerators: the matmuls (and the GRU recurrences' matmuls) run in bfloat16 with
  float32 accumulation, parameters, optimiser state, gate non-linearities and carried RNN state
  stay float32. On CPU XLA has no faster bfloat16 path, so 'auto' keeps float32 there. Measured
  before making it the default (docs, performance page): style classifier and a small
  Dancing2Music decomposition on the embedded default, 2000 steps, same seed, bfloat16 vs
  float32 within run-to-run noise (``benchmarks/results/bf16_vs_f32_curves.png``).
  """
  if name not in DTYPE_CHOICES:
    raise ValueError(f"config.dtype={name!r}: expected one of {list(DTYPE_CHOICES)}")
  if name != "auto":
    return name
  from d2m_jax import target  # pylint: disable=import-outside-toplevel
  backend = backend or target.backend()
  return "bfloat16" if backend in ("gpu", "tpu") else "float32"


def compute_dtype(config: ml_collections.ConfigDict, backend: Optional[str] = None):
  """``config.dtype`` ('auto' | 'float32' | 'bfloat16') as the modules' compute dtype (params
  stay float32); 'auto' (the default) is bfloat16 on GPU/TPU and float32 on CPU."""
  return COMPUTE_DTYPES[resolve_dtype_name(config.dtype, backend)]


class Task(abc.ABC):
  """One trainable model family. Subclasses set ``name`` and implement the abstract methods."""

  name: str = "task"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def prepare_host(self, batch: Batch, stats: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Host-side work that needs concrete data before the state is built (e.g. fitting k-means
    centroids); runs once, outside any trace (``d2m_jax.train.state.build_state``). Default:
    nothing."""
    del batch, stats

  @abc.abstractmethod
  def init_state(self, rng, batch: Batch, stats: Optional[Dict[str, np.ndarray]] = None):
    """Builds the initial state from a PRNG key, one (host, numpy) batch and dataset stats.
    Must be traceable: the engine calls it under ``jax.jit`` / ``jax.eval_shape`` only."""

  @abc.abstractmethod
  def train_step(self, state, batch: Batch, axis_name: Optional[str] = None
                 ) -> Tuple[Any, Metrics]:
    """One optimisation step (all of this model's updates) on one batch."""

  def eval_step(self, state, batch: Batch, axis_name: Optional[str] = None) -> Metrics:
    """Evaluation metrics (batch means) on one batch. Default: none."""
    return {}

  # ---- optional members ----------------------------------------------------------------------
  # Declared here so that every task has them; a task provides one by overriding it, and
  # ``task.supports(name)`` says whether it did (callers ask that, never ``hasattr``).
  OPTIONAL_METHODS = ("eval_step", "forward", "generate", "finalize_eval", "motion_rows")

  # Generation (d2m_jax/generate.py): motion frames per second of ``generate``'s output (None:
  # the mocap rate), the music features it reads (``prepare_music`` computes them at that fps),
  # whether it reads the beats, and the skeleton name of its joints (None: inferred from (J, C)).
  fps: Optional[float] = None
  generation_features: Tuple[str, ...] = ()
  generation_uses_beats: bool = True
  skeleton: Optional[str] = None

  def forward(self, state, batch: Batch):
    """The same forward pass and loss as train_step without gradient or update (float32 scalar;
    benchmarks' forward-only rows). Pure and jittable."""
    raise NotImplementedError(f"task {self.name!r} has no forward()")

  def generate(self, state, feats: Dict[str, np.ndarray], beats, num_frames: int, rng,
               num_samples: int = 1):
    """A dance for one song: ``feats`` {name: (num_frames, D)} of ``generation_features``,
    ``beats`` (frame indices) -> (num_samples, num_frames, J, C) joints."""
    raise NotImplementedError(f"task {self.name!r} cannot generate dances")

  def motion_rows(self, state, batch: Batch, rng) -> Dict[str, Any]:
    """Units to compare by motion (``motion_ratio`` evaluator): ``{"real": (N, T, P), "<row>":
    (N, T, P), ...}`` in one normalised space, e.g. a VAE's reconstruction and a generator's
    samples. Pure and jittable."""
    raise NotImplementedError(f"task {self.name!r} has no motion_rows()")

  def host_batch(self, batch: Batch, step: int) -> Batch:
    """Applied by the engine to every training batch on the host before device placement
    (e.g. cut padded sequences to the segment the step reads, drop unread keys); deterministic
    in (seed, step, process) so a resumed run sees the same batches. Default: the batch."""
    del step
    return batch

  def finalize_eval(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Extra entries computed from the SUMMED evaluation metrics of a whole split (e.g. a
    report from a confusion matrix); merged into them. Default: none."""
    del metrics
    return {}

  def supports(self, member: str) -> bool:
    """Whether this task provides the optional method ``member`` (one of
    :data:`OPTIONAL_METHODS`): True when its class overrides the declaration above."""
    if member not in self.OPTIONAL_METHODS:
      raise ValueError(f"{member!r} is not an optional Task method {self.OPTIONAL_METHODS}")
    return getattr(type(self), member) is not getattr(Task, member)

  @abc.abstractmethod
  def synthetic_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
    """A random batch with exactly the keys, shapes and dtypes the input pipeline yields.

    Used by benchmarks (compute isolated from input) and by unit tests.
    """

  def flops_per_example(self) -> Optional[float]:
    """Optional analytic FLOP count; benchmarks otherwise use XLA's cost analysis."""
    return None
