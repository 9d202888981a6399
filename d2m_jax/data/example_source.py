"""Which examples a processed dataset yields, per kind and split: one definition, no TensorFlow.

Both input paths cut their examples here: the TFDS builders (``tfds_builders``) write what
:func:`sequence_examples` yields into TFRecords, and the numpy loader (``numpy_loader``) builds the
same rows in memory from the processed sequences (or a portable export). A row is a dict with the
contract keys of its kind plus ``style``, ``has_audio``, ``seq`` (the sequence name) and
``start`` (first frame); rows are put in the content-defined order ``(seq, start)`` before use.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from d2m_jax.data import examples as ex_lib

# Window / unit strides per source (frames / beats between consecutive examples).
WINDOW_STRIDE = {"synthetic": 20, "music_to_dance": 30, "openpose": 30}
UNIT_STRIDE = 2


def window_stride(source: str) -> int:
  return WINDOW_STRIDE.get(source, 30)


def count_from_records(records: Iterable[dict], source: str, kind: str,
                       beats_of: Callable[[str], np.ndarray], *,
                       require_audio: bool = False) -> dict[str, int]:
  """Examples per split that ``kind`` yields, from manifest records (units: from the beats,
  ``beats_of(name)``)."""
  out = {s: 0 for s in ex_lib.SPLITS}
  for r in records:
    if require_audio and not r["has_audio"] and kind != "sequences":
      continue
    if kind in ("windows", "windows_nowave"):
      n = ex_lib.num_windows(r["frames"], window_stride(source))
    elif kind == "units":
      if not r["has_audio"]:
        continue
      n = ex_lib.num_units(beats_of(r["name"]), UNIT_STRIDE)
    else:
      n = 1
    out[r["split"]] += n
  return out


def sequence_examples(seq: dict, kind: str, source: str) -> Iterator[dict]:
  """The examples of one processed sequence (see ``d2m_jax.data.examples``), with ``seq`` and
  ``start`` set; ``kind`` is windows | windows_nowave | units | sequences."""
  if kind in ("windows", "windows_nowave"):
    it = ex_lib.windows(seq, stride=window_stride(source), with_wave=kind == "windows")
  elif kind == "units":
    it = ex_lib.units(seq, stride=UNIT_STRIDE) if seq["has_audio"] else iter(())
  elif kind == "sequences":
    it = iter([ex_lib.sequence_example(seq)])
  else:
    raise ValueError(f"unknown example kind {kind!r}; known: {ex_lib.KINDS}")
  for ex in it:
    ex["seq"] = seq["name"]
    ex.setdefault("start", np.int32(0))
    yield ex
