"""Input pipeline: processed TFDS datasets -> deterministic, exactly resumable, sharded batches.

Usage (``data_cfg`` is ``config.data``, see ``d2m_jax.train.defaults.data_config``)::

  stats = pipeline.load_stats(data_cfg)           # train-split normalisation statistics
  info = pipeline.dataset_info(data_cfg)          # pose_dim, joints, dims, skeleton, fps, ...
  it = pipeline.make_iterator(data_cfg, "train", start_step=step)   # host numpy batches
  for batch in pipeline.prefetch_to_device(it, mesh):                # global jax.Arrays
    ...

Design: a split is small (the real mocap gives ~10^3-10^4 examples), so it is decoded once into
host memory; a numpy schedule (one seeded permutation per epoch, batches taken consecutively
from the concatenated epochs, i.e. shuffle + repeat + drop_remainder) decides which examples
make global batch ``step``; tf.data gathers this process's slice of it in parallel worker threads
and prefetches. Batch ``k`` is a pure function of (seed, k), so ``start_step=k`` resumes exactly.
TensorFlow is told to see no GPU. With ``data_cfg.source == "synthetic"`` the procedural dataset
is generated, processed and built on first use (under a file lock, so parallel workers wait).

Loaders (``data_cfg.loader``): ``tfdata`` (above; the default where TensorFlow imports) or
``numpy`` (``d2m_jax.data.numpy_loader``: the same rows cut from the processed sequences with
numpy, the same schedule and slicing, a background thread instead of tf.data; no TensorFlow, no
TFDS). ``auto``/None picks ``tfdata`` when TensorFlow can be imported, else ``numpy`` with a
one-line notice. ``data_cfg.portable=FILE`` (a ``launch/export_data.py`` export,
``d2m_jax.data.portable``) replaces the processed dataset as the source of rows and stats.

Optional ``data_cfg`` fields (``data_cfg.get`` with defaults): ``require_audio`` (True: drop
examples of motion-only sequences), ``waveform`` (True: windows carry the 16 kHz clip; False
reads the smaller ``windows_nowave`` config), ``max_frames`` (None: the longest sequence),
``synthetic_sequences_per_style`` (6), ``synthetic_seconds`` (30.0), ``synthetic_seed`` (0),
``openpose_fps`` (30.0), ``num_workers`` (1, ingestion processes), ``loader`` ("auto"),
``portable`` (None).
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import sys
import threading
from typing import Any, Iterator

import numpy as np

from d2m_jax.configs import get
from d2m_jax.data import examples as ex_lib
from d2m_jax.data import ingest
from d2m_jax.data.errors import DataError
from d2m_jax.data.features import FRAME_FEATURES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RAW = {"music_to_dance": os.path.join(os.path.dirname(REPO_ROOT), "shared", "data",
                                              "music_to_dance")}
BATCH_KEYS = {
    "windows": ("pose", "root", "style", "d2m28", "fact35", "mfcc20", "beat", "waveform"),
    "units": ("units", "aud", "aud_raw", "style"),
    "sequences": ("pose", "root", "style", "length", "beat") + FRAME_FEATURES,
}
_CACHE: dict[Any, dict[str, np.ndarray]] = {}
_TF_CACHE: dict[int, dict[str, Any]] = {}
_STORES: dict[Any, Any] = {}
_LOCK = threading.Lock()
_TF_IMPORT: list = []          # [None] when TensorFlow imports, [reason] when it does not
LOADERS = ("tfdata", "numpy")


def data_dir(data_cfg) -> str:
  d = get(data_cfg, "data_dir", None) or os.environ.get("D2M_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "d2m_jax", "tfds")
  return os.path.abspath(d)


def processed_dir(data_cfg) -> str:
  return os.path.join(data_dir(data_cfg), "processed", data_cfg.source)


def raw_dir(data_cfg) -> str:
  r = get(data_cfg, "raw_dir", None)
  if r:
    return os.path.abspath(r)
  if data_cfg.source == "synthetic":
    return os.path.join(data_dir(data_cfg), "raw", "synthetic")
  if data_cfg.source in DEFAULT_RAW:
    return DEFAULT_RAW[data_cfg.source]
  raise DataError("<config.data.raw_dir>", f"source {data_cfg.source!r} needs data.raw_dir")


def tensorflow_import_error() -> str | None:
  """None when TensorFlow can be imported, else why not (tried once per process)."""
  if not _TF_IMPORT:
    try:
      import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
      _TF_IMPORT.append(None)
    except Exception as e:  # pylint: disable=broad-except  (ImportError, or a broken install)
      _TF_IMPORT.append(f"{type(e).__name__}: {e}")
  return _TF_IMPORT[0]


def loader(data_cfg) -> str:
  """``data_cfg.loader`` resolved: 'tfdata' | 'numpy' ('auto'/None: tfdata if TF imports)."""
  name = get(data_cfg, "loader", "auto")
  if name in LOADERS:
    return name
  if name != "auto":
    raise ValueError(f"data.loader must be auto|tfdata|numpy, got {name!r}")
  why = tensorflow_import_error()
  if why is None:
    return "tfdata"
  with _LOCK:
    if not _TF_IMPORT[1:]:
      _TF_IMPORT.append("noticed")
      print(f"[d2m_jax.data] TensorFlow cannot be imported ({why}); using the numpy loader "
            "(config.data.loader=numpy)", file=sys.stderr, flush=True)
  return "numpy"


def _store(data_cfg):
  """The numpy path's row source: the portable file if data.portable is set, else the processed
  dataset folder (cached per process)."""
  from d2m_jax.data import numpy_loader, portable  # pylint: disable=import-outside-toplevel
  path = get(data_cfg, "portable", None)
  key = os.path.abspath(path) if path else processed_dir(data_cfg)
  with _LOCK:
    st = _STORES.get(key)
  if st is None:
    st = portable.PortableData(path) if path else numpy_loader.ProcessedStore(key)
    with _LOCK:
      _STORES[key] = st
  if path and st.manifest["source"] != data_cfg.source:
    raise DataError(st.path, f"exported from source {st.manifest['source']!r}, the config "
                    f"reads {data_cfg.source!r}: set data.source={st.manifest['source']}")
  return st


def _uses_tfds(data_cfg) -> bool:
  return not get(data_cfg, "portable", None) and loader(data_cfg) == "tfdata"


def _tfds_kind(data_cfg) -> str:
  kind = data_cfg.kind
  if kind == "windows" and not get(data_cfg, "waveform", True):
    return "windows_nowave"
  if kind not in ("windows", "units", "sequences"):
    raise ValueError(f"data.kind must be windows|units|sequences, got {kind!r}")
  return kind


class _DropTfdsDtypeWarning:
  """Filters tfds's repeated "FeatureConnector.dtype is deprecated" log lines (tfds-internal)."""

  def filter(self, record):  # noqa: A003
    return "FeatureConnector.dtype" not in record.getMessage()


