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

Precision rows (``benchmarks/compare.py``): ``dtype`` casts the modules (``.to(dtype)``, then
:func:`prepare` calls ``flatten_parameters()`` on every RNN so cuDNN gets one contiguous weight
buffer instead of compacting it at every call); ``amp=True`` keeps float32 modules and runs the
forward passes under ``torch.autocast(bfloat16)`` (:func:`autocast`), the mixed precision a
PyTorch user would run on a GPU; ``compile=True`` wraps the forward in ``torch.compile``
(composition: each module; WGAN: the generator only, since the gradient penalty's double backward
is not supported by ``torch.compile``).

Requirements: ``benchmarks/requirements-torch.txt`` (torch 2.13.0 CPU), installed OUTSIDE the
project venv (``pip install --target /work/torch_site torch==2.13.0`` and ``PYTHONPATH``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

MODELS = ("style_paper", "style_improved", "d2m_decomposition", "d2m_composition", "wgan_audio")


@dataclasses.dataclass
class Peer:
  step: Callable[[], None]
  examples: int
  params: int
  note: str = ""
  modules: Any = None  # the nn.Module(s) stepped (tests look at dtypes, RNN flattening)


def prepare(module):
  """After a dtype/device cast: ``flatten_parameters()`` on every RNN (one contiguous weight
  chunk for cuDNN; without it PyTorch warns "RNN module weights are not part of single
  contiguous chunk of memory" and re-compacts the weights at every call).

  bfloat16: ``nn.RNNBase.flatten_parameters`` silently does nothing for bfloat16 weights, because
  ``torch.backends.cudnn.is_acceptable`` only accepts ``CUDNN_TENSOR_DTYPES`` = {half, float,
  double} (torch 2.11-2.13 source), while ``_cudnn_rnn`` itself runs bfloat16 (that is where the
  warning comes from). So for bfloat16 RNNs bfloat16 is admitted to that set for the duration of
  the call: torch's own flattening code then packs the weights. If cuDNN refuses, the RNN stays
  as it was (and the warning, recorded by ``compare.py``, says so).
  """
  import torch
  from torch import nn
  dtypes = torch.backends.cudnn.CUDNN_TENSOR_DTYPES
  for m in module.modules():
    if not isinstance(m, nn.RNNBase):
      continue
    widen = (any(p.dtype == torch.bfloat16 for p in m.parameters())
             and torch.bfloat16 not in dtypes)
    if widen:
      dtypes.add(torch.bfloat16)
    try:
      m.flatten_parameters()
    except RuntimeError:  # cuDNN without bfloat16 RNN weights: leave them as they are
      pass
    finally:
      if widen:
        dtypes.discard(torch.bfloat16)
  return module


def autocast(device: str, enabled: bool):
  """``torch.autocast`` to bfloat16 on ``device`` when ``enabled`` (else a no-op context)."""
  import torch
  return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


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
