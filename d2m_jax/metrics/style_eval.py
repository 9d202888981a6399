"""Music-style classification scores over clips and sequences (``eval.json`` ``music_style``).

Input: for each test sequence its true style and the per-clip logits ``(N, C)`` a style model's
``task.predict_clip_logits(state, features)`` returned (the task cuts its own clips). Output, with
stable keys (documented in the evaluate docs page):

* ``clip_accuracy``: correct clips / clips, over all sequences' clips.
* ``balanced_accuracy``: mean recall over the classes that have test clips (the
  "mean of per-class recall"; classes absent from the test set are left out, not counted as 0).
* ``sequence_accuracy``: sequences whose majority vote is right / sequences with >= 1 clip. The
  vote is the most frequent per-clip argmax; a tie goes to the tied class with the largest sum of
  log-softmax over the sequence's clips (then the lowest class index).
* ``per_class``: ``{name: {"recall", "clips", "sequences", "sequences_right"}}`` (recall None
  when the class has no test clip).
* ``confusion``: ``[true][predicted]`` clip counts, rows and columns in ``class_names`` order.

Pure numpy (float64).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
  """(C, C) int64 counts, row = true class, column = predicted class."""
  conf = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(conf, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
  return conf


def per_class_recall(conf: np.ndarray) -> np.ndarray:
  """Recall per true class (NaN where the class has no example)."""
  conf = np.asarray(conf, np.float64)
  support = conf.sum(1)
  return np.where(support > 0, np.diag(conf) / np.maximum(support, 1.0), np.nan)


def balanced_accuracy(conf: np.ndarray) -> float:
  """Mean recall over the classes present (NaN when there is no example at all)."""
  r = per_class_recall(conf)
  return float(np.nanmean(r)) if np.any(~np.isnan(r)) else float("nan")


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def majority_vote(logits: np.ndarray) -> Optional[int]:
  """The sequence's predicted class from its clips' logits (N, C); None when N = 0."""
  logits = np.asarray(logits, np.float64)
  if logits.shape[0] == 0:
    return None
  counts = np.bincount(logits.argmax(-1), minlength=logits.shape[-1])
  tied = np.flatnonzero(counts == counts.max())
  if tied.size == 1:
    return int(tied[0])
  score = _log_softmax(logits).sum(0)[tied]
  return int(tied[int(np.argmax(score))])  # argmax takes the first (lowest class) on equal score


def style_report(sequences: Sequence[Tuple[str, int, np.ndarray]],
                 class_names: Sequence[str]) -> Dict[str, Any]:
  """Scores of one style model over ``(name, true_class, clip_logits (N, C))`` per sequence."""
  C = len(class_names)
  labels, preds, per_seq = [], [], []
  for name, label, logits in sequences:
    logits = np.asarray(logits, np.float64).reshape(-1, C)
    pred = logits.argmax(-1)
    vote = majority_vote(logits)
    labels.append(np.full(pred.shape, int(label), np.int64))
    preds.append(pred)
    per_seq.append(dict(name=name, label=class_names[int(label)], clips=int(pred.shape[0]),
                        clips_right=int(np.sum(pred == label)),
                        vote=None if vote is None else class_names[vote],
                        right=None if vote is None else bool(vote == label)))
  labels_a = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
  preds_a = np.concatenate(preds) if preds else np.zeros((0,), np.int64)
  conf = confusion_matrix(labels_a, preds_a, C)
  recall = per_class_recall(conf)
  voted = [s for s in per_seq if s["right"] is not None]
  per_class: Dict[str, Dict[str, Any]] = {}
  for c, cname in enumerate(class_names):
    seqs_c = [s for s in voted if s["label"] == cname]
    per_class[cname] = dict(recall=None if np.isnan(recall[c]) else float(recall[c]),
                            clips=int(conf[c].sum()), sequences=len(seqs_c),
                            sequences_right=sum(s["right"] for s in seqs_c))
  n = int(conf.sum())
  return dict(clip_accuracy=float(np.trace(conf) / n) if n else None,
              balanced_accuracy=balanced_accuracy(conf) if n else None,
              sequence_accuracy=(sum(s["right"] for s in voted) / len(voted)) if voted else None,
              per_class=per_class, confusion=conf.tolist(), class_names=list(class_names),
              clips=n, sequences=len(voted),
              sequences_without_clips=[s["name"] for s in per_seq if s["right"] is None],
              per_sequence=per_seq)


def markdown_table(reports: Dict[str, Dict[str, Any]]) -> str:
  """One row per style model: clip / balanced / sequence accuracy and per-class recall."""
  names: List[str] = []
  for r in reports.values():
    names = [n for n in r["class_names"] if r["per_class"][n]["clips"] > 0] or names
    break
  head = ("| style model | clips | clip acc | balanced acc | sequences | sequence acc (vote) | " +
          " | ".join(f"recall {n}" for n in names) + " |")
  lines = [head, "|---" * (6 + len(names)) + "|"]

  def fmt(v):
    return "n/a" if v is None else f"{v:.3f}"

  for model, r in reports.items():
    rec = [fmt(r["per_class"][n]["recall"]) + f" ({r['per_class'][n]['sequences']} seq)"
           for n in names]
    lines.append(f"| {model} | {r['clips']} | {fmt(r['clip_accuracy'])} | "
                 f"{fmt(r['balanced_accuracy'])} | {r['sequences']} | "
                 f"{fmt(r['sequence_accuracy'])} | " + " | ".join(rec) + " |")
  return "\n".join(lines)


def evaluate_model(task, state, sequences, class_names: Sequence[str],
                   log=print) -> Dict[str, Any]:
  """``style_report`` of one restored style model over ``unseen.TestSequence``s: each sequence's
  clip logits come from ``task.predict_clip_logits(state, seq.features())`` (the interface every
  music-style task implements). Sequences whose label the model has no class for are skipped."""
  if not hasattr(task, "predict_clip_logits"):
    raise ValueError(f"task {getattr(task, 'name', task)!r} has no predict_clip_logits: "
                     "not a music style model")
  items = []
  for seq in sequences:
    logits = np.asarray(task.predict_clip_logits(state, seq.features()), np.float64)
    if logits.ndim != 2 or logits.shape[1] < 1:
      raise ValueError(f"predict_clip_logits returned shape {logits.shape} for {seq.name}")
    if seq.style >= logits.shape[1]:
      log(f"{seq.name}: style {class_names[seq.style]} is not among the model's "
          f"{logits.shape[1]} classes: skipped")
      continue
    items.append((seq.name, seq.style, logits))
  if not items:
    raise ValueError("no test sequence for this style model")
  return style_report(items, list(class_names)[:items[0][2].shape[1]])
