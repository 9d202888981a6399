"""Portable training data: what one config reads from a processed dataset, in one ``.npz`` file.

``export(...)`` (driven by ``launch/export_data.py``) writes, from a processed dataset
(``d2m_jax.data.ingest``): the manifest (source, skeleton, fps, styles, the per-sequence records
with their splits), the train-split normalisation statistics, and per sequence only the frame
arrays the given batch keys are cut from (``units`` -> pose + beats, ``aud`` -> d2m28 + beats,
``beat`` -> beats, ...). The numpy loader (``config.data.portable=FILE``) trains from it with
nothing but numpy: no TFDS, no TensorFlow, no librosa, no raw data.

Evaluation arrays (``export(..., eval_arrays=...)``, ``launch/export_data.py --for_eval``): the
paper metrics (``d2m_jax.metrics.evaluation``, the ``dance_metrics`` evaluator) read every
sequence's pose and root trajectory (train split: the reference clips; held-out split: the
real-vs-real row) and, to generate for a held-out song, the generator's music features
(``task.generation_features``) and beats. ``eval_arrays`` adds those arrays for every sequence
(same precision rule, except the root trajectory: float32, see ``FLOAT32_EVAL_ARRAYS``);
``info["eval_arrays"]`` lists them. :meth:`PortableData.require` raises
the data error that names the file and the remedy when a reader needs an array the file lacks.
A sequence's tempo comes from its manifest record (or, if absent, from its beats).

Precision: a float array is stored as float16, centred on its train-split mean (``x - mean``:
many dimensions sit far from zero relative to their spread, e.g. chroma/onset rows of d2m28, so
centring buys several bits), when the round trip ``f16(x - mean) + mean`` moves no value by more
than ``f16_tol`` (default 1%) of its dimension's train-split standard deviation (the scale every
model normalises by); otherwise it is stored as float32, exactly. The decision and the measured
error of every array are recorded in the file (``info["arrays"]``). Examples are cut on load by
the same code as for the TFDS path (``example_source``), so a float32 export
(``f16_tol=0``) gives bit-identical batches.

Layout (``np.load(FILE)``, no pickles): ``__info__`` (JSON text: format version, manifest, the
exported keys/arrays/dtypes/errors), ``stats/<name>``, ``seq/<sequence>/<array>``. Written to a
temporary name in the destination folder and renamed: never half-written.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from d2m_jax import files
from d2m_jax.data import examples as ex_lib
from d2m_jax.data import ingest
from d2m_jax.data import tempo as tempo_lib
from d2m_jax.data.errors import DataError
from d2m_jax.data.features import FRAME_FEATURES

FORMAT_VERSION = 1
# Batch key -> the processed-sequence arrays it is cut from (beats are always exported).
SOURCE_ARRAYS = {
    "pose": ("pose",), "root": ("root",), "beat": (), "length": (), "style": (),
    "units": ("pose",), "aud": ("d2m28",), "aud_raw": ("d2m28",), "waveform": ("waveform16k",),
    **{f: (f,) for f in FRAME_FEATURES},
}
FLOAT_ARRAYS = ("pose", "root") + FRAME_FEATURES      # candidates for float16
SEQUENCE_ARRAYS = FLOAT_ARRAYS + ("waveform16k",)      # what eval_arrays may name
METRIC_ARRAYS = ("pose", "root")                       # what the paper metrics read
# Evaluation arrays kept float32 whatever the tolerance: the root trajectory is in room
# coordinates (float16 steps of 0.1-0.25 cm at metres from the mean) and PFC reads its
# accelerations (float16 moved the real data's real-vs-real PFC by 3 %); 3 floats a frame.
FLOAT32_EVAL_ARRAYS = ("root",)
FOR_EVAL_REMEDY = "export it again with launch/export_data.py --for_eval"
_STAT = {"pose": "pose", "root": "root", **{f: f for f in FRAME_FEATURES}}


def arrays_for_keys(keys) -> tuple[str, ...]:
  """Processed-sequence arrays needed to cut the batch keys ``keys``."""
  out = set()
  for k in keys:
    if k not in SOURCE_ARRAYS:
      raise ValueError(f"unknown batch key {k!r}; known: {sorted(SOURCE_ARRAYS)}")
    out.update(SOURCE_ARRAYS[k])
  return tuple(sorted(out))


def to_f16(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """float16 of ``x - mean`` (mean broadcast over the trailing, flattened dimensions)."""
  x = np.asarray(x, np.float32)
  with np.errstate(over="ignore", invalid="ignore"):
    return (x - mean.reshape(x.shape[1:])).astype(np.float16)


def from_f16(x16: np.ndarray, mean: np.ndarray) -> np.ndarray:
  return x16.astype(np.float32) + mean.reshape(x16.shape[1:]).astype(np.float32)


def _f16_error(seqs: list[dict], name: str, mean: np.ndarray, std: np.ndarray) -> float:
  """Max over all values of |x - round_trip(x)| / std(dim) (inf when float16 overflows)."""
  worst = 0.0
  for s in seqs:
    x = np.asarray(s[name], np.float32)
    if not x.size:
      continue
    with np.errstate(over="ignore", invalid="ignore"):
      err = np.abs(from_f16(to_f16(x, mean), mean) - x) / std.reshape(x.shape[1:])
    worst = max(worst, float(np.max(err)) if np.all(np.isfinite(err)) else float("inf"))
  return worst


def export(processed_dir: str, out_path: str, *, kind: str, keys, f16_tol: float = 1e-2,
           extra_info: dict | None = None, eval_arrays=(), log=print) -> dict:
  """Writes the portable file for batch ``keys`` of example ``kind``, plus the processed arrays
  ``eval_arrays`` of every sequence (evaluation: ``METRIC_ARRAYS`` and the generator's music
  features); returns its info dict."""
  if kind not in ex_lib.KINDS:
    raise ValueError(f"kind must be one of {ex_lib.KINDS}, got {kind!r}")
  bad = sorted(set(eval_arrays) - set(SEQUENCE_ARRAYS))
  if bad:
    raise ValueError(f"eval_arrays {bad}: not processed-sequence arrays ({SEQUENCE_ARRAYS})")
  man = ingest.read_manifest(processed_dir)
  with np.load(os.path.join(processed_dir, "stats.npz")) as z:
    stats = {k: z[k] for k in z.files}
  names = tuple(sorted(set(arrays_for_keys(keys)) | set(eval_arrays)))
  seqs = [ingest.load_processed(os.path.join(processed_dir, "seq", f"{r['name']}.npz"))
          for r in man["sequences"]]
  dtypes, errors = {}, {}
  for name in names:
    if name not in FLOAT_ARRAYS:
      dtypes[name] = str(np.asarray(seqs[0][name]).dtype)
      continue
    mean, std = stats[f"{_STAT[name]}_mean"], stats[f"{_STAT[name]}_std"]
    errors[name] = _f16_error(seqs, name, mean, std)
    exact = name in eval_arrays and name in FLOAT32_EVAL_ARRAYS
    dtypes[name] = "float16" if errors[name] <= f16_tol and not exact else "float32"
    log(f"{name}: max float16 error {errors[name]:.2e} of a std -> {dtypes[name]}"
        + (" (kept exact for evaluation)" if exact else ""))
  out = {f"stats/{k}": v for k, v in stats.items()}
  for s in seqs:
    out[f"seq/{s['name']}/beats"] = np.asarray(s["beats"], np.int32)
    for name in names:
      v = np.asarray(s[name])
      out[f"seq/{s['name']}/{name}"] = (to_f16(v, stats[f"{_STAT[name]}_mean"])
                                        if dtypes[name] == "float16" else v.astype(dtypes[name]))
  info = dict(format=FORMAT_VERSION, kind=kind, keys=sorted(keys),
              eval_arrays=sorted(eval_arrays), arrays=dict(
      dtypes=dtypes, f16_max_error_over_std=errors, f16_tol=f16_tol,
      f16_centred_on="train-split mean (stats/<name>_mean)"), manifest=man,
              processed_dir=os.path.abspath(processed_dir),
              created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **(extra_info or {}))
  out["__info__"] = np.array(json.dumps(info))
  files.save_npz(out_path, compressed=True, **out)
  info["bytes"] = os.path.getsize(out_path)
  return info


class PortableData:
  """A portable file opened for reading: ``info``, ``manifest``, ``stats``, ``sequence(name)``."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    if not os.path.exists(self.path):
      raise DataError(self.path, "portable data file not found (write it with "
                      "launch/export_data.py)")
    try:
      z = np.load(self.path, allow_pickle=False)
      self.info = json.loads(str(z["__info__"]))
      self._z = z
    except (OSError, ValueError, KeyError) as e:
      raise DataError(self.path, f"not a portable data file ({type(e).__name__}: {e})") from None
    if self.info.get("format") != FORMAT_VERSION:
      raise DataError(self.path, f"portable format {self.info.get('format')} (this code reads "
                      f"{FORMAT_VERSION}): export it again")
    self.manifest = self.info["manifest"]
    self.keys = tuple(self.info["keys"])
    self.dtypes = self.info["arrays"]["dtypes"]
    self.array_names = tuple(self.dtypes)
    self.stats = {k[len("stats/"):]: self._z[k] for k in self._z.files if k.startswith("stats/")}

  def beats(self, name: str) -> np.ndarray:
    return self._z[f"seq/{name}/beats"]

  def require(self, names, purpose: str):
    """DataError (one line: this file, the missing arrays, the remedy) unless every processed
    array of ``names`` was exported (the others are zero placeholders in :meth:`sequence`)."""
    missing = [n for n in dict.fromkeys(names) if n not in self.array_names]
    if missing:
      raise DataError(self.path, f"has no {'/'.join(missing)} arrays, needed by {purpose} "
                      f"(exported arrays: {sorted(self.array_names)}): {FOR_EVAL_REMEDY}")

  def split_names(self, split: str) -> list[str]:
    """The sequences of ``split`` (manifest order)."""
    return [r["name"] for r in self.manifest["sequences"] if r["split"] == split]

  def split_sequences(self, split: str) -> list[dict]:
    """Every sequence of ``split`` as :meth:`sequence` gives it (``ingest.split_sequences``)."""
    return [self.sequence(n) for n in self.split_names(split)]

  def sequence(self, name: str) -> dict:
    """One sequence as ``ingest.load_processed`` gives it; arrays that were not exported are
    zero-memory zero placeholders (``np.broadcast_to``) so the shared example cutter runs."""
    man = self.manifest
    rec = next(r for r in man["sequences"] if r["name"] == name)
    t = int(rec["frames"])
    full = {"pose": (t, man["joints"], man["dims"]), "root": (t, 3),
            **{f: (t, man["feature_dims"][f]) for f in FRAME_FEATURES}, "waveform16k": (0,)}
    beats = self.beats(name)
    seq = dict(name=name, style=np.int32(rec["style"]), fps=np.float32(man["fps"]),
               skeleton=man["skeleton"], has_audio=np.int32(rec["has_audio"]), beats=beats,
               tempo=np.float32(tempo_lib.sequence_tempo(rec.get("tempo"), beats, man["fps"])))
    for k, shape in full.items():
      if k in self.array_names:
        v = self._z[f"seq/{name}/{k}"]
        if self.dtypes[k] == "float16":
          v = from_f16(v, self.stats[f"{_STAT[k]}_mean"])
        seq[k] = v if k == "waveform16k" else v.astype(np.float32, copy=False)
      else:
        seq[k] = np.broadcast_to(np.zeros((), np.int16 if k == "waveform16k" else np.float32),
                                 shape)
    return seq