def _quiet_tfds():
  import logging
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropTfdsDtypeWarning) for f in logger.filters):
    logger.addFilter(_DropTfdsDtypeWarning())


def _hide_gpus_from_tf():
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # already initialised (and then already hidden by an earlier call)
  return tf


@contextlib.contextmanager
def _file_lock(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _synthetic_params(data_cfg) -> dict:
  return dict(sequences_per_style=int(get(data_cfg, "synthetic_sequences_per_style", 6)),
              seconds=float(get(data_cfg, "synthetic_seconds", 30.0)),
              seed=int(get(data_cfg, "synthetic_seed", 0)))


def prepare(data_cfg, *, kinds=("windows", "windows_nowave", "units", "sequences"),
            on_error: str = "fail", num_workers: int | None = None, force: bool = False,
            log=print) -> dict:
  """Ingests the raw source (if not yet processed) and builds the TFDS configs. Returns the
  manifest. Synthetic data is generated first when missing."""
  from d2m_jax.data import synthetic
  pdir = processed_dir(data_cfg)
  workers = num_workers or int(get(data_cfg, "num_workers", 1))
  with _file_lock(os.path.join(data_dir(data_cfg), ".d2m_build.lock")):
    if data_cfg.source == "synthetic":
      params = _synthetic_params(data_cfg)
      rdir = raw_dir(data_cfg)
      marker = os.path.join(rdir, "SYNTHETIC.json")
      have = json.load(open(marker)) if os.path.exists(marker) else None
      if force and have is not None:
        import shutil
        shutil.rmtree(rdir)
        have = None
      if have is not None and {k: have[k] for k in params} != params:
        raise DataError(rdir, f"synthetic data here was generated with {have}, the config asks "
                        f"for {params}: use another data.data_dir")
      if have is not None and have.get("version", 1) != synthetic.GENERATOR_VERSION:
        log(f"note: the synthetic data in {rdir} is from generator version "
            f"{have.get('version', 1)} (current {synthetic.GENERATOR_VERSION}); rebuild with "
            "`launch/preprocess.py --source=synthetic --force` to update it")
      if have is None:
        log(f"generating the synthetic dataset {params} in {rdir}")
        synthetic.generate_dataset(rdir, **params)
    man_path = os.path.join(pdir, "manifest.json")
    if force or not os.path.exists(man_path):
      ingest.ingest(data_cfg.source, raw_dir(data_cfg), pdir, on_error=on_error,
                    num_workers=workers, openpose_fps=float(get(data_cfg, "openpose_fps", 30.0)),
                    log=log)
    if not kinds:
      return ingest.read_manifest(pdir)
    from d2m_jax.data import tfds_builders
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    _hide_gpus_from_tf()
    _quiet_tfds()
    man = ingest.read_manifest(pdir)
    for kind in kinds:
      if kind == "windows" and abs(man["fps"] - 25.0) > 1e-6:
        log(f"skipping windows with raw audio: the 16 kHz clip layout (640 samples per frame) "
            f"needs 25 fps, this source is {man['fps']:g} fps; use data.waveform=False")
        continue
      bdir = os.path.join(data_dir(data_cfg), data_cfg.source, kind, tfds_builders.VERSION)
      if not sum(tfds_builders.count_examples(pdir, data_cfg.source, kind).values()):
        log(f"skipping {kind}: no examples (sequences shorter than a window, or fewer than "
            f"13 beats for units)")
        continue
      if force or not os.path.exists(os.path.join(bdir, "dataset_info.json")):
        if force and os.path.exists(bdir):
          import shutil
          shutil.rmtree(bdir)
        log(f"building TFDS {data_cfg.source}/{kind}")
        tfds_builders.build(data_cfg.source, kind, data_dir(data_cfg), pdir)
    return ingest.read_manifest(pdir)


def _ensure(data_cfg) -> dict:
  """The manifest; builds the synthetic default on first use (the numpy loader needs only the
  processed sequences, not the TFDS configs; a portable file needs nothing)."""
  kind = _tfds_kind(data_cfg)
  if get(data_cfg, "portable", None):
    return _store(data_cfg).manifest
  if not _uses_tfds(data_cfg):
    man = os.path.join(processed_dir(data_cfg), "manifest.json")
    if not os.path.exists(man):
      if data_cfg.source != "synthetic":
        raise DataError(processed_dir(data_cfg), f"dataset not processed: run `python "
                        f"launch/preprocess.py --source={data_cfg.source} "
                        f"--data_dir={data_dir(data_cfg)}`, or set data.portable=FILE")
      prepare(data_cfg, kinds=(), log=lambda s: print(f"[d2m_jax.data] {s}", flush=True))
    return ingest.read_manifest(processed_dir(data_cfg))
  from d2m_jax.data import tfds_builders
  bdir = os.path.join(data_dir(data_cfg), data_cfg.source, kind, tfds_builders.VERSION)
  man = os.path.join(processed_dir(data_cfg), "manifest.json")
  if not (os.path.exists(man) and os.path.exists(os.path.join(bdir, "dataset_info.json"))):
    if data_cfg.source != "synthetic":
      raise DataError(bdir, f"dataset not built: run `python launch/preprocess.py "
                      f"--source={data_cfg.source} --data_dir={data_dir(data_cfg)}`")
    prepare(data_cfg, log=lambda s: print(f"[d2m_jax.data] {s}", flush=True))
  return ingest.read_manifest(processed_dir(data_cfg))


def load_stats(data_cfg) -> dict[str, np.ndarray]:
  """Normalisation statistics computed on the train split only (see examples.compute_stats)."""
  _ensure(data_cfg)
  if get(data_cfg, "portable", None):
    return dict(_store(data_cfg).stats)
  with np.load(os.path.join(processed_dir(data_cfg), "stats.npz")) as z:
    return {k: z[k] for k in z.files}


def dataset_info(data_cfg) -> dict:
  """pose_dim, joints, dims, skeleton, fps, styles, num_examples per split (for data.kind)."""
  man = _ensure(data_cfg)
  if _uses_tfds(data_cfg):
    from d2m_jax.data import tfds_builders
    path = os.path.join(data_dir(data_cfg), data_cfg.source, _tfds_kind(data_cfg),
                        tfds_builders.VERSION, "dataset_info.json")
    with open(path) as f:
      stored = {s["name"]: sum(int(x) for x in s.get("shardLengths", [])) or 0
                for s in json.load(f).get("splits", [])}
  else:
    from d2m_jax.data import numpy_loader
    stored = numpy_loader.count_examples(_store(data_cfg), _tfds_kind(data_cfg))
  return dict(pose_dim=man["pose_dim"], joints=man["joints"], dims=man["dims"],
              skeleton=man["skeleton"], fps=man["fps"], styles=tuple(man["styles"]),
              num_examples=_num_examples(data_cfg, man),
              num_stored_examples={s: stored.get(s, 0) for s in ex_lib.SPLITS},
              num_sequences={s: sum(r["split"] == s for r in man["sequences"])
                             for s in ex_lib.SPLITS},
              feature_dims=man["feature_dims"], source=man["source"], kind=data_cfg.kind)


def _num_examples(data_cfg, man) -> dict[str, int]:
  """Examples per split as make_iterator sees them (after the require_audio filter)."""
  if not _uses_tfds(data_cfg):
    from d2m_jax.data import numpy_loader
    return numpy_loader.count_examples(_store(data_cfg), data_cfg.kind,
                                       require_audio=bool(get(data_cfg, "require_audio", True)))
  from d2m_jax.data import tfds_builders
  return tfds_builders.count_examples(processed_dir(data_cfg), man["source"], data_cfg.kind,
                                      require_audio=bool(get(data_cfg, "require_audio", True)))


def load_split(data_cfg, split: str) -> dict[str, np.ndarray]:
  """A whole split decoded into host numpy arrays (cached per process). Contract keys only,
  float32 (waveform as float32 in [-1, 1]); sequences padded to ``max_frames``."""
  _ensure(data_cfg)
  kind = _tfds_kind(data_cfg)
  tfds_rows = _uses_tfds(data_cfg)
  portable_path = get(data_cfg, "portable", None)
  origin = "tfds" if tfds_rows else (os.path.abspath(portable_path) if portable_path else "npz")
  key = (data_dir(data_cfg), data_cfg.source, kind, split,
         bool(get(data_cfg, "require_audio", True)), get(data_cfg, "max_frames", 0), origin)
  with _LOCK:
    if key in _CACHE:
      return _CACHE[key]
  if tfds_rows:
    path, rows = _tfds_rows(data_cfg, kind, split)
  else:
    from d2m_jax.data import numpy_loader
    st = _store(data_cfg)
    path = st.path
    if st.keys is not None:
      _check_portable_kind(data_cfg, st)
    rows = numpy_loader.split_rows(st, kind, split)
    if not rows and split not in {r["split"] for r in st.manifest["sequences"]}:
      raise DataError(path, f"no '{split}' split")
  rows.sort(key=lambda r: (r["seq"], int(r["start"])))        # a fixed, content-defined order
  if get(data_cfg, "require_audio", True) and data_cfg.kind != "sequences":
    rows = [r for r in rows if r["has_audio"]]
  if not rows:
    raise DataError(path, f"split '{split}' has no examples"
                    + (" with audio (data.require_audio=True)" if data_cfg.kind != "sequences"
                       else ""))
  out: dict[str, np.ndarray] = {}
  if data_cfg.kind == "sequences":
    max_frames = int(get(data_cfg, "max_frames", 0)) or max(int(r["length"]) for r in rows)
    for k in BATCH_KEYS["sequences"]:
      if k in ("style", "length") or k not in rows[0]:
        continue
      first = rows[0][k]
      arr = np.zeros((len(rows), max_frames) + first.shape[1:], np.float32)
      for i, r in enumerate(rows):
        n = min(r[k].shape[0], max_frames)
        arr[i, :n] = r[k][:n]
      out[k] = arr
    out["length"] = np.array([min(int(r["length"]), max_frames) for r in rows], np.int32)
    out["style"] = np.array([r["style"] for r in rows], np.int32)
  else:
    for k in BATCH_KEYS[data_cfg.kind]:
      if k not in rows[0]:
        continue
      if k == "waveform":
        out[k] = np.stack([r[k] for r in rows]).astype(np.float32) * np.float32(1.0 / 32768.0)
      elif k == "style":
        out[k] = np.array([r[k] for r in rows], np.int32)
      else:
        out[k] = np.stack([r[k] for r in rows]).astype(np.float32, copy=False)
  out["_seq"] = np.array([r["seq"].decode() if isinstance(r["seq"], bytes) else r["seq"]
                          for r in rows])
  with _LOCK:
    _CACHE[key] = out
  return out


def _check_portable_kind(data_cfg, st):
  """A portable file serves the example kind it was exported for (and only its keys)."""
  kind = st.info.get("kind")
  if kind != _tfds_kind(data_cfg):
    raise DataError(st.path, f"exported for kind {kind}, the config reads "
                    f"{_tfds_kind(data_cfg)} (data.kind={data_cfg.kind}, "
                    f"data.waveform={get(data_cfg, 'waveform', True)}): export it for this config")


def _tfds_rows(data_cfg, kind: str, split: str) -> tuple[str, list[dict]]:
  """The rows of one split, read from the built TFDS config (tf.data path)."""
  _hide_gpus_from_tf()
  _quiet_tfds()
  import tensorflow_datasets as tfds
  from d2m_jax.data import tfds_builders
  path = os.path.join(data_dir(data_cfg), data_cfg.source, kind, tfds_builders.VERSION)
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise DataError(path, f"no '{split}' split (splits: {list(builder.info.splits)})")
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return path, list(tfds.as_numpy(ds))


def batch_schedule(num_examples: int, global_batch: int, *, seed: int, start_step: int = 0,
                   shuffle: bool = True, repeat: bool = True) -> Iterator[np.ndarray]:
  """Global example indices of each batch: shuffle (one permutation per epoch) + repeat +
  batch(drop_remainder). Batch k depends only on (seed, k), which makes resuming exact.
  Without repeat: one pass, the last partial batch dropped (a split smaller than one batch
  gives one batch that wraps around)."""
  n, b = num_examples, global_batch
  perms: dict[int, np.ndarray] = {}

  def epoch_perm(e):
    if e not in perms:
      if len(perms) > 4:
        perms.clear()
      perms[e] = (np.random.default_rng([seed, e]).permutation(n) if shuffle
                  else np.arange(n))
    return perms[e]

  num_steps = None if repeat else max(1, n // b)
  step = start_step
  while num_steps is None or step < num_steps:
    pos = step * b + np.arange(b)
    if not repeat:
      pos = pos % n
      yield epoch_perm(0)[pos]
    else:
      ep, off = np.divmod(pos, n)
      idx = np.empty(b, np.int64)
      for e in np.unique(ep):
        sel = ep == e
        idx[sel] = epoch_perm(int(e))[off[sel]]
      yield idx
    step += 1


def _process_slice(global_batch: int) -> tuple[int, int]:
  import jax
  n_proc, pid = jax.process_count(), jax.process_index()
  if global_batch % n_proc:
    raise ValueError(f"global batch {global_batch} not divisible by {n_proc} processes")
  local = global_batch // n_proc
  return pid * local, local


def make_iterator(data_cfg, split: str = "train", *, start_step: int = 0, shuffle: bool = True,
                  repeat: bool = True, batch_size: int | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Host numpy batches (this process's slice of the global batch); see the module docstring.

  ``batch_size`` defaults to data.batch_size for train and data.eval_batch_size otherwise.
  """
  arrays = load_split(data_cfg, split)
  n = arrays["_seq"].shape[0]
  gb = int(batch_size or (data_cfg.batch_size if split == "train" else
                          get(data_cfg, "eval_batch_size", data_cfg.batch_size)))
  lo, local = _process_slice(gb)
  seed = int(get(data_cfg, "shuffle_seed", 0)) + (0 if split == "train" else 7919)
  sched = batch_schedule(n, gb, seed=seed, start_step=start_step, shuffle=shuffle, repeat=repeat)
  if loader(data_cfg) == "numpy":
    from d2m_jax.data import numpy_loader
    return numpy_loader.BatchIterator({k: v for k, v in arrays.items() if not k.startswith("_")},
                                      sched, prefetch=int(get(data_cfg, "host_prefetch", 4)),
                                      transform=lambda idx: idx[lo:lo + local])
  tf = _hide_gpus_from_tf()
  keys = [k for k in arrays if not k.startswith("_")]
  with _LOCK:                       # one TF copy of a split per process, reused by every call
    tensors = _TF_CACHE.get(id(arrays))
    if tensors is None:
      tensors = _TF_CACHE[id(arrays)] = {k: tf.constant(arrays[k]) for k in keys}

  def gen():
    for idx in sched:
      yield idx[lo:lo + local]

  ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((local,), tf.int64))
  ds = ds.map(lambda idx: {k: tf.gather(t, idx) for k, t in tensors.items()},
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.prefetch(int(get(data_cfg, "host_prefetch", 4)))
  return ds.as_numpy_iterator()


def to_global(batch: dict[str, np.ndarray], mesh, axis: str = "data") -> dict[str, Any]:
  """Process-local numpy batch -> global jax.Arrays sharded P(axis) on the batch axis."""
  import jax
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def prefetch_to_device(iterator, mesh, size: int = 2, axis: str = "data"):
  """Wraps a host iterator: keeps ``size`` batches already transferred to the devices."""
  queue = collections.deque()

  def enqueue(n):
    for _ in range(n):
      try:
        queue.append(to_global(next(iterator), mesh, axis))
      except StopIteration:
        return

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)
