"""The evaluation protocol behind ``launch/evaluate.py``: clips, reference set, rows, table.

Fixed protocol (so numbers are comparable run to run; constants below):

* **Data**: the real mocap data (``config.data.source = "music_to_dance"``), split by sequence
  with the data layer's deterministic ``assign_splits`` (seed 0, the pipeline's split). Read
  from the processed dataset, or from a portable export made with ``launch/export_data.py
  --for_eval`` when ``config.data.portable`` is set (:func:`split_sequences`, :func:`metric_inputs`:
  the one path of ``launch/evaluate.py`` and the ``dance_metrics`` evaluator).
* **Clips**: non-overlapping ``CLIP_FRAMES`` = 250 frames (10 s at 25 fps) from the start of each
  sequence, at most ``MAX_CLIPS_PER_SEQUENCE`` = 12 per sequence (long rumbas do not dominate).
* **Reference ("GT")**: all clips of the TRAIN split. Kinetic/geometric features of every row are
  z-scored with the reference's mean/std; FID_k/FID_g are Fréchet distances to the reference
  (the Dancing2Music convention, FID against the training data, issue #2).
* **Rows**: ``real test`` = the test split's own clips (real-vs-real: the floor a model can
  reach); one row per model: a dance generated for the WHOLE music span of every test sequence
  (one ``task.generate`` call per sequence, seed ``SEED`` = 0, 1 sample), cut into the same clips.
* **Per-row metrics**: FID_k, FID_g, Div_k, Div_g (mean pairwise distance of the row's normalised
  features); FID_k_aist / Div_k_aist: the same on the kinetic features in the field's convention
  (``kinetic.kinetic_features(convention="aist")``: AIST++'s slipped energy-expenditure formula,
  which FACT / Bailando / EDGE numbers carry; for setting our numbers beside papers'), BAS with the motion-beat convention (default) and the music-beat convention, PFC
  (needs a root trajectory: real data only; generators output root-relative joints), style
  consistency (accuracy of the ``dance_style`` classifier against the music's style label) and
  FID over that classifier's features (FID_cls), when a classifier checkpoint is given.

With few test sequences the feature covariances are rank-deficient (fewer clips than feature
dimensions): the Fréchet distance then uses the eps fallback and the numbers carry large sampling
noise; the table reports the clip counts next to them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from d2m_jax import files
from d2m_jax.configs import get
from d2m_jax.metrics import beats as beats_lib
from d2m_jax.metrics import foot_contact, frechet, geometric, kinetic

CLIP_FRAMES = 250
MAX_CLIPS_PER_SEQUENCE = 12
SEED = 0
FPS = 25.0
# The real-vs-real metrics the dance_metrics evaluator reports (``real_<metric>``).
REAL_METRICS = ("FID_k", "FID_g", "Div_k", "Div_g", "BAS", "PFC")


@dataclasses.dataclass
class EvalSequence:
  name: str
  style: int
  pose: np.ndarray                 # (T, J, C) root-relative
  root: Optional[np.ndarray]       # (T, 3) or None
  beats: np.ndarray                # music-beat frames
  wave: Optional[np.ndarray] = None
  sr: Optional[int] = None


def clip_starts(num_frames: int, clip: int = CLIP_FRAMES,
                max_clips: int = MAX_CLIPS_PER_SEQUENCE) -> List[int]:
  return list(range(0, num_frames - clip + 1, clip))[:max_clips]


def load_real_sequences(raw_dir: str, splits: Sequence[str] = ("train", "test"), *,
                        split_seed: int = 0, audio_splits: Sequence[str] = ("test",),
                        log=print) -> Dict[str, List[EvalSequence]]:
  """Real mocap sequences by split (audio + beats decoded for ``audio_splits`` only)."""
  from d2m_jax.data import examples, features, readers  # pylint: disable=import-outside-toplevel
  dirs = readers.list_mocap_sequences(raw_dir)
  names = [os.path.basename(d) for d in dirs]
  styles = [readers.style_of(n) for n in names]
  split_of = examples.assign_splits(names, styles, seed=split_seed)
  manifest_split = _manifest_splits()
  if manifest_split:  # the pipeline's own assignment, when the real data has been preprocessed
    split_of.update(manifest_split)
    log("splits from the preprocessed manifest")
  out: Dict[str, List[EvalSequence]] = {s: [] for s in splits}
  t0 = time.perf_counter()
  for d, n in zip(dirs, names):
    sp = split_of[n]
    if sp not in splits:
      continue
    want_audio = sp in audio_splits
    seq = readers.read_mocap_sequence(d, load_audio=want_audio)
    if want_audio and not seq.has_audio:
      continue  # motion-only sequences cannot be generated for
    beats = np.zeros((0,), np.int64)
    if seq.has_audio:
      beats, _ = features.beat_frames(seq.wave, seq.sr, seq.fps, seq.num_frames)
    out[sp].append(EvalSequence(n, seq.style, np.asarray(seq.pose, np.float32),
                                np.asarray(seq.root, np.float32), beats, seq.wave, seq.sr))
  log(f"loaded {', '.join(f'{k}: {len(v)}' for k, v in out.items())} sequences "
      f"in {time.perf_counter() - t0:.1f} s")
  return out


def eval_sequence(processed: Dict[str, Any], has_motion: bool = True) -> EvalSequence:
  """The EvalSequence of a processed sequence (``ingest.process_sequence``); music-only
  sequences (``has_motion=False``) get no root (their pose is a zero placeholder)."""
  return EvalSequence(str(processed["name"]), int(processed["style"]),
                      np.asarray(processed["pose"], np.float32),
                      np.asarray(processed["root"], np.float32) if has_motion else None,
                      np.asarray(processed["beats"], np.int64))


def split_sequences(data_cfg, split: str, *, need: Sequence[str] = (),
                    purpose: str = "the paper metrics") -> List[Dict[str, Any]]:
  """The processed-sequence dicts (``ingest.load_processed``'s) of ``split`` of a run's data:
  from ``data_cfg.portable`` when set (``portable.PortableData``; it must hold the metrics'
  pose and root and the arrays ``need``, else a ``DataError`` naming the file and the remedy,
  ``launch/export_data.py --for_eval``), else from the processed dataset of ``data_cfg``."""
  from d2m_jax.data import ingest, pipeline, portable  # pylint: disable=import-outside-toplevel
  data = require_arrays(data_cfg, portable.METRIC_ARRAYS + tuple(need), purpose)
  if data is not None:
    return data.split_sequences(split)
  return ingest.split_sequences(pipeline.processed_dir(data_cfg), split)


def require_arrays(data_cfg, names: Sequence[str], purpose: str):
  """The ``portable.PortableData`` of ``data_cfg.portable`` after checking that it holds the
  processed arrays ``names`` (``DataError``: the file, what is missing, the remedy); None when
  the run reads the processed dataset (which holds every array)."""
  from d2m_jax.data import portable  # pylint: disable=import-outside-toplevel
  path = get(data_cfg, "portable", None)
  if not path:
    return None
  data = portable.PortableData(path)
  data.require(names, purpose)
  return data


def split_items(data_cfg, split: str, *, need: Sequence[str] = ()):
  """The sequences with audio of ``split`` (what a generator is scored on) as
  ``unseen.TestSequence``s, from the portable file or the processed dataset
  (:func:`split_sequences`)."""
  from d2m_jax.metrics import unseen  # pylint: disable=import-outside-toplevel
  return unseen.with_audio(split_sequences(data_cfg, split, need=need))


def musics_of(items, feature_names: Sequence[str]):
  """The ``generate.Music`` of each item for a generator that reads ``feature_names``."""
  from d2m_jax import generate  # pylint: disable=import-outside-toplevel
  return [generate.music_from_processed(it.processed, tuple(feature_names)) for it in items]


@dataclasses.dataclass
class MetricInputs:
  """What the paper metrics of one split read: the reference (train split) sequences, the
  split's sequences with audio and, per sequence, the generator's music."""
  train: List[EvalSequence]
  seqs: List[EvalSequence]
  musics: list


def split_inputs(data_cfg, split: str, need: Sequence[str] = ()):
  """(train-split EvalSequences, ``split``'s EvalSequences, its items) from ``data_cfg`` (portable
  file or processed dataset): the sequences ``launch/evaluate.py`` and :func:`metric_inputs` score."""
  train = [eval_sequence(s) for s in split_sequences(data_cfg, "train")]
  items = split_items(data_cfg, split, need=tuple(need))
  return train, [eval_sequence(it.processed) for it in items], items


def metric_inputs(data_cfg, split: str, feature_names: Sequence[str] = ()) -> MetricInputs:
  """:class:`MetricInputs` of ``split`` (:func:`split_inputs` plus each sequence's generator
  music): what the ``dance_metrics`` evaluator scores."""
  train, seqs, items = split_inputs(data_cfg, split, need=feature_names)
  return MetricInputs(train, seqs, musics_of(items, feature_names))


def processed_test_sequences(split: str = "test"):
  """The preprocessed real dataset's ``split`` (with audio) as ``unseen.TestSequence``s."""
  from d2m_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from d2m_jax.metrics import unseen  # pylint: disable=import-outside-toplevel
  from d2m_jax.train.defaults import data_config  # pylint: disable=import-outside-toplevel
  cfg = data_config()
  cfg.source = "music_to_dance"
  return unseen.load_processed_split(pipeline.processed_dir(cfg), split)


def _manifest_splits() -> Dict[str, str]:
  """Sequence -> split from the preprocessed real dataset's manifest ({} when absent)."""
  try:
    import ml_collections  # pylint: disable=import-outside-toplevel
    from d2m_jax.data import ingest, pipeline  # pylint: disable=import-outside-toplevel
    from d2m_jax.train.defaults import data_config  # pylint: disable=import-outside-toplevel
    cfg = data_config()
    cfg.source = "music_to_dance"
    del ml_collections
    man = ingest.read_manifest(pipeline.processed_dir(cfg))
    return {r["name"]: r["split"] for r in man["sequences"]}
  except Exception:  # pylint: disable=broad-except
    return {}


@dataclasses.dataclass
class ClipSet:
  """Per-clip features of one row."""
  kinetic: np.ndarray       # (N, 3J)
  kinetic_aist: np.ndarray  # (N, 3J) the field's (AIST++) convention
  geometric: Optional[np.ndarray]  # (N, 32) or None (2D)
  bas_motion: np.ndarray    # (N,)
  bas_music: np.ndarray     # (N,)
  pfc: Optional[np.ndarray]  # (N,) or None
  styles: np.ndarray        # (N,) music style labels
  clips: np.ndarray         # (N, CLIP, J, C) for the classifier


def clip_features(dances: Sequence[np.ndarray], seqs: Sequence[EvalSequence], *,
                  roots: Optional[Sequence[Optional[np.ndarray]]] = None) -> ClipSet:
  """Cuts each dance (aligned with its sequence's music) into protocol clips and featurises."""
  kin, kin_aist, geo, bm, bmu, pfc, sty, clips = [], [], [], [], [], [], [], []
  have_root = roots is not None and all(r is not None for r in roots)
  for i, (dance, seq) in enumerate(zip(dances, seqs)):
    dance = np.asarray(dance, np.float64).reshape(dance.shape[0], seq.pose.shape[1], -1)
    is_3d = dance.shape[-1] == 3 and dance.shape[1] == 23
    for s in clip_starts(dance.shape[0]):
      c = dance[s:s + CLIP_FRAMES]
      kin.append(kinetic.kinetic_features(c, FPS))
      kin_aist.append(kinetic.kinetic_features(c, FPS, convention="aist"))
      if is_3d:
        geo.append(geometric.geometric_features(c, FPS))
      mb = beats_lib.motion_beats(c, FPS)
      music = seq.beats[(seq.beats >= s) & (seq.beats < s + CLIP_FRAMES)] - s
      bm.append(beats_lib.beat_align_score(mb, music, fps=FPS, convention="motion"))
      bmu.append(beats_lib.beat_align_score(mb, music, fps=FPS, convention="music"))
      if have_root:
        pfc.append(foot_contact.physical_foot_contact(c, roots[i][s:s + CLIP_FRAMES], FPS))
      sty.append(seq.style)
      clips.append(c.astype(np.float32))
  if not kin:
    raise ValueError(f"no {CLIP_FRAMES}-frame clip in {len(seqs)} sequences")
  return ClipSet(np.array(kin), np.array(kin_aist), np.array(geo) if geo else None, np.array(bm), np.array(bmu),
                 np.array(pfc) if have_root else None, np.array(sty), np.stack(clips))


def _f(x):
  return None if x is None else float(x)


def row_metrics(row: ClipSet, ref: ClipSet, classifier=None,
                ref_cls_feats: Optional[np.ndarray] = None) -> Dict[str, Any]:
  """The table row of one clip set against the reference set."""
  out: Dict[str, Any] = {"clips": int(row.kinetic.shape[0])}
  out["FID_k"] = frechet.fid(row.kinetic, ref.kinetic)
  out["Div_k"] = frechet.diversity(row.kinetic, ref.kinetic)
  out["FID_k_aist"] = frechet.fid(row.kinetic_aist, ref.kinetic_aist)
  out["Div_k_aist"] = frechet.diversity(row.kinetic_aist, ref.kinetic_aist)
  if row.geometric is not None and ref.geometric is not None:
    out["FID_g"] = frechet.fid(row.geometric, ref.geometric)
    out["Div_g"] = frechet.diversity(row.geometric, ref.geometric)
  else:
    out["FID_g"] = out["Div_g"] = None
  out["BAS"] = float(row.bas_motion.mean())
  out["BAS_music"] = float(row.bas_music.mean())
  out["PFC"] = _f(row.pfc.mean()) if row.pfc is not None else None
  out["style_acc"] = out["FID_cls"] = None
  if classifier is not None:
    task, state = classifier
    logits, feats = task.classify(state, row.clips)
    out["style_acc"] = float(np.mean(logits.argmax(-1) == row.styles))
    if ref_cls_feats is not None:
      out["FID_cls"] = frechet.fid(feats, ref_cls_feats)
  return out


COLUMNS = (("clips", "clips", "{:d}"), ("FID_k", "FID_k ↓", "{:.2f}"), ("FID_g", "FID_g ↓", "{:.2f}"),
           ("Div_k", "Div_k", "{:.2f}"), ("Div_g", "Div_g", "{:.2f}"),
           ("FID_k_aist", "FID_k (AIST++ conv.)", "{:.2f}"),
           ("Div_k_aist", "Div_k (AIST++ conv.)", "{:.2f}"),
           ("BAS", "BAS (motion) ↑", "{:.4f}"), ("BAS_music", "BAS (music)", "{:.4f}"),
           ("PFC", "PFC ↓", "{:.3f}"), ("style_acc", "style acc ↑", "{:.3f}"),
           ("FID_cls", "FID_cls ↓", "{:.2f}"))


def markdown_table(rows: Dict[str, Dict[str, Any]]) -> str:
  head = "| row | " + " | ".join(c[1] for c in COLUMNS) + " |"
  sep = "|---|" + "---|" * len(COLUMNS)
  lines = [head, sep]
  for name, r in rows.items():
    cells = []
    for key, _, fmt in COLUMNS:
      v = r.get(key)
      cells.append("n/a" if v is None else fmt.format(v))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_outputs(out_dir: str, result: Dict[str, Any]) -> Dict[str, str]:
  """eval.json and eval.md in ``out_dir``, each written atomically."""
  os.makedirs(out_dir, exist_ok=True)
  js = os.path.join(out_dir, "eval.json")
  md = os.path.join(out_dir, "eval.md")
  files.write_text(js, json.dumps(result, indent=1, default=float))
  text = ["# Evaluation", "", markdown_table(result["rows"]) if result["rows"] else
          "(no generator table: no test sequence with motion and no --model)", "", "Protocol: " +
          json.dumps(result["protocol"]), ""]
  if result.get("classifier"):
    text.append(f"Style classifier: {json.dumps(result['classifier'])}")
  if result.get("music_style"):
    from d2m_jax.metrics import style_eval  # pylint: disable=import-outside-toplevel
    text += ["", "## Music style", "", style_eval.markdown_table(result["music_style"]), ""]
    for name, rep in result["music_style"].items():
      text.append(f"{name} confusion [true][pred] {rep['class_names']}: {rep['confusion']}")
  files.write_text(md, "\n".join(text) + "\n")
  return {"json": js, "markdown": md}


# ------------------------------------------------------------ the evaluator inside training ---
def generated_row(task, state, seqs: Sequence[EvalSequence], musics, ref: ClipSet,
                  classifier=None, ref_cls_feats: Optional[np.ndarray] = None) -> Dict[str, Any]:
  """The table row of ``task``'s dances: one ``generate`` call per sequence (seed ``SEED``,
  one sample) on ``musics[i]`` (a ``generate.Music``), cut into the protocol's clips and scored
  against ``ref``. ``launch/evaluate.py`` and the ``dance_metrics`` evaluator both call it."""
  from d2m_jax import generate  # pylint: disable=import-outside-toplevel
  dances = [generate.generate_dance(task, state, m, num_samples=1, seed=SEED)[0] for m in musics]
  return row_metrics(clip_features(dances, seqs), ref, classifier, ref_cls_feats)


def _register_dance_metrics():
  """Registers the ``dance_metrics`` evaluator kind with the engine's registry (this module is
  above the engine: the launchers import it, so the loop can run it)."""
  from d2m_jax.train import evaluators  # pylint: disable=import-outside-toplevel

  @evaluators.register("dance_metrics")
  def dance_metrics(ctx, state, spec) -> Dict[str, Any]:
    """The paper metrics (FID_k, FID_g, Div_k, Div_g in both kinetic conventions, BAS in both
    conventions) of the task's dances for every sequence with audio of ``spec.split`` of the
    run's data (``config.data.portable`` when set: an export made with ``--for_eval``; else the
    processed dataset), against the train split's clips, as in this module's protocol;
    ``real_<metric>``: the split's real dances scored the same way (the floor)."""
    cache = ctx.cache.setdefault(f"dance_metrics/{spec.split}", {})
    if not cache:
      inputs = metric_inputs(ctx.config.data, spec.split, tuple(ctx.task.generation_features))
      train, seqs = inputs.train, inputs.seqs
      if not seqs:
        raise ValueError(f"dance_metrics: no sequence with audio in the {spec.split!r} split")
      cache["ref"] = clip_features([s.pose for s in train], train, roots=[s.root for s in train])
      cache["seqs"], cache["musics"] = seqs, inputs.musics
      real = row_metrics(clip_features([s.pose for s in seqs], seqs,
                                       roots=[s.root for s in seqs]), cache["ref"])
      cache["real"] = {f"real_{k}": real[k] for k in REAL_METRICS if real[k] is not None}
    row = generated_row(ctx.task, state, cache["seqs"], cache["musics"], cache["ref"])
    return {**{k: v for k, v in row.items() if v is not None}, **cache["real"]}

  return dance_metrics


dance_metrics_evaluator = _register_dance_metrics()
