"""The TensorFlow-free input path (``config.data.loader = "numpy"``): rows and batches in numpy.

Why plain numpy and not grain: the input here is already a pure function of the step (one seeded
permutation per epoch, ``pipeline.batch_schedule``), and a split fits in host memory, so all a
loader has to do is gather rows and overlap that with the device step. A background thread does
exactly that in ~100 lines with nothing to install; grain would add a dependency (absent from the
accelerator images this path is for) and a second notion of iterator state next to the
checkpointed ``data_step``, for no gain at this data size.

Same batches as the tf.data path by construction: the rows are cut by the same code
(``example_source``, shared with the TFDS builders) from the same processed sequences, put in
the same ``(seq, start)`` order and assembled by the same ``pipeline`` code; batch ``k`` gathers
the rows ``batch_schedule`` names for it, this process's slice of them (``_process_slice``).
Where the rows come from:

* ``ProcessedStore``: the processed dataset folder (``<data_dir>/processed/<source>``: manifest,
  stats.npz, seq/*.npz) that ``launch/preprocess.py`` writes before it builds the TFDS configs;
* ``portable.PortableData``: a portable export (``config.data.portable=FILE``).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from d2m_jax.data import example_source
from d2m_jax.data import ingest


class ProcessedStore:
  """A processed dataset folder read with numpy (same interface as ``portable.PortableData``)."""

  def __init__(self, processed_dir: str):
    self.path = os.path.abspath(processed_dir)
    self.manifest = ingest.read_manifest(self.path)
    self.keys = None                      # every contract key of every kind
    with np.load(os.path.join(self.path, "stats.npz")) as z:
      self.stats = {k: z[k] for k in z.files}

  def _file(self, name: str) -> str:
    return os.path.join(self.path, "seq", f"{name}.npz")

  def beats(self, name: str) -> np.ndarray:
    with np.load(self._file(name)) as z:
      return z["beats"]

  def sequence(self, name: str) -> dict:
    return ingest.load_processed(self._file(name))


def count_examples(store, kind: str, *, require_audio: bool = False) -> dict[str, int]:
  return example_source.count_from_records(store.manifest["sequences"], store.manifest["source"],
                                           kind, store.beats, require_audio=require_audio)


def split_rows(store, kind: str, split: str) -> list[dict]:
  """Every example of ``split`` (kind: windows | windows_nowave | units | sequences) as a row
  dict, in manifest order; rows hold only the keys the store has (``store.keys``) plus
  ``style``, ``has_audio``, ``seq``, ``start``."""
  source = store.manifest["source"]
  keep = None if store.keys is None else set(store.keys) | {"style", "has_audio", "seq", "start",
                                                             "length"}
  rows = []
  for r in store.manifest["sequences"]:
    if r["split"] != split:
      continue
    for ex in example_source.sequence_examples(store.sequence(r["name"]), kind, source):
      if keep is not None:
        ex = {k: v for k, v in ex.items() if k in keep}
      rows.append(ex)
  return rows


_END = object()


class _Failure:
  def __init__(self, exc):
    self.exc = exc


class BatchIterator:
  """Gathers ``arrays[k][idx]`` for each ``idx`` of ``index_batches`` in a background thread,
  keeping up to ``prefetch`` batches ready. Deterministic (one producer, FIFO); ``close()``
  (or garbage collection) stops the thread."""

  def __init__(self, arrays: dict[str, np.ndarray], index_batches: Iterator[np.ndarray],
               prefetch: int = 4, transform: Callable[[np.ndarray], np.ndarray] | None = None):
    self._arrays = arrays
    self._indices = index_batches
    self._transform = transform
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(prefetch)))
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(target=self._produce, name="d2m-numpy-loader", daemon=True)
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self):
    try:
      for idx in self._indices:
        if self._transform is not None:
          idx = self._transform(idx)
        if not self._put({k: v[idx] for k, v in self._arrays.items()}):
          return
      self._put(_END)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      self._put(_Failure(e))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self._done = True
      raise StopIteration
    if isinstance(item, _Failure):
      self._done = True
      raise item.exc
    return item

  def close(self):
    self._stop.set()

  def __del__(self):
    self.close()
