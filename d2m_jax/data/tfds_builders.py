"""TFDS builders over processed sequences: ``synthetic``, ``music_to_dance``, ``openpose``.

Each builder has one config per example kind (``windows``, ``windows_nowave``, ``units``,
``sequences``; see ``d2m_jax.data.examples``) and the splits train / validation / test by
sequence, as assigned at ingestion. Float arrays are stored as raw bytes
(``tfds.features.Encoding.BYTES``), the per-window 16 kHz clip as int16. Built and read offline:
no download, no GCS. Importing this module imports TensorFlow Datasets (not TensorFlow itself).
The examples themselves are cut by ``example_source`` (shared with the TF-free numpy loader).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from d2m_jax.data import example_source
from d2m_jax.data import examples as ex_lib
from d2m_jax.data import ingest
from d2m_jax.data.example_source import UNIT_STRIDE, WINDOW_STRIDE  # noqa: F401 (re-exported)
from d2m_jax.data.features import FEATURE_DIMS, FRAME_FEATURES

VERSION = "1.0.0"
BYTES = tfds.features.Encoding.BYTES


def _t(shape, dtype=np.float32):
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=BYTES)


def features_for(kind: str, pose_dim: int) -> tfds.features.FeaturesDict:
  s32 = tfds.features.Scalar(dtype=np.int32)
  w = ex_lib.WINDOW
  if kind in ("windows", "windows_nowave"):
    f = dict(pose=_t((w, pose_dim)), root=_t((w, 3)), beat=_t((w,)),
             **{k: _t((w, FEATURE_DIMS[k])) for k in ex_lib.WINDOW_FEATURES})
    if kind == "windows":
      f["waveform"] = _t((ex_lib.WAVE_LEN,), np.int16)
  elif kind == "units":
    f = dict(units=_t((ex_lib.UNITS_PER_EXAMPLE, ex_lib.UNIT, pose_dim)),
             aud=_t((ex_lib.UNITS_PER_EXAMPLE * ex_lib.UNIT, FEATURE_DIMS["d2m28"])),
             aud_raw=_t((ex_lib.AUD_RAW, FEATURE_DIMS["d2m28"])))
  elif kind == "sequences":
    f = dict(pose=_t((None, pose_dim)), root=_t((None, 3)), beat=_t((None,)), length=s32,
             **{k: _t((None, FEATURE_DIMS[k])) for k in FRAME_FEATURES})
  else:
    raise ValueError(f"unknown example kind {kind!r}; known: {ex_lib.KINDS}")
  f.update(style=s32, has_audio=s32, seq=tfds.features.Text(), start=s32)
  return tfds.features.FeaturesDict(f)


def count_examples(processed_dir: str, source: str, kind: str, *,
                   require_audio: bool = False) -> dict[str, int]:
  """Examples per split that ``kind`` yields (units: from the stored beats)."""

  def beats_of(name):
    with np.load(os.path.join(processed_dir, "seq", f"{name}.npz")) as z:
      return z["beats"]

  return example_source.count_from_records(ingest.read_manifest(processed_dir)["sequences"],
                                           source, kind, beats_of, require_audio=require_audio)


class _DanceBuilder(tfds.core.GeneratorBasedBuilder):
  """Reads the processed sequences in ``processed_dir`` (see ``d2m_jax.data.ingest``)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=k, description=f"{k} examples")
                     for k in ex_lib.KINDS]
  SOURCE = ""
  # No downloads: no checksums file. (Setting this also keeps tfds from resolving the code path,
  # which needs the undeclared `importlib_resources` package in tfds 4.9.10.)
  url_infos = {}

  def __init__(self, *, processed_dir: str | None = None, **kwargs):
    self._processed_dir = processed_dir
    super().__init__(**kwargs)

  def _manifest(self):
    if self._processed_dir is None:
      raise ValueError(f"{self.name}: building needs processed_dir=...")
    return ingest.read_manifest(self._processed_dir)

  def _info(self) -> tfds.core.DatasetInfo:
    pose_dim = self._manifest()["pose_dim"] if self._processed_dir else 69
    return tfds.core.DatasetInfo(
        builder=self, description=f"{self.SOURCE} dance sequences ({self.builder_config.name})",
        features=features_for(self.builder_config.name, pose_dim))

  def _split_generators(self, dl_manager):
    del dl_manager
    counts = count_examples(self._processed_dir, self.SOURCE, self.builder_config.name)
    return {s: self._generate_examples(s) for s in ex_lib.SPLITS if counts[s]}

  def _generate_examples(self, split):
    man = self._manifest()
    kind = self.builder_config.name
    for r in man["sequences"]:
      if r["split"] != split:
        continue
      seq = ingest.load_processed(os.path.join(self._processed_dir, "seq", f"{r['name']}.npz"))
      for i, ex in enumerate(example_source.sequence_examples(seq, kind, self.SOURCE)):
        ex["seq"] = r["name"]
        yield f"{r['name']}_{i:05d}", ex


class Synthetic(_DanceBuilder):
  """The embedded procedural default dataset (``d2m_jax.data.synthetic``)."""
  SOURCE = "synthetic"


class MusicToDance(_DanceBuilder):
  """The Music-to-Dance 3-D ballroom mocap (../shared/data/music_to_dance)."""
  SOURCE = "music_to_dance"


class Openpose(_DanceBuilder):
  """OpenPose JSON folders (BODY_25 -> body15, COCO-18 -> coco14)."""
  SOURCE = "openpose"


BUILDERS = {"synthetic": Synthetic, "music_to_dance": MusicToDance, "openpose": Openpose}


def build(source: str, kind: str, data_dir: str, processed_dir: str):
  """Builds one config offline; returns the builder."""
  b = BUILDERS[source](config=kind, data_dir=data_dir, processed_dir=processed_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return b
