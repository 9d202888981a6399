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
import faulthandler
import json
import multiprocessing
import os
import shutil
import signal
import time
from typing import Callable

import numpy as np

from d2m_jax import files
from d2m_jax.data import examples as ex_lib
from d2m_jax.data import features as feat_lib
from d2m_jax.data import numba_cache, readers, skeleton
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
  files.save_npz(path, **arrays)


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


_STATUS_DIR = None     # set in pool workers: where each writes the item it is processing
_FAULT_FILE = None


def _init_worker(status_dir: str):
  """Pool worker start: a crash report (faulthandler) to a file the parent reads if we die."""
  global _STATUS_DIR, _FAULT_FILE
  _STATUS_DIR = status_dir
  _FAULT_FILE = open(os.path.join(status_dir, f"{os.getpid()}.fault"), "w")
  faulthandler.enable(file=_FAULT_FILE)


def _work(args) -> tuple[str, dict | None, dict | None]:
  """Reads and processes one item; returns (item, processed arrays or None, skip record)."""
  source, item, opts, process_fn = args
  if _STATUS_DIR is not None:
    with open(os.path.join(_STATUS_DIR, f"{os.getpid()}.item"), "w") as f:
      f.write(item)
  try:
    if source == "openpose":
      style = opts["styles"].index(os.path.basename(item).split("_")[0])
      seq = readers.read_openpose_folder(item, fps=opts.get("fps", 30.0), style=style)
    else:
      seq = readers.read_mocap_sequence(item)
    arrays = process_fn(seq)
    meta = {k: v for k, v in seq.meta.items() if isinstance(v, (int, float, str, bool))}
    return item, arrays, {"meta": meta}
  except DataError as e:
    return item, None, {"name": os.path.basename(item), "path": e.path, "problem": e.problem}


class WorkerCrash(RuntimeError):
  """A feature-extraction worker process died (a crash in a C extension, or killed)."""

  def __init__(self, item: str, how: str, completed: int):
    self.item, self.how, self.completed = item, how, completed
    super().__init__(f"{item}: the worker process extracting this sequence's features died "
                     f"({how})")


_FATAL = {"Segmentation fault": "SIGSEGV", "Floating point exception": "SIGFPE",
          "Aborted": "SIGABRT", "Bus error": "SIGBUS", "Illegal instruction": "SIGILL"}


def _diagnose_crash(status_dir: str, exitcodes: dict[int, int | None], done: set[str],
                    completed: int) -> WorkerCrash:
  """Which worker died, on which item, by which signal (faulthandler's report, exit codes)."""
  suspects = []
  for name in sorted(os.listdir(status_dir)):
    if not name.endswith(".item"):
      continue
    pid = int(name.split(".")[0])
    with open(os.path.join(status_dir, name)) as f:
      item = f.read()
    fault_path = os.path.join(status_dir, f"{pid}.fault")
    fault = open(fault_path).read() if os.path.exists(fault_path) else ""
    how = None
    for line in fault.splitlines():
      if line.startswith("Fatal Python error:"):
        what = line.split(":", 1)[1].strip()
        how = f"{_FATAL[what]}, {what.lower()}" if what in _FATAL else what
        break
    code = exitcodes.get(pid)
    if how is None and code is not None and code < 0 and code != -signal.SIGTERM:
      how = f"killed by {signal.Signals(-code).name}"
    if how is not None:
      return WorkerCrash(item, how, completed)
    if item not in done:
      suspects.append(item)
  if suspects:
    return WorkerCrash(suspects[0], "killed by a signal without a crash report, e.g. SIGKILL "
                       "from the out-of-memory killer", completed)
  return WorkerCrash("(unknown sequence)", "a worker process died", completed)


def _pool_results(jobs: list, num_workers: int, status_dir: str):
  """Yields _work results in job order from a spawn pool; a dead worker -> WorkerCrash."""
  os.makedirs(status_dir)
  ctx = multiprocessing.get_context("spawn")
  pool = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx,
                                                initializer=_init_worker,
                                                initargs=(status_dir,))
  futures = [pool.submit(_work, job) for job in jobs]
  done: set[str] = set()
  try:
    for fut, job in zip(futures, jobs):
      try:
        result = fut.result()
      except concurrent.futures.process.BrokenProcessPool:
        procs = dict(getattr(pool, "_processes", None) or {})   # pid -> Process (best effort)
        pool.shutdown(wait=True, cancel_futures=True)
        exitcodes = {pid: p.exitcode for pid, p in procs.items()}
        raise _diagnose_crash(status_dir, exitcodes, done, len(done)) from None
      done.add(job[1])
      yield result
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def ingest(source: str, raw_dir: str, processed_dir: str, *, on_error: str = "fail",
           num_workers: int = 1, split_seed: int = 0, openpose_fps: float = 30.0,
           log: Callable[[str], None] = print,
           process_fn: Callable[[readers.Sequence], dict] = process_sequence) -> dict:
  """Processes a raw source into ``processed_dir`` (atomically). Returns the manifest.

  With ``num_workers > 1`` the features are extracted in spawned worker processes, after
  librosa's numba kernels were compiled once (:func:`numba_cache.ensure_warm`): workers that
  compile at the same time can poison numba's cache (numba issue #10128). A worker that dies
  raises :class:`WorkerCrash` naming the sequence and the signal; if it died on the first
  sequence, numba's cache is moved aside and the run retried once. ``process_fn`` (a picklable
  module-level function) replaces :func:`process_sequence` (tests).
  """
  if on_error not in ("fail", "skip"):
    raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
  kw = dict(on_error=on_error, num_workers=num_workers, split_seed=split_seed,
            openpose_fps=openpose_fps, log=log, process_fn=process_fn)
  if num_workers > 1 and process_fn is process_sequence:
    numba_cache.ensure_warm(log=log)
  try:
    return _ingest_once(source, raw_dir, processed_dir, **kw)
  except WorkerCrash as e:
    if e.completed or num_workers <= 1 or process_fn is not process_sequence:
      raise
    aside = numba_cache.quarantine(numba_cache.configure())
    log(f"{e}, on its first sequence: moved numba's cache aside to {aside}; retrying once")
    numba_cache.ensure_warm(log=log)
    return _ingest_once(source, raw_dir, processed_dir, **kw)


def _ingest_once(source, raw_dir, processed_dir, *, on_error, num_workers, split_seed,
                 openpose_fps, log, process_fn) -> dict:
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
  if source in ("synthetic", "music_to_dance"):  # every raw folder accounted for
    for info in readers.unmatched_folders(raw_dir):
      skipped.append(info)
      log(f"SKIPPED {info['name']}: {info['path']}: {info['problem']}")
  try:
    jobs = [(source, it, opts, process_fn) for it in items]
    fault_was_enabled = faulthandler.is_enabled()
    if num_workers > 1:
      results = _pool_results(jobs, num_workers, os.path.join(tmp_dir, "workers"))
    else:    # in-process: a C-level crash at least prints its Python traceback
      results = map(_work, jobs)
      faulthandler.enable()
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
      if num_workers > 1:
        results.close()
        shutil.rmtree(os.path.join(tmp_dir, "workers"), ignore_errors=True)
      elif not fault_was_enabled:
        faulthandler.disable()
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
