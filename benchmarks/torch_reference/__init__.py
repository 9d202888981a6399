"""PyTorch peers of our models, for side-by-side throughput (benchmarks only; never imported by
the package or its tests).

Written here from the specs (``../shared/specs/dancing2music.md`` §2, ``wgan_learn2dance_kakashi.md``
§1.4), not copied: the same layer sizes, losses and update order as the originals, built the way a
competent PyTorch user would run them (``nn.GRU`` -> cuDNN/oneDNN, no host syncs inside a step, no
``.item()`` until the end, ``zero_grad(set_to_none=True)``, frozen modules under ``no_grad``).

Each model module exposes ``build(batch_size, device="cpu", dtype=torch.float32, **kw)`` returning
a :class:`Peer`: ``step()`` runs one complete training iteration on a fixed synthetic batch already
on the device, ``examples`` is the number of examples it consumes.

Threads: ``torch.set_num_threads`` is left to the caller (``benchmarks/compare.py --torch_threads``);
on the 2-vCPU VM one thread is faster for the small GRUs and two for the GRU-1024 stages
(``dancing2music.md`` §5).

Requirements: ``benchmarks/requirements-torch.txt`` (torch 2.13.0 CPU), installed OUTSIDE the
project venv (``pip install --target /work/torch_site torch==2.13.0`` and ``PYTHONPATH``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

MODELS = ("style_paper", "style_improved", "d2m_decomposition", "d2m_composition", "wgan_audio")


@dataclasses.dataclass
class Peer:
  step: Callable[[], None]
  examples: int
  params: int
  note: str = ""


def build(model: str, batch_size: int, **kw) -> Peer:
  """The PyTorch peer of ``model`` (one of :data:`MODELS`)."""
  if model in ("style_paper", "style_improved"):
    from benchmarks.torch_reference import style
    return style.build(batch_size, variant=model.split("_")[1], **kw)
  if model == "d2m_decomposition":
    from benchmarks.torch_reference import d2m
    return d2m.build_decomposition(batch_size, **kw)
  if model == "d2m_composition":
    from benchmarks.torch_reference import d2m
    return d2m.build_composition(batch_size, **kw)
  if model == "wgan_audio":
    from benchmarks.torch_reference import wgan
    return wgan.build(batch_size, **kw)
  raise ValueError(f"no PyTorch peer for model {model!r}; have {MODELS}")
