"""Test sequences for evaluation: a raw folder the models never saw, or the processed test split.

``load_raw_dir(DIR)`` reads every ``DANCE_<S>_<n>/`` folder of ``DIR`` (the Music-to-Dance
layout: ``config.json`` + audio, ``skeletons.json`` in the folder or in a ``v2_*/`` copy beside
it) and preprocesses it with the data layer's ``ingest.process_sequence`` (the same features,
beats and 16 kHz audio as the training data; nothing is normalised here: every model normalises
with the training statistics it holds in its state):

* with skeleton and audio: a full test sequence (real-vs-real row, generation, music style);
* audio but no skeleton ("music only"): generation and music style (no real row);
* skeleton but no audio: skipped (nothing to generate for or classify), with a log line.

Any bad file raises ``DataError`` naming it (the launcher prints one line and exits non-zero).
``load_processed_split`` gives the same records for a split of an already processed dataset.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Dict, List

import numpy as np

from d2m_jax.data import ingest, readers
from d2m_jax.data.errors import DataError


@dataclasses.dataclass
class TestSequence:
  name: str
  style: int
  has_motion: bool
  processed: Dict[str, np.ndarray]   # ingest.process_sequence output (un-normalised)

  def features(self) -> Dict[str, np.ndarray]:
    """What a style model's ``predict_clip_logits`` gets: the processed arrays minus the label."""
    return {k: v for k, v in self.processed.items() if k != "style"}


def load_raw_dir(raw_dir: str, *, log: Callable[[str], None] = print) -> List[TestSequence]:
  """Reads and preprocesses every ``DANCE_*`` folder of ``raw_dir`` (sorted by style, number)."""
  out: List[TestSequence] = []
  t0 = time.perf_counter()
  for d in readers.list_mocap_sequences(raw_dir):
    name = os.path.basename(d)
    has_audio = readers.find_audio(d) is not None
    if readers.has_mocap_skeleton(d):
      seq = readers.read_mocap_sequence(d, load_audio=True)
      if not seq.has_audio:
        log(f"{name}: motion only (no audio): skipped")
        continue
    elif has_audio:
      seq = readers.read_music_only_sequence(d)
    else:
      raise DataError(d, "neither a skeleton nor audio")
    arrays = ingest.process_sequence(seq)
    music_only = bool(seq.meta.get("music_only", False))
    out.append(TestSequence(name, int(seq.style), not music_only, arrays))
    log(f"{name}: {arrays['pose'].shape[0]} frames{' (music only)' if music_only else ''}, "
        f"{float(arrays['tempo']):.1f} BPM ({time.perf_counter() - t0:.1f} s)")
  if not out:
    raise DataError(raw_dir, "no sequence with audio")
  return out


def with_audio(seqs) -> List[TestSequence]:
  """The processed-sequence dicts with audio among ``seqs`` as :class:`TestSequence`s."""
  return [TestSequence(str(s["name"]), int(s["style"]), True, s) for s in seqs
          if int(s["has_audio"])]


def load_processed_split(processed_dir: str, split: str = "test") -> List[TestSequence]:
  """The sequences with audio of one split of a processed dataset (``seq/<name>.npz``)."""
  return with_audio(ingest.split_sequences(processed_dir, split))
