"""Steps to a target against the global batch (Shallue et al. 2018), with the gradient noise
scale B_simple measured online (McCandlish et al. 2018) in the same runs.

For each row (model) and batch B in ``--batches`` and seed in ``--seeds``: train with the
optimiser of d2m_jax/train/optim.py at the learning rate of the row's scaling rule
(``optim.lr_scaling`` against the row's ``reference_batch``), every update the mean of
``--accumulate`` micro-batches of B / accumulate (so the noise scale is measured from the
micro-batch and the update gradients), evaluate the row's target metric on a fixed held-out
batch every ``eval_every`` updates and stop at the first evaluation that meets it. One JSONL row
per run: steps (optimiser updates) and examples to the target, the lr used, the final B_simple
(EMA), wall and CPU seconds. Then one log-log plot per model (steps to target against B, the
perfect-scaling line through the smallest batch, the median measured B_simple marked) and, per
model, the critical batch: the largest B from which doubling still saves >= 20% of the steps.

Runners:
* ``inline`` (default; what the committed results used): a minimal in-process loop over a stream
  of fresh synthetic batches drawn per step (infinite data; each row says what its stream is),
  the task's own jitted ``train_step`` / ``eval_step`` and the optimiser built through the
  schema, so each batch size gets exactly the same model, data distribution and target.
* ``engine``: ``launch/train.py`` with ``config.target`` on the embedded default dataset; reads
  WORKDIR/time_to_target.json (the engine writes it, see :func:`read_time_to_target`).

  nice python benchmarks/batch_scaling.py --rows=style_paper --batches=32,64,128,256,512,1024 \
      --seeds=0,1 --out=benchmarks/results/batch_scaling.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

VERBOSE = bool(os.environ.get("BATCH_SCALING_VERBOSE"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


# ------------------------------------------------------------------ rows --------------------
@dataclasses.dataclass
class Row:
  """A model, its learnable synthetic stream and its target."""
  name: str
  config: Callable[[], object]          # tiny-size config (the row's lr etc. set below)
  stream: Callable[[int, np.random.Generator], Dict[str, np.ndarray]]
  metric: str                           # key of task.eval_step's metrics
  threshold: float
  mode: str                             # "max" | "min"
  lr: float                             # tuned at reference_batch
  reference_batch: int
  scaling: str                          # lr_scaling: none | linear | sqrt
  eval_size: int = 512
  eval_every: int = 5
  max_updates: int = 400
  stream_doc: str = ""
  warmup: int = 0                       # > 0: warmup_linear schedule (decay to 0 at max_updates)
  examples_per_update: int = 1          # windows one update per example of the batch uses (GAN:
                                        # n_critic slices per train step)
  accumulate: int = 0                   # > 0: this row's default accumulation (else 2)
  noise_scale: bool = True              # measure B_simple (needs accumulate >= 2)
  evaluate: Optional[Callable] = None   # task -> fn(state, held_out) -> metric (default: eval_step)
  fixed_stats: Optional[Callable] = None   # held_out -> dataset stats passed to build_state
  optim_name: str = ""                  # "": the config's optimiser; else adam|adamw|lamb|lars|sgd
  momentum: float = -1.0                # >= 0: optim.momentum (sgd, lars)


_STYLE_PATTERNS = np.random.default_rng(1234).standard_normal((4, 28)).astype(np.float32)


def _style_stream(batch, rng, frames=40, amp=0.2):
  """d2m28 windows: unit Gaussian noise plus amp x a fixed per-class direction (4 classes)."""
  style = rng.integers(0, 4, (batch,)).astype(np.int32)
  x = rng.standard_normal((batch, frames, 28)).astype(np.float32)
  x += amp * _STYLE_PATTERNS[style][:, None, :]
  return {"d2m28": x, "style": style}


def _style_config():
  from configs import style_paper  # pylint: disable=import-outside-toplevel
  c = style_paper.get_config()        # the paper's GRU-30, 30-frame crops, Adam
  c.dtype = "float32"
  return c


def _decomp_config():
  from configs import d2m_decomposition  # pylint: disable=import-outside-toplevel
  c = d2m_decomposition.get_config()
  m = c.model
  m.hidden, m.z_mov, m.init_hidden, m.z_init = 32, 16, 16, 8   # below demo size (GRU H=32)
  m.unit_length = 8
  c.dtype = "float32"
  return c


def _decomp_stream(batch, rng):
  from d2m_jax.models import d2m_common  # pylint: disable=import-outside-toplevel
  return d2m_common.synthetic_units_batch(batch, rng, 69, 8)


_MS_PATTERNS = np.random.default_rng(4321).standard_normal((4, 384)).astype(np.float32)


def _music_config():
  from configs import music_style  # pylint: disable=import-outside-toplevel
  c = music_style.get_config()
  m = c.model
  m.clip_frames, m.segment_extra, m.clips_per_sequence = 40, 0, 2
  m.num_lags, m.min_lag, m.max_lag = 16, 2.0, 30.0
  c.data.max_frames = 40
  return c


def _music_stream(batch, rng, frames=40, amp=0.1):
  """'mel_tempogram512' sequences: mel half ones (audio present), tempogram half log1p of
  |noise| plus amp x a fixed per-class lag profile (4 classes)."""
  style = rng.integers(0, 4, (batch,)).astype(np.int32)
  feat = np.ones((batch, frames, 512), np.float32)
  tempo = np.abs(rng.standard_normal((batch, frames, 384)).astype(np.float32))
  tempo += amp * np.abs(_MS_PATTERNS[style])[:, None, :]
  feat[..., 128:] = np.log1p(tempo)
  return {"mel_tempogram512": feat, "style": style,
          "length": np.full((batch,), frames, np.int32)}


WGAN_TARGET, WGAN_LR, WGAN_MAX_UPDATES = 0.5, 1e-3, 400
_SEQ_FRAMES, _SEQ_DIM = 32, 8
_SEQ_PHASES = np.arange(_SEQ_DIM) * np.pi / 4          # coordinates move with fixed lags
_SEQ_AMPS = np.linspace(0.5, 1.5, _SEQ_DIM)
_SEQ_OFFSETS = np.linspace(-1.0, 1.0, _SEQ_DIM)


def _seq_stream(batch, rng, frames=_SEQ_FRAMES, noise=0.05):
  """'pose' windows of a learnable motion: per coordinate p an offset c_p plus a sinusoid
  a_p x u sin(2 pi f t / T + phi + p pi / 4) with per-sequence frequency f in {1, 2} cycles per
  window, phase phi ~ U(0, 2 pi) and amplitude factor u ~ U(0.7, 1.3), plus N(0, noise^2)."""
  f = rng.integers(1, 3, (batch, 1, 1))
  phi = rng.uniform(0, 2 * np.pi, (batch, 1, 1))
  u = rng.uniform(0.7, 1.3, (batch, 1, 1))
  t = np.arange(frames)[None, :, None]
  x = _SEQ_OFFSETS + _SEQ_AMPS * u * np.sin(2 * np.pi * f * t / frames + phi + _SEQ_PHASES)
  x = x + noise * rng.standard_normal(x.shape)
  return {"pose": x.astype(np.float32)}


def _seq_stats(held_out):
  pose = held_out["pose"].reshape(-1, held_out["pose"].shape[-1])
  return {"pose_min": pose.min(0), "pose_max": pose.max(0)}


def _seq_config():
  from configs import wgan_seq  # pylint: disable=import-outside-toplevel
  c = wgan_seq.get_config()     # the paper's losses (WGAN-LP gamma 10, TV eta 50, n_critic 8)
  m = c.model
  m.window_frames, m.pose_dim = _SEQ_FRAMES, _SEQ_DIM
  m.noise, m.n_cells, m.size, m.nblocks_gen = 16, 1, 32, 1          # GRU 16, decoder 32
  m.channels, m.init_kernel, m.nblocks_critic = 16, 5, 1
  m.sample_with_ema = False     # the raw generator is evaluated (an EMA at 0.999 lags 100s of steps)
  c.optim.schedule = "constant"  # the paper's MultiStepLR milestones (10k+) are never reached
  c.dtype = "float32"
  return c


def _seq_evaluate(task):
  """Generated vs held-out real: motion_moments.sequence_moment_distance in data units, on as
  many generated sequences (fixed noise, inference mode) as held-out ones."""
  import jax  # pylint: disable=import-outside-toplevel
  from d2m_jax.metrics import motion_moments  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks.wgan_common import minmax_denormalise  # pylint: disable=import-outside-toplevel

  def fn(state, held_out):
    real = held_out["pose"]
    fake, _ = task.sample_fake(task.sampling_params(state), state.g_batch_stats, {},
                               jax.random.PRNGKey(7), None, real.shape[0], train=False)
    return motion_moments.sequence_moment_distance(real, minmax_denormalise(fake, state.stats))
  return fn


ROWS = {
    "style_paper": Row("style_paper", _style_config, _style_stream, "accuracy", 0.95, "max",
                       lr=3e-3, reference_batch=32, scaling="sqrt",
                       eval_every=1, stream_doc="d2m28 N(0,1) + 0.2 x class direction, 40 frames"),
    "music_style": Row("music_style", _music_config, _music_stream, "accuracy", 0.85, "max",
                       lr=3e-2, reference_batch=32, scaling="sqrt", eval_size=256, eval_every=1,
                       stream_doc="tempogram log1p(|N(0,1)| + 0.1 |class profile|), 40 frames"),
    "d2m_decomposition": Row("d2m_decomposition", _decomp_config, _decomp_stream, "loss", 40.5,
                             "min", lr=2e-3, reference_batch=32, scaling="sqrt", eval_size=128,
                             eval_every=5, max_updates=200,
                             stream_doc="3 random-walk units of 8 frames, 69-D"),
    "wgan_seq": Row("wgan_seq", _seq_config, _seq_stream, "moment_distance", WGAN_TARGET,
                    "min", lr=WGAN_LR, reference_batch=32, scaling="sqrt", eval_size=512,
                    eval_every=5, max_updates=WGAN_MAX_UPDATES, examples_per_update=8,
                    accumulate=1, evaluate=_seq_evaluate,
                    fixed_stats=_seq_stats,
                    stream_doc=f"{_SEQ_DIM}-D sinusoids, f in {{1,2}}/window, random phase and "
                               f"amplitude, {_SEQ_FRAMES} frames"),
}


# ------------------------------------------------------------------ runners -----------------
def read_time_to_target(workdir: str) -> dict:
  """WORKDIR/time_to_target.json as the engine writes it (keys: reached, metric, threshold,
  mode, value, step, examples, train_wall_s, train_cpu_s, compile_s, eval_s)."""
  path = os.path.join(workdir, "time_to_target.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: not written (an engine without config.target?)")
  with open(path) as f:
    out = json.load(f)
  missing = {"reached", "step", "examples"} - set(out)
  if missing:
    raise ValueError(f"{path}: missing {sorted(missing)}")
  return out


def run_engine(row: Row, batch: int, seed: int, workdir: str, accumulate: int,
               extra_args=()) -> dict:
  """One run through launch/train.py with config.target (the row's lr, scaling rule, target
  metric on the validation split, evaluated every ``row.eval_every`` updates) on the config's
  dataset (``extra_args``: more ``--config.*`` flags, e.g. the data_dir and synthetic size); its
  time_to_target.json. The run's output goes to WORKDIR.log."""
  micro = batch // accumulate
  args = [sys.executable, os.path.join(REPO, "launch", "train.py"),
          f"--config={os.path.join(REPO, 'configs', row.name + '.py')}",
          f"--workdir={workdir}", f"--config.seed={seed}", f"--config.data.batch_size={micro}",
          f"--config.optim.accumulate_steps={accumulate}",
          f"--config.optim.noise_scale={accumulate > 1 and row.noise_scale}",
          f"--config.optim.lr={row.lr}", f"--config.optim.lr_scaling={row.scaling}",
          f"--config.optim.reference_batch={row.reference_batch}",
          f"--config.num_train_steps={row.max_updates * accumulate}",
          f"--config.eval_every_steps={row.eval_every * accumulate}",
          f"--config.log_every_steps={row.eval_every * accumulate}",
          f"--config.target.metric=eval_validation/{row.metric}",
          f"--config.target.threshold={row.threshold}", f"--config.target.mode={row.mode}",
          *extra_args]
  if row.warmup:
    args += ["--config.optim.schedule=warmup_linear", f"--config.optim.warmup_steps={row.warmup}",
             f"--config.optim.decay_steps={row.max_updates}"]
  if row.optim_name:
    args.append(f"--config.optim.name={row.optim_name}")
  os.makedirs(os.path.dirname(os.path.abspath(workdir)), exist_ok=True)
  t0 = time.perf_counter()
  with open(workdir.rstrip("/") + ".log", "w") as log:
    proc = subprocess.run(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
  if proc.returncode:
    raise RuntimeError(f"launch/train.py exited {proc.returncode} (see {workdir}.log): "
                       + " ".join(args))
  out = read_time_to_target(workdir)
  out["process_wall_s"] = time.perf_counter() - t0
  out["engine_step"] = int(out["step"])
  out["engine_examples"] = out["examples"]
  out["steps"] = int(out["step"]) // accumulate      # optimiser updates
  out["examples"] = out["steps"] * batch
  return out


def run_inline(row: Row, batch: int, seeds, accumulate: int):
  """Runs of the in-process loop (see the module docstring), one per seed; the step is compiled
  once per (row, batch) and reused across seeds (same shapes, same task)."""
  import jax  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import optim  # pylint: disable=import-outside-toplevel
  micro = batch // accumulate * row.examples_per_update
  c = row.config()
  c.data.batch_size = micro
  o = c.optim
  o.lr, o.lr_scaling = row.lr, row.scaling
  # the scaling rule's batch: per update (a GAN's per-update batch, not its n_critic slices)
  o.reference_batch = row.reference_batch * row.examples_per_update
  o.accumulate_steps = accumulate
  o.noise_scale = accumulate > 1 and row.noise_scale
  o.noise_scale_ema = 0.9
  if row.warmup:
    o.schedule, o.warmup_steps, o.decay_steps = "warmup_linear", row.warmup, row.max_updates
  if row.optim_name:
    o.name = row.optim_name
  if row.momentum >= 0:
    o.momentum = row.momentum
  task = get_task(c)
  held_out = row.stream(row.eval_size, np.random.default_rng(10_000))
  stats = row.fixed_stats(held_out) if row.fixed_stats else None

  def step_fn(state, b):
    state, _ = task.train_step(state, b)
    m = optim.optimizer_metrics(state)
    # |G|^2 and tr(Sigma) add over parameter blocks: one B_simple over all networks/modules.
    g2 = sum(v for k, v in m.items() if k.endswith("gns_g2"))
    tr = sum(v for k, v in m.items() if k.endswith("gns_trace"))
    if not m or isinstance(g2, int):
      return state, {}
    per_net = {k: v for k, v in m.items() if k.endswith("/gns_b_simple") and k.count("/") == 2}
    return state, {"optim/gns_b_simple": tr / g2, **per_net}   # per network: a GAN's g and d

  step = jax.jit(step_fn, donate_argnums=0)
  evaluate = jax.jit(row.evaluate(task) if row.evaluate else
                     (lambda s, b: task.eval_step(s, b)[row.metric]))
  better = (lambda v: v >= row.threshold) if row.mode == "max" else (lambda v: v <= row.threshold)
  compile_s = None
  for seed in seeds:
    rng = np.random.default_rng(seed)
    first = row.stream(micro, rng)
    t0 = time.perf_counter()
    state = state_lib.build_state(task, jax.random.PRNGKey(seed), first, stats)
    state, m = step(state, first)
    float(evaluate(state, held_out))
    if compile_s is None:
      compile_s = time.perf_counter() - t0   # the first seed's: compile + one step
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    updates, value, reached, b_simple = 0, float("nan"), False, float("nan")
    by_net = {}
    micro_done = 1
    while updates < row.max_updates:
      while micro_done < accumulate:
        state, m = step(state, row.stream(micro, rng))
        micro_done += 1
      updates += 1
      micro_done = 0
      if updates % row.eval_every == 0:
        value = float(evaluate(state, held_out))
        if VERBOSE:
          print(f"  {row.name} B={batch} seed={seed} update {updates}: {row.metric}={value:.4g} "
                f"B_simple={float(m.get('optim/gns_b_simple', float('nan'))):.3g}", flush=True)
        if math.isfinite(float(m.get("optim/gns_b_simple", float("nan")))):
          b_simple = float(m["optim/gns_b_simple"])
          by_net = {k.split("/")[1]: float(v) for k, v in m.items() if k.count("/") == 2}
        if better(value):
          reached = True
          break
    yield seed, {"reached": reached, "steps": updates,
                 "examples": updates * batch * row.examples_per_update,
                 "value": value, "b_simple": b_simple,
                 **({"b_simple_by_network": by_net} if len(by_net) > 1 else {}),
                 "lr": optim.effective_lr(c),
                 "train_wall_s": time.perf_counter() - t_wall,
                 "train_cpu_s": time.process_time() - t_cpu, "compile_s": compile_s}


def noise_scale_overhead(row: Row, batch: int, accumulate: int = 2, steps: int = 30) -> dict:
  """Median micro-step time with and without the noise-scale wrapper (same accumulation),
  alternating blocks of ``steps`` so that load changes hit both alike."""
  import jax  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  micro = batch // accumulate
  rng = np.random.default_rng(0)
  data = [row.stream(micro, rng) for _ in range(4)]
  fns = {}
  for on in (False, True):
    c = row.config()
    c.data.batch_size = micro
    c.optim.accumulate_steps, c.optim.noise_scale = accumulate, on
    task = get_task(c)
    state = state_lib.build_state(task, jax.random.PRNGKey(0), data[0])
    step = jax.jit(task.train_step, donate_argnums=0)
    state, _ = step(state, data[0])
    fns[on] = [step, state]
  times = {False: [], True: []}
  for _ in range(3):
    for on in (False, True):
      step, state = fns[on]
      for i in range(steps):
        t = time.perf_counter()
        state, m = step(state, data[i % 4])
        jax.block_until_ready(m)
        times[on].append(time.perf_counter() - t)
      fns[on][1] = state
  off, on = float(np.median(times[False])), float(np.median(times[True]))
  return {"model": row.name, "batch": batch, "accumulate": accumulate, "step_s_off": off,
          "step_s_on": on, "overhead": on / off - 1.0}


# ------------------------------------------------------------------ prediction --------------
PREDICT_DEVICES = ("h200", "h100", "tpu-v5p")


def predict_time_to_target(rows: List[dict], models, devices=PREDICT_DEVICES, impl="scan",
                           log=print) -> dict:
  """PREDICTED accelerator time to target: the measured median steps to target of each default
  sweep (``models``, every batch where all seeds reached it) times the step time that
  benchmarks/roofline.py predicts for that row's config (the sweep's size, float32, ``impl``)
  at the global batch run as ONE step on one device (no accumulation). The roofline is fitted
  on recorded H200 figures; its held-out predicted/measured ratios come back as
  ``calibration``."""
  from benchmarks import roofline  # pylint: disable=import-outside-toplevel
  meas = {k: roofline.count_step(*k, "gpu") for k in roofline.MEASURED_H200}
  tau = roofline.calibrate(meas)
  h200 = roofline.DEVICES["h200"]
  calib = [{"figure": " ".join(map(str, k)), "measured_ms": ms,
            "predicted_ms": roofline.predict_s(meas[k], h200, tau) * 1e3,
            "fitted": k in roofline.FIT_POINTS.values()}
           for k, ms in roofline.MEASURED_H200.items()]
  summary = summarise(rows)
  out = []
  for model in models:
    row = ROWS[model]
    for batch, steps in sorted(summary[model]["steps"].items()):
      if not math.isfinite(steps):
        continue
      n = batch * row.examples_per_update
      c = row.config()
      c.data.batch_size = n
      c.optim.accumulate_steps, c.optim.noise_scale = 1, False
      host = row.stream(n, np.random.default_rng(0))
      counts = {}
      for dname in devices:
        dev = roofline.DEVICES[dname]
        key = dev.backend if impl == "pallas" else "any"
        if key not in counts:
          counts[key] = roofline.count_step(model, "float32", n, impl, dev.backend, config=c,
                                            host=host)
        t = roofline.predict_s(counts[key], dev, roofline.device_tau(dev, tau))
        out.append({"model": model, "batch": batch, "steps": steps, "device": dname,
                    "rnn_impl": impl, "step_ms": t * 1e3, "time_to_target_s": steps * t,
                    "gflop": counts[key]["flops"] / 1e9,
                    "seq_steps": sum(counts[key]["seq"].values())})
      log(f"[predict] {model} B={batch}: " + ", ".join(
          f"{r['device']} {r['step_ms']:.3g} ms" for r in out[-len(devices):]))
  return {"tau_s": tau, "calibration": calib, "rows": out}


def prediction_table(pred: dict, devices=PREDICT_DEVICES) -> str:
  lines = ["| model | batch | measured steps | " + " | ".join(
      f"{d} step ms / time to target s" for d in devices) + " |",
           "|---|---|---|" + "---|" * len(devices)]
  groups: Dict[tuple, Dict[str, dict]] = {}
  for r in pred["rows"]:
    groups.setdefault((r["model"], r["batch"], r["steps"]), {})[r["device"]] = r
  for (model, batch, steps), by in groups.items():
    cells = [f"{by[d]['step_ms']:.3g} / {by[d]['time_to_target_s']:.3g}" for d in devices]
    lines.append(f"| {model} | {batch} | {steps:g} | " + " | ".join(cells) + " |")
  lines += ["", "| recorded H200 figure | measured ms | predicted ms | predicted/measured |",
            "|---|---|---|---|"]
  for c in pred["calibration"]:
    lines.append(f"| {c['figure']}{' (fitted)' if c['fitted'] else ''} | {c['measured_ms']:.2f}"
                 f" | {c['predicted_ms']:.2f} | {c['predicted_ms'] / c['measured_ms']:.2f} |")
  return "\n".join(lines)


# ------------------------------------------------------------------ analysis ----------------
def critical_batch(steps_by_batch: Dict[int, float], saving: float = 0.2) -> Optional[int]:
  """The largest batch B (of those measured) such that going from B/2 to B still saved at least
  ``saving`` of the steps, i.e. beyond it doubling saves less. None with < 2 batches."""
  bs = sorted(b for b, s in steps_by_batch.items() if math.isfinite(s))
  crit = bs[0] if bs else None
  for lo, hi in zip(bs, bs[1:]):
    if steps_by_batch[hi] <= (1.0 - saving) * steps_by_batch[lo]:
      crit = hi
    else:
      break
  return crit if len(bs) >= 2 else None


def variant(r: dict) -> str:
  """The row's model plus what differs from that model's default sweep (optimiser, lr at the
  reference batch, scaling rule, warmup), e.g. ``style_paper lamb lr 0.02 warmup 5``."""
  parts = [r["model"]]
  if r.get("optim", "config") != "config":
    parts.append(r["optim"])
  default = ROWS.get(r["model"])
  if default and r.get("lr_ref") not in (None, default.lr):
    parts.append(f"lr {r['lr_ref']:g}")
  if default and r.get("lr_scaling", default.scaling) != default.scaling:
    parts.append(r["lr_scaling"])
  if r.get("momentum", -1) >= 0:
    parts.append(f"momentum {r['momentum']:g}")
  if r.get("warmup"):
    parts.append(f"warmup {r['warmup']}")
  if default and r.get("accumulate", 0) not in (0, default.accumulate or 2):
    parts.append(f"accumulate {r['accumulate']}")
  return " ".join(parts)


def summarise(rows: List[dict]) -> Dict[str, dict]:
  """Per model variant (:func:`variant`): median steps per batch over reached seeds, critical
  batch, median B_simple."""
  out = {}
  for model in sorted({variant(r) for r in rows}):
    mine = [r for r in rows if variant(r) == model]
    steps = {}
    for b in sorted({r["batch"] for r in mine}):
      got = [r["steps"] for r in mine if r["batch"] == b and r["reached"]]
      steps[b] = float(np.median(got)) if len(got) == len([r for r in mine if r["batch"] == b]) \
          else float("nan")   # a batch counts only when every seed reached the target
    bsim = [r["b_simple"] for r in mine if math.isfinite(r.get("b_simple", float("nan")))]
    crit = critical_batch(steps)
    measured = sorted(b for b, v in steps.items() if math.isfinite(v))
    out[model] = {"steps": steps, "critical_batch": crit,
                  # False: every measured doubling saved >= 20%, the critical batch is larger
                  "critical_bounded": crit is not None and crit != measured[-1],
                  "b_simple_median": float(np.median(bsim)) if bsim else float("nan")}
  return out


def plot(rows: List[dict], summary: Dict[str, dict], path: str):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  models = list(summary)
  cols = min(3, len(models))
  nrows = -(-len(models) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 4 * nrows), squeeze=False)
  for ax in axes.flat[len(models):]:
    ax.set_visible(False)
  for ax, model in zip(axes.flat, models):
    mine = [r for r in rows if variant(r) == model]
    for r in mine:
      ax.scatter(r["batch"], r["steps"], c="C0" if r["reached"] else "C3", s=14,
                 marker="o" if r["reached"] else "x")
    st = {b: s for b, s in summary[model]["steps"].items() if math.isfinite(s)}
    if st:
      bs = sorted(st)
      ax.plot(bs, [st[b] for b in bs], "C0-", label="median steps to target")
      ax.plot(bs, [st[bs[0]] * bs[0] / b for b in bs], "k--", lw=1, label="perfect scaling")
    crit = summary[model]["critical_batch"]
    if crit:
      ax.axvline(crit, color="C2", ls=":", label=f"critical batch "
                 f"{'' if summary[model]['critical_bounded'] else '>= '}{crit}")
    bsim = summary[model]["b_simple_median"]
    if math.isfinite(bsim) and bsim > 0:
      ax.axvline(bsim, color="C1", ls="-.", label=f"B_simple {bsim:.0f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("global batch")
    ax.set_ylabel("optimiser steps to target")
    ax.set_title(model, fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, path)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", default="style_paper,music_style,d2m_decomposition")
  p.add_argument("--batches", default="32,64,128,256,512,1024")
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--accumulate", type=int, default=0,
                 help="micro-batches per update (>= 2 measures the noise scale); 0: the row's "
                 "(2; the sequence WGAN 1)")
  p.add_argument("--runner", choices=("inline", "engine"), default="inline")
  p.add_argument("--engine_args", default="", help="engine runner: more launch/train.py flags, "
                 "space-separated (e.g. --config.data.data_dir=DIR)")
  p.add_argument("--workdir", default="/tmp/batch_scaling")
  p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                "batch_scaling.jsonl"))
  p.add_argument("--plot", default=None, help="PNG (default: --out with .png)")
  p.add_argument("--scaling", default=None, help="override the rows' lr_scaling (none|linear|sqrt)")
  p.add_argument("--warmup", type=int, default=0, help="warmup_linear over this many updates "
                 "(then linear decay to 0 at the row's max_updates); 0: constant lr")
  p.add_argument("--eval_every", type=int, default=0, help="evaluate the target every this many "
                 "updates (0: the row's); the step count's resolution")
  p.add_argument("--optim", default="", help="override the rows' optimiser (adam|adamw|lamb|"
                 "lars|sgd; the row's weight decay is kept where the optimiser has one)")
  p.add_argument("--lr", type=float, default=0.0, help="override the rows' lr at the reference "
                 "batch (0: the row's)")
  p.add_argument("--momentum", type=float, default=-1.0, help="optim.momentum (sgd, lars)")
  p.add_argument("--predict", default="", help="models (comma-separated): print the PREDICTED "
                 "accelerator time to target from --out's measured steps and the roofline "
                 "(benchmarks/roofline.py), write it to --predict_json; runs nothing else")
  p.add_argument("--predict_json", default=None)
  p.add_argument("--predict_impl", default="scan", help="rnn_impl for the prediction")
  p.add_argument("--summarise_only", action="store_true", help="re-plot --out, run nothing")
  p.add_argument("--overhead", action="store_true",
                 help="time the noise-scale wrapper at each --batches for each row, then exit")
  a = p.parse_args(argv)
  for name in a.rows.split(","):
    if name not in ROWS:
      sys.exit(f"--rows: unknown row {name!r} (known: {', '.join(ROWS)})")
  if a.predict:
    with open(a.out) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    pred = predict_time_to_target(rows, a.predict.split(","), impl=a.predict_impl)
    pred["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    print(prediction_table(pred))
    if a.predict_json:
      tmp = a.predict_json + ".tmp"
      with open(tmp, "w") as f:
        json.dump(pred, f, indent=1, default=float)
      os.replace(tmp, a.predict_json)
    return
  if a.overhead:
    for name in a.rows.split(","):
      for batch in [int(b) for b in a.batches.split(",")]:
        print(json.dumps(noise_scale_overhead(ROWS[name], batch, max(a.accumulate or 2, 2))),
              flush=True)
    return
  if not a.summarise_only:
    import jax  # pylint: disable=import-outside-toplevel
    date = time.strftime("%Y-%m-%d", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True, check=False).stdout.strip() or "unknown"
    for name in a.rows.split(","):
      row = ROWS[name]
      if a.scaling:
        row = dataclasses.replace(row, scaling=a.scaling)
      row = dataclasses.replace(row, warmup=a.warmup)
      if a.optim:
        row = dataclasses.replace(row, optim_name=a.optim)
      if a.lr:
        row = dataclasses.replace(row, lr=a.lr)
      if a.momentum >= 0:
        row = dataclasses.replace(row, momentum=a.momentum)
      if a.eval_every:
        row = dataclasses.replace(row, eval_every=a.eval_every)
      acc = a.accumulate or row.accumulate or 2
      for batch in [int(b) for b in a.batches.split(",")]:
        seeds = [int(s) for s in a.seeds.split(",")]
        if a.runner == "engine":
          runs = ((seed, run_engine(row, batch, seed,
                                    os.path.join(a.workdir, f"{name}_{batch}_{seed}"),
                                    acc, a.engine_args.split())) for seed in seeds)
        else:
          runs = run_inline(row, batch, seeds, acc)
        for seed, res in runs:
          rec = {"model": name, "batch": batch, "seed": seed, "accumulate": acc,
                 "lr_scaling": row.scaling, "warmup": row.warmup,
                 "optim": row.optim_name or "config", "lr_ref": row.lr, "commit": commit,
                 **({"momentum": row.momentum} if row.momentum >= 0 else {}),
                 "runner": a.runner, "target": f"{row.metric} {row.mode} {row.threshold}",
                 "eval_every": row.eval_every,
                 "stream": row.stream_doc if a.runner == "inline" else
                 f"engine data: {a.engine_args or 'the config default'}",
                 "device": jax.devices()[0].device_kind, "date": date, **res}
          print(json.dumps(rec), flush=True)
          with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
  with open(a.out) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  summary = summarise(rows)
  for model, s in summary.items():
    print(f"{model}: steps {s['steps']} critical batch "
          f"{'' if s['critical_bounded'] else '>= '}{s['critical_batch']} "
          f"B_simple (median) {s['b_simple_median']:.1f}")
  plot(rows, summary, a.plot or os.path.splitext(a.out)[0] + ".png")


if __name__ == "__main__":
  main()
