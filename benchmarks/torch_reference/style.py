"""PyTorch peers of the two music style classifiers (``dancing2music.md`` §2.2).

* ``paper``: ``AudioClassifier_rnn``: learned h0 (1,1,30), GRU(28->30), last output = style
  vector, head Linear(30,30)-ReLU-Linear(30,C); 30 frames. 6,453 parameters at C=3.
* ``improved``: ``MusicStyleExtractor``: learned h0 (1,1,512) repeated to both layers,
  GRU(28->512, 2 layers), last output -> Linear(512,30) (the style vector), head
  ReLU-Dropout(0.1)-Linear(30,30)-ReLU-Dropout(0.1)-Linear(30,C); 59 frames. 2,425,373 at C=3.

Training step: cross-entropy + Adam(2e-4), as WeiyuDu's ``model_style.py`` (the NVlabs repo has no
training code for the classifier).
"""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.torch_reference import Peer, autocast, prepare


class StyleClassifier(nn.Module):
  def __init__(self, variant: str, num_classes: int = 4, feat: int = 28):
    super().__init__()
    if variant == "paper":
      hidden, layers, style = 30, 1, None
      self.head = nn.Sequential(nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, num_classes))
    elif variant == "improved":
      hidden, layers, style = 512, 2, 30
      self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.1), nn.Linear(30, 30), nn.ReLU(),
                                nn.Dropout(0.1), nn.Linear(30, num_classes))
    else:
      raise ValueError(variant)
    self.layers = layers
    self.h0 = nn.Parameter(torch.randn(1, 1, hidden))
    self.gru = nn.GRU(feat, hidden, num_layers=layers, batch_first=True)
    self.to_style = nn.Linear(hidden, style) if style else nn.Identity()

  def forward(self, x):
    h0 = self.h0.expand(self.layers, x.shape[0], -1).contiguous()
    out, _ = self.gru(x, h0)
    return self.head(self.to_style(out[:, -1]))


def build(batch_size: int, *, variant: str = "paper", device: str = "cpu",
          dtype=torch.float32, num_classes: int = 4, compile: bool = False,
          amp: bool = False) -> Peer:
  frames = 30 if variant == "paper" else 59
  model = prepare(StyleClassifier(variant, num_classes).to(device=device, dtype=dtype))
  opt = torch.optim.Adam(model.parameters(), lr=2e-4)
  g = torch.Generator().manual_seed(0)
  x = torch.randn(batch_size, frames, 28, generator=g).to(device=device, dtype=dtype)
  y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
  loss_fn = nn.CrossEntropyLoss()
  fwd = torch.compile(model) if compile else model

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast(device, amp):
      loss = loss_fn(fwd(x).float(), y)
    loss.backward()
    opt.step()

  return Peer(step, batch_size, sum(p.numel() for p in model.parameters()),
              f"{variant}: GRU-{'30' if variant == 'paper' else '512x2'}, {frames} frames", model)
