"""Fields every config shares. Each ``configs/<model>.py`` starts from :func:`base_config`.

Configs are code (``ml_collections.ConfigDict``); every field can be overridden on the command
line as ``--config.field=value``.
"""
from __future__ import annotations

import ml_collections

from d2m_jax.train import distributed


# The optimiser schema's keys and defaults (d2m_jax/train/optim.py reads them). Every config's
# ``config.optim`` starts with them, so each can be overridden on the command line
# (``--config.optim.lr_scaling=sqrt``); ``eps`` (None: the optimiser's own default) is left out
# (a None field takes no command-line value) and per-network sub-dicts are the configs'.
OPTIM_DEFAULTS = dict(
    name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=None, momentum=0.0, weight_decay=0.0,
    decay_mask="kernels", clip_norm=0.0, schedule="constant", warmup_steps=0, decay_steps=0,
    milestones=(), decay_factor=0.1, lr_scaling="none", reference_batch=0, accumulate_steps=1,
    noise_scale=False, noise_scale_ema=0.95)


def optim_config() -> ml_collections.ConfigDict:
  """``config.optim`` with every schema key at its default (except ``eps``)."""
  return ml_collections.ConfigDict({k: v for k, v in OPTIM_DEFAULTS.items() if v is not None})


def data_config() -> ml_collections.ConfigDict:
  """The input pipeline's fields (``config.data``); see ``d2m_jax.data.pipeline``."""
  d = ml_collections.ConfigDict()
  # 'synthetic' (the embedded procedural default, built on first use), 'music_to_dance'
  # (the real mocap data, ../shared/data/music_to_dance) or 'openpose'.
  d.source = "synthetic"
  # Where raw data lives (None: the source's default location).
  d.raw_dir = ml_collections.FieldReference(None, field_type=str)
  # TFDS data_dir for the preprocessed datasets (None: $D2M_DATA_DIR or ~/.cache/d2m_jax/tfds).
  d.data_dir = ml_collections.FieldReference(None, field_type=str)
  # Example kind: 'windows' (120-frame windows), 'units' (Dancing2Music 3-unit sequences) or
  # 'sequences' (whole sequences).
  d.kind = "windows"
  d.batch_size = 32          # global batch, over all devices and processes
  d.eval_batch_size = 32
  d.shuffle_seed = 0
  d.require_audio = True     # drop windows/units of motion-only sequences
  d.waveform = True          # False: windows without the 16 kHz clip (smaller 'windows_nowave')
  d.max_frames = ml_collections.FieldReference(None, field_type=int)  # kind 'sequences' pad/crop
  d.synthetic_sequences_per_style = 6
  d.synthetic_seconds = 30.0
  d.synthetic_seed = 0
  d.openpose_fps = 30.0
  d.num_workers = 1          # ingestion processes
  d.host_prefetch = 4
  # Input loader: 'tfdata', 'numpy' (no TensorFlow needed) or 'auto' (tfdata where TensorFlow
  # imports, else numpy with a notice); see d2m_jax/data/pipeline.py.
  d.loader = "auto"
  # A portable export (launch/export_data.py) to train from instead of the processed dataset.
  d.portable = ml_collections.FieldReference(None, field_type=str)
  return d


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "style"                 # module under d2m_jax/tasks
  c.seed = 0
  # Compute dtype: 'auto' (bfloat16 on GPU/TPU, float32 on CPU), 'float32' or 'bfloat16';
  # parameters and optimiser state stay float32 (d2m_jax/train/task.py:compute_dtype).
  c.dtype = "auto"
  c.parallel = "jit"               # 'jit' (NamedSharding, default) | 'shard_map' | 'pmap'
  c.num_train_steps = 100
  c.log_every_steps = 10
  c.eval_every_steps = 50
  c.num_eval_batches = 4
  c.checkpoint_every_steps = 50
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  # Engine (d2m_jax/train/loop.py) knobs; 0 devices = all of them.
  c.num_devices = 0
  c.eval_split = "validation"                    # periodic evaluation
  c.final_eval_splits = ("validation", "test")   # evaluated at the end of training
  c.debug_nan_step = -1                          # >= 0: feed NaN inputs at that step (tests)
  # Wall-clock budget in seconds from the start of train_and_evaluate (0: none): when spent,
  # the run checkpoints, runs its final evaluations and returns (exit 0).
  c.max_train_seconds = 0.0
  # Evaluators (d2m_jax/train/evaluators.py): name -> {kind, every_steps, split, final, ...}.
  # Empty: the historical pair from eval_every_steps / eval_split / final_eval_splits.
  c.evals = ml_collections.ConfigDict()
  # Stop at the first logged value of `metric` (e.g. "eval_validation/balanced_accuracy" or
  # "train/loss") that is >= (mode "max") or <= ("min") threshold; WORKDIR/time_to_target.json
  # records steps, examples and seconds to it (empty metric: no target).
  c.target = ml_collections.ConfigDict(dict(metric="", threshold=0.0, mode="max"))
  # Keep the best checkpoint by an evaluation (d2m_jax/train/best.py): ranked by how many of the
  # constraints ("KEY<=V,KEY>=V") it meets, then by `metric` in `mode`'s direction; protected
  # from pruning and named in WORKDIR/best.json (--step=best in the tools). Empty metric: off.
  c.keep_best = ml_collections.ConfigDict(dict(metric="", mode="max", constraints=""))
  # (first step, number of steps) to trace with jax.profiler into WORKDIR/profile; count 0: off.
  c.profile_steps = (0, 0)
  # Resume safety (d2m_jax/train/workdir.py): a resume whose config differs from the workdir's
  # config.json is refused except in the cadence fields and those named here ("optim.lr,..."):
  c.allow_config_change = ""
  # >= 0: resume from this checkpoint; newer ones are moved to WORKDIR/superseded_checkpoints/.
  c.restore_step = -1
  c.data = data_config()
  # Multi-process runs (jax.distributed); 'auto' initializes only under a cluster launch.
  c.distributed = distributed.distributed_config()
  c.model = ml_collections.ConfigDict()
  c.optim = optim_config()
  return c
