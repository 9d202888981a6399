"""The classifier task the style, dance-style and music-style classifiers configure.

:class:`ClassifierTask` owns what the three share: the weighted cross-entropy train step (one
global weighted mean: per-example weights that sum to 1 over the GLOBAL batch, so jit, shard_map
and pmap give the same loss and gradient), the masked evaluation (:func:`masked_eval`: loss,
accuracy and the confusion matrix, exact over padded batches via ``eval_mask``) and the report
(:func:`confusion_report`: per-class recall, accuracy, balanced accuracy). A classifier
configures it through four hooks:

* :meth:`~ClassifierTask.train_inputs` -> ``(x, labels, weights, dropout key)``: the model's
  inputs (crops, normalisation), labels and loss weights (class weights, masks);
* :meth:`~ClassifierTask.train_logits`: the model in training mode;
* :meth:`~ClassifierTask.eval_logits` -> ``(logits, valid)``: evaluation logits, one row per
  example (B, C) or several clips per example (B, N, C), and which of them count;
* :meth:`~ClassifierTask.eval_extra`: further summed evaluation counts (e.g. per-sequence votes).

Optimisers stay each task's own (``self.tx``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from d2m_jax.data.skeleton import STYLES
from d2m_jax.train.parallel_utils import pmean, psum
from d2m_jax.train.task import Task


def class_names(num_classes: int) -> list:
  """The style names (C, R, T, W) for up to four classes, else the class indices."""
  if num_classes <= len(STYLES):
    return list(STYLES[:num_classes])
  return [str(i) for i in range(num_classes)]


def masked_eval(logits, labels, valid, num_classes: int, axis_name: Optional[str] = None):
  """Loss, accuracy and confusion over the valid rows of a (sharded) evaluation batch.

  Args:
    logits: (B, C) or (B, N, C) (N clips per example).
    labels: (B,) integer classes (one per example; clips share it).
    valid: (B,) or (B, N) weights, 1 for rows that count (0: padding, clips that do not fit).
    num_classes: C.
    axis_name: the device axis to sum over (None under jit).
  Returns:
    ``{"loss", "accuracy", "confusion"}``: the mean cross-entropy and accuracy over the valid
    rows of the global batch, and the [true, predicted] counts (C, C).
  """
  C = num_classes
  labels = jnp.broadcast_to(labels.reshape(labels.shape + (1,) * (logits.ndim - 2)),
                            logits.shape[:-1]).astype(jnp.int32)
  valid = jnp.broadcast_to(valid, logits.shape[:-1]).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  pred = jnp.argmax(logits, -1)
  n = psum(valid.sum(), axis_name)
  loss = psum((ce * valid).sum(), axis_name) / jnp.maximum(n, 1.0)
  acc = psum(((pred == labels) * valid).sum(), axis_name) / jnp.maximum(n, 1.0)
  onehot_t = (jax.nn.one_hot(labels, C) * valid[..., None]).reshape(-1, C)
  confusion = psum(onehot_t.T @ jax.nn.one_hot(pred, C).reshape(-1, C), axis_name)
  return {"loss": loss, "accuracy": acc, "confusion": confusion}


def confusion_report(conf, names: Sequence[str], prefix: str = "") -> Dict[str, Any]:
  """The report of a summed [true, predicted] confusion matrix (exact over all examples).

  Keys (each with ``prefix``): ``confusion``, ``class_support``, ``per_class_accuracy`` (recall,
  None for classes absent from the split), and when the matrix is not empty ``accuracy``,
  ``balanced_accuracy`` (mean recall over the classes present) and ``accuracy_<name>`` per class
  present.
  """
  conf = np.asarray(conf, np.float64)
  support = conf.sum(1)
  recall = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.nan)
  out = {f"{prefix}confusion": conf.astype(np.int64).tolist(),
         f"{prefix}class_support": support.astype(np.int64).tolist(),
         f"{prefix}per_class_accuracy": [None if np.isnan(a) else float(a) for a in recall]}
  if conf.sum() > 0:
    out[f"{prefix}accuracy"] = float(np.trace(conf) / conf.sum())
    out[f"{prefix}balanced_accuracy"] = float(np.nanmean(recall))
  for name, a in zip(names, recall):
    if not np.isnan(a):
      out[f"{prefix}accuracy_{name}"] = float(a)
  return out


class ClassifierTask(Task):
  """A classifier over ``batch[label_key]``; subclasses set the model, inputs and weights.

  State: any pytree node with ``step``, ``rng``, ``params`` and ``opt_state``; ``self.tx`` is
  the optimiser and ``self.num_classes`` the number of classes.
  """
  label_key = "style"
  # Train metric of the step: "accuracy" (fraction of the weighted rows classified right) or
  # "balanced_accuracy" (the same weighted by the loss weights: class-balanced when they are).
  train_accuracy_metric = "accuracy"
  num_classes: int

  # ---- hooks ---------------------------------------------------------------------------------
  def train_inputs(self, state, batch, axis_name):
    """-> (x, labels, weights, dropout key): weights per example, sum 1 over the GLOBAL batch
    (0 for rows that do not count)."""
    raise NotImplementedError

  def train_logits(self, params, x, rng):
    """The model's logits in training mode (dropout key ``rng``)."""
    raise NotImplementedError

  def eval_logits(self, state, batch):
    """-> (logits (B, C) or (B, N, C), valid (B,) / (B, N) or None)."""
    raise NotImplementedError

  def eval_extra(self, logits, labels, valid, axis_name) -> Dict[str, Any]:
    """Further summed evaluation counts (default none)."""
    return {}

  # ---- shared --------------------------------------------------------------------------------
  def _loss(self, params, x, labels, weights, rng):
    """This device's share of the global weighted cross-entropy (weights sum to 1 globally)."""
    logits = self.train_logits(params, x, rng)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * weights), logits

  def forward(self, state, batch):
    """The training forward pass and loss (train-mode dropout), no gradient (benchmarks)."""
    x, labels, weights, rng = self.train_inputs(state, batch, None)
    return self._loss(state.params, x, labels, weights, rng)[0]

  def train_step(self, state, batch, axis_name=None):
    x, labels, weights, rng = self.train_inputs(state, batch, axis_name)
    (loss, logits), grads = jax.value_and_grad(self._loss, has_aux=True)(
        state.params, x, labels, weights, rng)
    # Per-device shares of one global weighted mean: the global gradient is their sum.
    grads = jax.tree_util.tree_map(lambda g: psum(g, axis_name), grads)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": psum(loss, axis_name),
               self.train_accuracy_metric: self._train_accuracy(logits, labels, weights,
                                                                axis_name)}
    if axis_name is not None:  # identical on every device already; keep the engine's contract
      metrics = pmean(metrics, axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _train_accuracy(self, logits, labels, weights, axis_name):
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if self.train_accuracy_metric == "balanced_accuracy":
      return psum(jnp.sum(correct * weights), axis_name)
    counted = (weights > 0).astype(jnp.float32)
    return psum(jnp.sum(correct * counted), axis_name) / jnp.maximum(
        psum(jnp.sum(counted), axis_name), 1.0)

  def eval_step(self, state, batch, axis_name=None):
    logits, valid = self.eval_logits(state, batch)
    labels = batch[self.label_key].astype(jnp.int32)
    row = batch.get("eval_mask")
    row = jnp.ones(labels.shape, jnp.float32) if row is None else row.astype(jnp.float32)
    row = row.reshape(row.shape + (1,) * (logits.ndim - 2))
    valid = row if valid is None else valid * row
    out = masked_eval(logits, labels, valid, self.num_classes, axis_name)
    out.update(self.eval_extra(logits, labels, valid, axis_name))
    return out

  def finalize_eval(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The report of every summed confusion matrix of the evaluation (``confusion``: rows;
    ``<prefix>confusion``: e.g. ``sequence_confusion``, majority votes per sequence)."""
    names = class_names(self.num_classes)
    out = {}
    for key in metrics:
      if key.endswith("confusion"):
        out.update(confusion_report(metrics[key], names, key[:-len("confusion")]))
    out["class_names"] = names
    return out
