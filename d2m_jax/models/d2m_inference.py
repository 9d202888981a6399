"""Dancing2Music inference: music -> a dance exactly as long as the music (spec §3, fixed).

Pipeline (:func:`generate`, reached through ``CompositionTask.generate`` by ``launch/generate.py``):

1. ``d2m28`` frame features (num_frames, 28) at the motion fps (the style extractor z-scores
   them with its own training stats, kept in the checkpoint);
2. style: the frozen extractor sees windows of exactly its trained input length
   (``style.input_frames``); ``gen_style_mode="mean"`` averages them into ONE style vector for
   the song (the original used one vector, but from the whole song in one go);
   ``"sliding"`` gives each ``gen_style_window_s`` seconds of music its own vector;
3. units: for each triplet, a fresh z_dance ~ audstyle_enc(style, noise) -> dance_dec -> 3
   movement codes -> stdp_dec; each unit starts from the previous unit's last frame (through
   ``initp_enc``), the first from the facing-normalised mean pose (:func:`initial_pose`); a
   triplet with a static unit
   (mean |x_{t+1} - x_t| < ``gen_static_thr`` in normalised units) is rejected: all
   ``gen_max_tries`` candidates are drawn at once (or ``gen_tries_per_call`` at a time, until
   every sample has a moving one; optional config field, 0 / absent = all at once) and each
   sample keeps its first moving candidate (if none moves: counted, logged and returned in
   ``task.last_generation_report``, and ``model.gen_static_fallback`` says which is kept:
   ``first``, candidate 0, the paper's; ``least_static``, the one whose least-moving unit moves
   most); the threshold is fixed or a percentile of the
   train units' motion stored with the checkpoint (:func:`static_threshold`);
4. beat warping: the units are beat-normalised (beats on frames 3, 11, 19, 27), so standard
   frame ``3 + 8k`` is mapped onto music beat frame ``b_k`` (frames, not seconds -- the
   original's ``--modulate`` passed seconds and had a broken branch for long intervals) by a
   piecewise-linear time map, extrapolated before the first and after the last beat with the
   median beat interval; poses are linearly interpolated at the mapped times;
5. exactly ``num_frames`` frames (the original produced ~3x too many), de-normalised, reshaped
   to (num_samples, num_frames, J, C).

Deterministic given ``rng``. Any length, one device call per song: a jitted ``lax.scan`` over
the triplets (carrying the last pose; the per-triplet style vectors are its scanned input) whose
step draws the K = ``gen_max_tries`` candidates of a triplet in one vmapped batch of K*N and picks
per sample with :func:`choose_candidates` on device. The scan length is bucketed
(:func:`num_triplets_bucket`: powers of two from 8), so songs of different lengths reuse the
compiled code; the padded triplets skip the networks (``lax.cond``) and are dropped.

Change from the earlier sequential version (a Python loop over triplets and over redraw
attempts, one host sync per attempt): the random draws and the choice are the same -- triplet
j's attempt k uses ``fold_in(fold_in(rng, j), k)``, the first moving attempt is kept, else
attempt 0 -- so the dances match it up to float rounding of the batched matmuls; only the cost
changed: all K candidates are always computed (on CPU a batch of K*N costs little more than N,
as the recurrent matmuls are bound by reading the weights), and no early exit.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax import executable_cache
from d2m_jax.models import d2m_common as common
from d2m_jax.models.d2m_layers import reparameterize

UNIT_BEAT_OFFSET = 3   # first beat frame of a standardised unit
BEAT_SPACING = 8       # standardised frames per beat
STYLE_CHUNK = 16       # style windows per extractor call (fixed shape: one compile)


def clean_beats(beats, num_frames: int) -> np.ndarray:
  """Sorted unique integer beat frames inside [0, num_frames)."""
  b = np.unique(np.round(np.asarray(beats, np.float64).reshape(-1)).astype(np.int64))
  return b[(b >= 0) & (b < num_frames)]


def standard_times(beats, num_frames: int, fps: float = 25.0, default_bpm: float = 120.0
                   ) -> np.ndarray:
  """Time map: output frame t -> position s(t) in the concatenated standardised units.

  Music beat k (frame ``b_k``) maps to standard frame ``3 + 8 (k + k0)``, where ``k0 >= 0``
  is the smallest shift keeping s(0) >= 0. With fewer than two beats the tempo is
  ``default_bpm`` (a single beat still lands on a unit beat).
  """
  b = clean_beats(beats, num_frames)
  t = np.arange(num_frames, dtype=np.float64)
  if len(b) >= 2:
    interval = float(np.median(np.diff(b)))
    slope = BEAT_SPACING / interval
    std_b = UNIT_BEAT_OFFSET + BEAT_SPACING * np.arange(len(b), dtype=np.float64)
    s = np.interp(t, b, std_b)
    s = np.where(t < b[0], std_b[0] - (b[0] - t) * slope, s)
    s = np.where(t > b[-1], std_b[-1] + (t - b[-1]) * slope, s)
  else:
    slope = BEAT_SPACING / (fps * 60.0 / default_bpm)
    anchor = float(b[0]) if len(b) else 0.0
    s = UNIT_BEAT_OFFSET + (t - anchor) * slope
  if s[0] < 0:
    s = s + BEAT_SPACING * math.ceil(-s[0] / BEAT_SPACING)
  return s


def beat_warp(seq: np.ndarray, times: np.ndarray) -> np.ndarray:
  """Linear interpolation of ``seq`` (..., S, P) at fractional frame positions ``times`` (T,)."""
  S = seq.shape[-2]
  if times.max() > S - 1:
    raise ValueError(f"beat_warp: needs {times.max():.1f} standard frames, got {S}")
  lo = np.floor(times).astype(np.int64)
  hi = np.minimum(lo + 1, S - 1)
  w = (times - lo)[:, None]
  return seq[..., lo, :] * (1.0 - w) + seq[..., hi, :] * w


def style_windows(aud: np.ndarray, length: int, hop: Optional[int] = None) -> np.ndarray:
  """Windows (n, length, D) of exactly ``length`` frames covering ``aud`` (T, D).

  A song shorter than ``length`` is repeated to fill one window (the extractor always sees its
  trained input length).
  """
  T = aud.shape[0]
  if T == 0:
    raise ValueError("generate: empty audio features")
  if T < length:
    aud = np.tile(aud, (math.ceil(length / T), 1))[:length]
    T = length
  hop = hop or length
  starts = list(range(0, T - length + 1, hop))
  if starts[-1] != T - length:
    starts.append(T - length)
  return np.stack([aud[s:s + length] for s in starts]), np.asarray(starts)


def _style_fn(task):
  fn = task.__dict__.get("_d2m_style_fn")
  if fn is None:
    fn = jax.jit(lambda params, w: task.style.apply(params, w))
    task._d2m_style_fn = fn
  return fn


def _triplet_body(task):
  """(params, frozen, style (N,S), init pose (N,P), key) -> units (N, 3, T, P) normalised.

  One attempt: a fresh z_dance, its 3 movement codes, 3 units chained through their last frame.
  Not jitted (traced inside :func:`_song_fn`); tests may replace it via
  ``task.__dict__["_d2m_triplet_body"]`` (and then clear ``task.__dict__["_d2m_song_fns"]``).
  """
  fn = task.__dict__.get("_d2m_triplet_body")
  if fn is not None:
    return fn
  m = task.m

  def triplet(params, frozen, style, initpose, key):
    k_noise, k_zd, k_zm, k_init = jax.random.split(key, 4)
    noise = jax.random.normal(k_noise, (style.shape[0], m.noise_dim))
    mu, lv = task.nets["audstyle_enc"].apply({"params": params["audstyle_enc"]}, style, noise)
    z_dance = reparameterize(k_zd, mu, lv)
    mu_r, lv_r = task.nets["dance_dec"].apply({"params": params["dance_dec"]}, z_dance)
    z_mov = reparameterize(k_zm, mu_r, lv_r)
    units = []
    for i, k in enumerate(jax.random.split(k_init, 3)):
      mu_i, lv_i = task.stage1["initp_enc"].apply({"params": frozen["initp_enc"]}, initpose)
      z_init = reparameterize(k, mu_i, lv_i)
      unit = task.nets["stdp_dec"].apply({"params": params["stdp_dec"]}, z_init, z_mov[:, i])
      units.append(unit)
      initpose = unit[:, -1]
    return jnp.stack(units, axis=1)

  return triplet


def static_threshold(model_cfg, stats) -> tuple[float, str]:
  """The static-unit threshold (mean |x_{t+1} - x_t| per dim and frame, normalised units) and
  where it came from: ``model.gen_static_percentile`` > 0 takes that percentile of the train
  units' motion stored with the checkpoint (``stats['unit_motion_pct']``); otherwise (or for a
  checkpoint without it) the fixed ``model.gen_static_thr`` (the paper's 0.0577)."""
  pct = float(model_cfg.get("gen_static_percentile", 0.0) or 0.0)
  table = np.asarray(stats.get("unit_motion_pct", np.zeros(101)), np.float64)
  if pct > 0:
    if table.shape == (101,) and table.max() > 0:
      return float(np.interp(pct, np.arange(101), table)), f"p{pct:g} of the train units"
    logging.warning("generate: model.gen_static_percentile=%g but the checkpoint has no unit "
                    "motion percentiles (older data version): using gen_static_thr=%g", pct,
                    float(model_cfg.gen_static_thr))
  return float(model_cfg.gen_static_thr), "gen_static_thr"


def initial_pose(model_cfg, stats) -> np.ndarray:
  """The first frame, normalised (P,): ``model.gen_init_pose='facing_mean'`` (default) is the
  facing-normalised mean pose of the train split (``stats['pose_init']``; equal to the plain
  mean for 2-D data, whose facing is fixed); ``'mean'`` is the plain mean pose (zeros)."""
  mode = str(model_cfg.get("gen_init_pose", "facing_mean"))
  mean = np.asarray(stats["pose_mean"], np.float64)
  if mode == "mean":
    return np.zeros_like(mean)
  if mode != "facing_mean":
    raise ValueError(f"config.model.gen_init_pose={mode!r}: expected facing_mean|mean")
  init = np.asarray(stats.get("pose_init", mean), np.float64)
  return (init - mean) / np.asarray(stats["pose_std"], np.float64)


def triplet_motion(units):
  """Per-unit motion sum_t,p |x_{t+1} - x_t| of units (..., 3, T, P) -> (..., 3)."""
  return jnp.abs(jnp.diff(units, axis=-2)).sum(axis=(-2, -1))


STATIC_FALLBACKS = ("first", "least_static")


def choose_candidates(units, thr, fallback: str = "first"):
  """Per sample, the first of K candidate triplets whose 3 units all move at least ``thr``.

  ``units`` (K, N, 3, T, P). A sample with no moving candidate keeps, with ``fallback="first"``,
  candidate 0 (as the sequential redraw loop kept its first draw: the paper's behaviour), with
  ``"least_static"`` the candidate whose least-moving unit moves most (the nearest to passing
  the rejection test). Returns (chosen (N, 3, T, P), index (N,) int32).
  """
  if fallback not in STATIC_FALLBACKS:
    raise ValueError(f"model.gen_static_fallback={fallback!r}: expected one of {STATIC_FALLBACKS}")
  motion = triplet_motion(units)                             # (K, N, 3)
  ok = (motion >= thr).all(axis=-1)                          # (K, N)
  idx = jnp.argmax(ok, axis=0).astype(jnp.int32)             # first True; 0 when none
  if fallback == "least_static":
    best = jnp.argmax(motion.min(axis=-1), axis=0).astype(jnp.int32)
    idx = jnp.where(ok.any(axis=0), idx, best)
  chosen = jnp.take_along_axis(units, idx[None, :, None, None, None], axis=0)[0]
  return chosen, idx


def num_triplets_bucket(n: int, minimum: int = 8) -> int:
  """Scan length for ``n`` triplets: the next power of two >= ``minimum`` (few compiles)."""
  b = minimum
  while b < n:
    b *= 2
  return b


# Python-side trace counts of the song function (incremented only while jax traces it).
TRACE_COUNTS = {"song": 0}


def _song_fn(task, num_tries: int, per_call: int = 0, fallback: str = "first"):
  """Jitted whole-song generator for ``num_tries`` candidates per triplet.

  (params, frozen, styles (B, S), init pose (N, P), rng key, thr, num_valid) -> units
  (B, N, 3, T, P): one ``lax.scan`` over B (bucketed) triplets carrying the last pose; triplet
  j < num_valid draws its K candidates with keys ``fold_in(fold_in(rng, j), k)`` in vmapped
  batches of ``per_call`` * N (0: all K in ONE batch) and keeps the first moving one
  (:func:`choose_candidates`, with its ``fallback`` when none moves); with ``per_call < K`` a ``lax.while_loop`` stops drawing once
  every sample has one (same result, less compute when most first draws move). Padded
  triplets skip the networks (``lax.cond``) and give zeros.
  """
  K = int(num_tries)
  C = K if per_call <= 0 else min(int(per_call), K)
  cache = task.__dict__.setdefault("_d2m_song_fns", {})
  fn = cache.get((K, C, fallback))
  if fn is not None:
    return fn
  triplet = _triplet_body(task)
  n_chunks = math.ceil(K / C)

  def song(params, frozen, styles, initpose, rng, thr, num_valid):
    TRACE_COUNTS["song"] += 1
    N = initpose.shape[0]

    def draw_chunk(pose, key_j, style, c):
      """Candidates c*C .. c*C+C-1: (first moving one, else the chunk's fallback (N,3,T,P),
      found (N,), the chosen triplet's least unit motion (N,))."""
      attempts = c * C + jnp.arange(C)
      keys = jax.vmap(lambda a: jax.random.fold_in(key_j, a))(attempts)
      units = jax.vmap(triplet, in_axes=(None, None, None, None, 0))(
          params, frozen, style, pose, keys)                  # (C, N, 3, T, P)
      # attempts past K (last chunk when C does not divide K) never count as moving
      units_ok = jnp.where((attempts < K)[:, None, None, None, None], units, 0.0)
      chosen, _ = choose_candidates(units_ok, thr, fallback)   # ("first": chunk 0's attempt 0)
      found = (triplet_motion(units_ok) >= thr).all(-1).any(0)
      return chosen, found, triplet_motion(chosen).min(-1)

    def draw(pose, j, style):
      key_j = jax.random.fold_in(rng, j)
      style = jnp.broadcast_to(style, (N, style.shape[-1]))
      chosen, found, score = draw_chunk(pose, key_j, style, 0)
      if n_chunks == 1:
        return chosen, found

      def more(carry):
        c, chosen, found, score = carry
        new, new_found, new_score = draw_chunk(pose, key_j, style, c)
        take = new_found & ~found
        if fallback == "least_static":   # none moved yet: keep the nearest to moving
          take = take | (~found & ~new_found & (new_score > score))
        return (c + 1, jnp.where(take[:, None, None, None], new, chosen), found | new_found,
                jnp.where(take, new_score, score))

      _, chosen, found, _ = jax.lax.while_loop(
          lambda carry: (carry[0] < n_chunks) & ~carry[2].all(), more,
          (jnp.int32(1), chosen, found, score))
      return chosen, found

    def step(pose, xs):
      j, style = xs
      # padded triplets (j >= num_valid) skip the networks: the bucket costs no compute
      chosen, found = jax.lax.cond(
          j < num_valid, draw,
          lambda p, j, s: (jnp.zeros((N, 3, task.m.unit_length, p.shape[-1]), p.dtype),
                           jnp.ones((N,), bool)),
          pose, j, style)
      return chosen[:, -1, -1], (chosen, found)

    _, out = jax.lax.scan(step, initpose, (jnp.arange(styles.shape[0]), styles))
    return out      # (units (B, N, 3, T, P), found (B, N): a moving candidate existed)

  fn = jax.jit(song)
  cache[(K, C, fallback)] = fn
  return fn


def _program_key(task) -> str:
  """What, beside the arguments' shapes, decides the traced generator: the task's config (and
  a test's replacement triplet body, which never meets an enabled executable cache)."""
  cfg = getattr(task, "config", None)
  body = task.__dict__.get("_d2m_triplet_body")
  return (cfg.to_json() if hasattr(cfg, "to_json") else repr(cfg)) + (repr(body) if body else "")


def song_styles(task, state, aud: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
  """Style vectors: (1, S) for mode 'mean', (n_windows, S) + window frame length for 'sliding'."""
  m = task.m
  L = task.style.input_frames
  wins, starts = style_windows(aud, L)
  fn = _style_fn(task)
  out = []
  for i in range(0, len(wins), STYLE_CHUNK):
    chunk = wins[i:i + STYLE_CHUNK]
    n = len(chunk)
    if n < STYLE_CHUNK:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], STYLE_CHUNK - n, 0)])
    out.append(np.asarray(executable_cache.call(
        "d2m_style", fn, (state.frozen["style"], jnp.asarray(chunk, jnp.float32)),
        key=_program_key(task)))[:n])
  per_window = np.concatenate(out)
  if m.gen_style_mode == "mean":
    return per_window.mean(0, keepdims=True), None
  if m.gen_style_mode != "sliding":
    raise ValueError(f"config.model.gen_style_mode={m.gen_style_mode!r}: expected mean|sliding")
  W = max(L, int(round(m.gen_style_window_s * fps)))
  n_seg = max(1, math.ceil(num_frames / W))
  centres = starts + L / 2.0
  segs = []
  for j in range(n_seg):
    sel = (centres >= j * W) & (centres < (j + 1) * W)
    segs.append(per_window[sel].mean(0) if sel.any() else
                per_window[np.argmin(np.abs(centres - (j + 0.5) * W))])
  return np.stack(segs), W


