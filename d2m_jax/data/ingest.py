"""Ingestion: raw source -> processed sequences (features, beats, 16 kHz audio) + manifest + stats.

``ingest(...)`` reads every sequence of a source, computes all frame features once, assigns
splits by sequence and computes train-split statistics. Output (``processed_dir``)::

  manifest.json   source, skeleton, dims, fps, styles, splits, per-sequence facts, skipped
  stats.npz       load_stats() arrays (train split only)
  seq/<name>.npz  one processed sequence (see process_sequence)

It is written to a temporary sibling folder and moved into place at the end, so an interrupted
or failed run leaves no half-written output. ``on_error='skip'`` records every skipped sequence
and why in the manifest (and the returned report).
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import time
from typing import Callable

import numpy as np

from d2m_jax.data import examples as ex_lib
from d2m_jax.data import features as feat_lib
from d2m_jax.data import readers, skeleton
from d2m_jax.data.errors import DataError

PROCESSED_VERSION = 1
SOURCES = ("synthetic", "music_to_dance", "openpose")


def process_sequence(seq: readers.Sequence) -> dict:
  """Features (one row per motion frame), beats and int16 16 kHz audio of one sequence."""
  t = seq.num_frames
  out = dict(name=seq.name, style=np.int32(seq.style), fps=np.float32(seq.fps),
             skeleton=seq.skeleton, has_audio=np.int32(seq.has_audio),
             pose=np.asarray(seq.pose, np.float32), root=np.asarray(seq.root, np.float32))
  if seq.has_audio:
    feats, beats, tempo = feat_lib.compute_all(seq.wave, seq.sr, seq.fps, t)
    if beats.shape[0] < 2:
      raise DataError(seq.meta.get("audio_file") or seq.name,
                      "no music beats found (silent or beatless audio)")
    wav = feats.pop("waveform16k")
    out["waveform16k"] = (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)
    out.update(feats)
  else:
    beats, tempo = np.zeros((0,), np.int64), 0.0
    out["waveform16k"] = np.zeros((0,), np.int16)
    for name, dim in feat_lib.FEATURE_DIMS.items():
      out[name] = np.zeros((t, dim), np.float32)
  out["beats"] = beats.astype(np.int32)
  out["tempo"] = np.float32(tempo)
  return out


def save_npz(path: str, arrays: dict):
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_processed(path: str) -> dict:
  with np.load(path, allow_pickle=False) as z:
    d = {k: z[k] for k in z.files}
  for k in ("name", "skeleton"):
    d[k] = str(d[k])
  return d


def list_items(source: str, raw_dir: str) -> list[str]:
  if source in ("synthetic", "music_to_dance"):
    return readers.list_mocap_sequences(raw_dir)
  if source == "openpose":
    if not os.path.isdir(raw_dir):
      raise DataError(raw_dir, "raw data folder not found")
    items = sorted(os.path.join(raw_dir, d) for d in os.listdir(raw_dir)
                   if os.path.isdir(os.path.join(raw_dir, d)))
    if not items:
      raise DataError(raw_dir, "no sequence folders of OpenPose JSON files")
    return items
  raise ValueError(f"unknown source {source!r}; known: {SOURCES}")


def openpose_styles(items: list[str]) -> list[str]:
  """OpenPose style vocabulary: the folder-name prefixes before the first '_', sorted."""
  return sorted({os.path.basename(p).split("_")[0] for p in items})


def _work(args) -> tuple[str, dict | None, dict | None]:
  """Reads and processes one item; returns (item, processed arrays or None, skip record)."""
  source, item, opts = args
  try:
    if source == "openpose":
      style = opts["styles"].index(os.path.basename(item).split("_")[0])
      seq = readers.read_openpose_folder(item, fps=opts.get("fps", 30.0), style=style)
    else:
      seq = readers.read_mocap_sequence(item)
    arrays = process_sequence(seq)
    meta = {k: v for k, v in seq.meta.items() if isinstance(v, (int, float, str, bool))}
    return item, arrays, {"meta": meta}
  except DataError as e:
    return item, None, {"name": os.path.basename(item), "path": e.path, "problem": e.problem}


def ingest(source: str, raw_dir: str, processed_dir: str, *, on_error: str = "fail",
           num_workers: int = 1, split_seed: int = 0, openpose_fps: float = 30.0,
           log: Callable[[str], None] = print) -> dict:
  """Processes a raw source into ``processed_dir`` (atomically). Returns the manifest."""
  if on_error not in ("fail", "skip"):
    raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
  items = list_items(source, raw_dir)
  opts = {"fps": openpose_fps}
  styles = list(skeleton.STYLES)
  if source == "openpose":
    styles = opts["styles"] = openpose_styles(items)
  parent = os.path.dirname(os.path.abspath(processed_dir))
  os.makedirs(parent, exist_ok=True)
  tmp_dir = f"{os.path.abspath(processed_dir)}.tmp{os.getpid()}"
  shutil.rmtree(tmp_dir, ignore_errors=True)
  os.makedirs(os.path.join(tmp_dir, "seq"))
  t0 = time.time()
  records, skipped = [], []
  try:
    jobs = [(source, it, opts) for it in items]
    if num_workers > 1:
      ctx = multiprocessing.get_context("spawn")
      pool = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx)
      results = pool.map(_work, jobs)
    else:
      pool, results = None, map(_work, jobs)
    try:
      for i, (item, arrays, info) in enumerate(results):
        name = os.path.basename(item)
        if arrays is None:
          if on_error == "fail":
            raise DataError(info["path"], info["problem"])
          skipped.append(info)
          log(f"[{i + 1}/{len(items)}] SKIPPED {name}: {info['path']}: {info['problem']}")
          continue
        save_npz(os.path.join(tmp_dir, "seq", f"{name}.npz"), arrays)
        rec = dict(info["meta"])
        rec.update(name=name, style=int(arrays["style"]), frames=int(arrays["pose"].shape[0]),
                   has_audio=bool(arrays["has_audio"]), tempo=float(arrays["tempo"]),
                   beats=int(arrays["beats"].shape[0]))
        records.append(rec)
        tempo_txt = f", {rec['tempo']:.1f} BPM" if rec["has_audio"] else ""
        if "filled_joints" in rec:   # OpenPose: low-confidence joints / empty frames filled
          tempo_txt += (f", filled {rec['filled_joints']} joint values "
                        f"({100 * rec['fill_fraction']:.1f} %), {rec['empty_frames']} empty frames")
        log(f"[{i + 1}/{len(items)}] {name}: {rec['frames']} frames"
            f"{'' if rec['has_audio'] else ' (motion only, no audio)'}"
            f"{tempo_txt}"
            f" ({time.time() - t0:.1f} s)")
    finally:
      if pool is not None:
        pool.shutdown(cancel_futures=True)
    if not records:
      raise DataError(raw_dir, "no usable sequence" + (f" ({len(skipped)} skipped)" if skipped
                                                       else ""))
    split_of = ex_lib.assign_splits([r["name"] for r in records],
                                    [r["style"] for r in records], seed=split_seed)
    for r in records:
      r["split"] = split_of[r["name"]]
    first = load_processed(os.path.join(tmp_dir, "seq", f"{records[0]['name']}.npz"))
    train = [load_processed(os.path.join(tmp_dir, "seq", f"{r['name']}.npz"))
             for r in records if r["split"] == "train"]
    stats = ex_lib.compute_stats(train)
    np.savez(os.path.join(tmp_dir, "stats.npz"), **stats)
    j, c = first["pose"].shape[1:]
    manifest = dict(version=PROCESSED_VERSION, source=source, raw_dir=os.path.abspath(raw_dir),
                    skeleton=first["skeleton"], joints=int(j), dims=int(c), pose_dim=int(j * c),
                    fps=float(first["fps"]), styles=styles,
                    feature_dims=dict(feat_lib.FEATURE_DIMS), sequences=records, skipped=skipped,
                    seconds=round(time.time() - t0, 2))
    with open(os.path.join(tmp_dir, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=1)
    old = f"{os.path.abspath(processed_dir)}.old{os.getpid()}"
    if os.path.exists(processed_dir):
      os.replace(processed_dir, old)
    os.replace(tmp_dir, processed_dir)
    shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  n_split = {s: sum(r["split"] == s for r in records) for s in ex_lib.SPLITS}
  log(f"processed {len(records)} sequences ({n_split}) in {manifest['seconds']:.1f} s; "
      f"skipped {len(skipped)}")
  return manifest


def read_manifest(processed_dir: str) -> dict:
  path = os.path.join(processed_dir, "manifest.json")
  if not os.path.exists(path):
    raise DataError(processed_dir, "not a processed dataset (no manifest.json): run "
                    "launch/preprocess.py first")
  with open(path) as f:
    return json.load(f)


def split_sequences(processed_dir: str, split: str) -> list[dict]:
  man = read_manifest(processed_dir)
  return [load_processed(os.path.join(processed_dir, "seq", f"{r['name']}.npz"))
          for r in man["sequences"] if r["split"] == split]
