"""Music style classifiers of Dancing2Music (spec dancing2music.md section 2.2).

Both share one module, :class:`MusicStyleClassifier`:

* paper (NVlabs ``AudioClassifier_rnn(10, 30, 28, cls)``): learned h0 (1, 1, 30) ~ N(0, 1),
  GRU(28 -> 30, 1 layer); the last step's output is the 30-d style vector; head
  Linear(30, 30) -> ReLU -> Linear(30, cls). 6,453 parameters for 3 classes.
* improved (WeiyuDu ``MusicStyleExtractor(10, 512, 30, 28, cls, num_layers=2)``): learned h0
  (1, 1, 512) repeated to both layers, GRU(28 -> 512, 2 layers, no inter-layer dropout), last
  top-layer output -> Linear(512, 30) = the style vector; head ReLU -> Dropout(0.1) ->
  Linear(30, 30) -> ReLU -> Dropout(0.1) -> Linear(30, cls). 2,425,373 parameters for 3 classes.

Inputs are z-scored ``d2m28`` frames (B, T, 28). PyTorch-default initialisation throughout
(GRU and Linear U(+-1/sqrt(fan)), h0 N(0, 1)).

:func:`get_style` gives the 30-d style vector from a parameter tree alone (the architecture is
read from the parameter shapes), for the Dancing2Music composition stage.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from d2m_jax.nn import GRU, TorchDense

STYLE_DIM = 30


class MusicStyleClassifier(nn.Module):
  """GRU style extractor + MLP classifier head (paper or improved variant)."""
  hidden: int = 30
  num_layers: int = 1
  num_classes: int = 4
  project: bool = False          # improved: Linear(hidden -> 30) gives the style vector
  head_relu_first: bool = False  # improved: ReLU (+ dropout) on the style vector first
  dropout_rate: float = 0.0      # improved: 0.1 before each head Linear
  dtype: Any = jnp.float32
  rnn_impl: str = "auto"    # d2m_jax.nn.rnn.RNN_IMPLS (scan | unrolled | pallas | auto)

  def setup(self):
    self.h0 = self.param("h0", nn.initializers.normal(1.0), (1, 1, self.hidden), jnp.float32)
    self.gru = GRU(hidden=self.hidden, num_layers=self.num_layers, dtype=self.dtype,
                   impl=self.rnn_impl)
    if self.project:
      self.style_proj = TorchDense(STYLE_DIM, dtype=self.dtype)
    self.fc1 = TorchDense(STYLE_DIM, dtype=self.dtype)
    self.fc2 = TorchDense(self.num_classes, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout_rate)

  def style(self, feats: jax.Array) -> jax.Array:
    """(B, T, 28) z-scored audio features -> (B, 30) style vector (float32)."""
    B = feats.shape[0]
    h0 = jnp.broadcast_to(self.h0, (self.num_layers, B, self.hidden))
    out, _ = self.gru(feats, h0)
    s = out[:, -1]
    if self.project:
      s = self.style_proj(s)
    return s.astype(jnp.float32)

  def classify(self, s: jax.Array, deterministic: bool = True) -> jax.Array:
    if self.head_relu_first:
      s = self.drop(nn.relu(s), deterministic=deterministic)
    s = self.fc1(s)
    s = nn.relu(s)
    if self.head_relu_first:
      s = self.drop(s, deterministic=deterministic)
    return self.fc2(s).astype(jnp.float32)

  def __call__(self, feats: jax.Array, deterministic: bool = True) -> jax.Array:
    """Logits (B, num_classes)."""
    return self.classify(self.style(feats), deterministic=deterministic)


def from_config(model_cfg, dtype=jnp.float32) -> MusicStyleClassifier:
  """The module for ``config.model`` (fields hidden, num_layers, num_classes, project,
  head_relu_first, dropout_rate)."""
  return MusicStyleClassifier(
      hidden=int(model_cfg.hidden), num_layers=int(model_cfg.num_layers),
      num_classes=int(model_cfg.num_classes), project=bool(model_cfg.project),
      head_relu_first=bool(model_cfg.head_relu_first),
      dropout_rate=float(model_cfg.dropout_rate), dtype=dtype,
      rnn_impl=str(model_cfg.get("rnn_impl", "auto")))


def module_from_params(params, dtype=jnp.float32,
                       rnn_impl: str = "auto") -> MusicStyleClassifier:
  """Rebuilds the module whose parameters ``params`` are (shapes say which variant)."""
  hidden = params["h0"].shape[-1]
  gru = params["gru"]
  num_layers = sum(1 for k in gru if k.startswith("w_hh_l") and not k.endswith("_reverse"))
  project = "style_proj" in params
  num_classes = params["fc2"]["dense"]["kernel"].shape[-1]
  return MusicStyleClassifier(hidden=hidden, num_layers=num_layers, num_classes=num_classes,
                              project=project, head_relu_first=project,
                              dropout_rate=0.1 if project else 0.0, dtype=dtype,
                              rnn_impl=rnn_impl)


def get_style(params, feats: jax.Array, norm: Optional[Tuple[jax.Array, jax.Array]] = None,
              dtype=jnp.float32) -> jax.Array:
  """The 30-d music style vector.

  Args:
    params: the classifier's flax ``params`` dict (``state.params`` of the style task).
    feats: (B, T, 28) ``d2m28`` frames (any T: the whole song works; the GRU scans it).
    norm: optional (mean, std) (28,) to z-score raw features with (``state.feat_mean``,
      ``state.feat_std``); None when ``feats`` are already z-scored.
  Returns:
    (B, 30) float32; no gradient flows into ``params`` (the original freezes the extractor).
  """
  params = jax.lax.stop_gradient(params)
  if norm is not None:
    mean, std = norm
    feats = (feats - mean) / std
  module = module_from_params(params, dtype)
  return module.apply({"params": params}, feats, method=MusicStyleClassifier.style)