def generate(task, state, feats: Dict[str, np.ndarray], beats, num_frames: int, rng,
             num_samples: int = 1, fps: Optional[float] = None) -> np.ndarray:
  """Dances (num_samples, num_frames, J, C) float32 in data units; see the module docstring."""
  m = task.m
  num_frames = int(num_frames)
  if num_frames <= 0:
    raise ValueError(f"generate: num_frames={num_frames} must be positive")
  if common.AUDIO_FEATURE not in feats:
    raise ValueError(f"generate: needs feats[{common.AUDIO_FEATURE!r}] (got {sorted(feats)})")
  aud = np.asarray(feats[common.AUDIO_FEATURE], np.float32)
  if aud.ndim != 2 or aud.shape[1] != 28:
    raise ValueError(f"generate: feats['d2m28'] has shape {aud.shape}, expected (T, 28)")
  fps = float(fps or task.fps or m.get("fps", 25.0))
  st = jax.device_get(state.stats)
  styles, seg_frames = song_styles(task, state, aud, num_frames, fps)

  times = standard_times(beats, num_frames, fps)
  T, P = m.unit_length, m.pose_size
  n_trip = math.ceil((math.floor(times.max()) + 2) / (3 * T))
  thr_unit, thr_source = static_threshold(m, st)
  thr = thr_unit * (T - 1) * P
  N = int(num_samples)
  if seg_frames is None:
    idx = np.zeros(n_trip, np.int64)
  else:  # the window holding each triplet's middle beat, in output time
    mid_std = (np.arange(n_trip) * 3 + 1.5) * T
    t_mid = np.interp(mid_std, times, np.arange(num_frames))
    idx = np.minimum((t_mid // seg_frames).astype(np.int64), len(styles) - 1)
  B = num_triplets_bucket(n_trip)
  idx = np.concatenate([idx, np.full(B - n_trip, idx[-1])])  # padding: skipped, dropped
  trip_styles = jnp.asarray(styles[idx], jnp.float32)       # (B, S)
  rng = jax.random.key(rng) if isinstance(rng, (int, np.integer)) else rng
  fallback = str(m.get("gen_static_fallback", "first"))
  fn = _song_fn(task, max(1, int(m.gen_max_tries)), int(m.get("gen_tries_per_call", 0)), fallback)
  init = jnp.broadcast_to(jnp.asarray(initial_pose(m, st), jnp.float32), (N, P))
  units, found = executable_cache.call(
      "d2m_song", fn, (state.params, state.frozen, trip_styles, init, rng, jnp.float32(thr),
                       jnp.int32(n_trip)), key=_program_key(task))
  units = np.asarray(units[:n_trip])                         # (n_trip, N, 3, T, P)
  static = int((~np.asarray(found[:n_trip])).sum())
  report = dict(triplets=n_trip * N, static_triplets=static, static_thr=thr_unit,
                static_thr_source=thr_source, max_tries=int(m.gen_max_tries),
                static_fallback=fallback, init_pose=str(m.get("gen_init_pose", "facing_mean")))
  task.last_generation_report = report
  if static:
    logging.warning("generate: %d of %d triplets had no moving candidate among %d (static "
                    "threshold %.4g, %s); kept: %s", static, n_trip * N, int(m.gen_max_tries),
                    thr_unit, thr_source,
                    "the first" if fallback == "first" else "the least static")
  seq = units.transpose(1, 0, 2, 3, 4).reshape(N, n_trip * 3 * T, P)
  out = beat_warp(seq, times)
  out = out * st["pose_std"] + st["pose_mean"]
  C = common.joint_dims(m)
  return out.reshape(N, num_frames, P // C, C).astype(np.float32)
