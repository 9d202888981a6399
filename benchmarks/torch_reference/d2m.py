"""PyTorch peers of the Dancing2Music training steps (``dancing2music.md`` §2.3, §2.4).

Layer sizes, losses, loss weights, optimisers, clipping and update order as in NVlabs'
``networks.py`` / ``model_decomp.py`` / ``model_comp.py`` (written here from the spec; parameter
counts are checked against the spec's ``[run]`` values by :func:`param_counts`). Where the
original does something a competent user would not, the peer does what our JAX step does, so
that the comparison is of frameworks, not of algorithms:

* decomposition: the four ``stdp_dec`` calls (two self, two cross reconstructions) are one call
  on a 4x batch (the original calls the decoder four times; same maths);
* composition: ``movement_enc``, ``initp_enc`` and the style extractor (all frozen) run under
  ``torch.no_grad`` (the original back-propagates into the frozen ``movement_enc`` and throws the
  gradients away, §2.4); the discriminators' parameters are excluded from the generator backward;
* composition phase 3 (style regression): the original's third backward goes through weights
  that phase 2 changed in place and fails on PyTorch >= 1.5. We use option (a) of §2.4:
  **recompute** the ``dance_enc`` / ``audstyle_enc`` forward after the phase-2 update, then
  step ``dance_enc``, ``audstyle_enc`` and ``dance_reg``.

One example = one unit pair (decomposition, the original's sample) or one 3-unit clip with its
30 audio frames (composition).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_reference import Peer, autocast, prepare


def _mlp_block(i, o):
  return [nn.Linear(i, o), nn.LayerNorm(o), nn.LeakyReLU(0.2)]


class InitPoseEnc(nn.Module):
  def __init__(self, pose=28, z=10):
    super().__init__()
    self.body = nn.Sequential(*_mlp_block(pose, 64), *_mlp_block(64, 64))
    self.mean, self.logvar = nn.Linear(64, z), nn.Linear(64, z)

  def forward(self, x):
    h = self.body(x)
    return self.mean(h), self.logvar(h)


class InitPoseDec(nn.Module):
  def __init__(self, pose=28, z=10):
    super().__init__()
    self.body = nn.Sequential(*_mlp_block(z, 64), *_mlp_block(64, 64), nn.Linear(64, pose))

  def forward(self, z):
    return self.body(z)


class MovementEnc(nn.Module):
  def __init__(self, pose=28, z=512, hidden=1024):
    super().__init__()
    self.h0 = nn.Parameter(torch.randn(2, 1, hidden))
    self.gru = nn.GRU(pose, hidden, batch_first=True, bidirectional=True)
    self.mean, self.logvar = nn.Linear(2 * hidden, z), nn.Linear(2 * hidden, z)
    self.hidden = hidden

  def forward(self, x):
    out, _ = self.gru(x, self.h0.expand(-1, x.shape[0], -1).contiguous())
    H = self.hidden
    feat = torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=1)
    return self.mean(feat), self.logvar(feat)


class StandardPoseDec(nn.Module):
  def __init__(self, pose=28, z_init=10, z_mov=512, length=32, hidden=1024):
    super().__init__()
    self.length = length
    self.init_h = nn.Linear(z_init + z_mov, hidden)
    self.gru = nn.GRU(z_mov, hidden, batch_first=True)
    self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                             nn.Linear(hidden, pose))

  def forward(self, z_init, z_mov):
    h0 = self.init_h(torch.cat([z_init, z_mov], 1)).unsqueeze(0)
    x = z_mov.unsqueeze(1).expand(-1, self.length, -1)
    out, _ = self.gru(x, h0)
    return self.out(out)


class DanceEnc(nn.Module):
  def __init__(self, z_mov=512, z_dance=512, hidden=1024):
    super().__init__()
    self.h0 = nn.Parameter(torch.randn(1, 1, hidden))
    self.gru = nn.GRU(2 * z_mov, hidden, batch_first=True)
    self.mean, self.logvar = nn.Linear(hidden, z_dance), nn.Linear(hidden, z_dance)

  def forward(self, mu, logvar):  # (B, 3, 512) each
    out, _ = self.gru(torch.cat([mu, logvar], 2), self.h0.expand(-1, mu.shape[0], -1).contiguous())
    h = out[:, -1]
    return self.mean(h), self.logvar(h)


class DanceDec(nn.Module):
  def __init__(self, z_dance=512, z_mov=512, hidden=1024, length=3):
    super().__init__()
    self.length = length
    self.init_h = nn.Linear(z_dance, hidden)
    self.gru = nn.GRU(z_dance, hidden, batch_first=True)
    self.body = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU())
    self.mean, self.logvar = nn.Linear(hidden, z_mov), nn.Linear(hidden, z_mov)

  def forward(self, z):
    out, _ = self.gru(z.unsqueeze(1).expand(-1, self.length, -1), self.init_h(z).unsqueeze(0))
    h = self.body(out).reshape(-1, out.shape[-1])  # (B*3, H), batch-major
    return self.mean(h), self.logvar(h)


class AudstyleEnc(nn.Module):
  def __init__(self, style=30, z_dance=512, noise=30):
    super().__init__()
    self.noise = noise
    self.body = nn.Sequential(*_mlp_block(style + noise, 64), *_mlp_block(64, 128))
    self.mean, self.logvar = nn.Linear(128, z_dance), nn.Linear(128, z_dance)

  def forward(self, style):
    eps = torch.randn(style.shape[0], self.noise, device=style.device, dtype=style.dtype)
    h = self.body(torch.cat([style, eps], 1))
    return self.mean(h), self.logvar(h)


class Dance2Style(nn.Module):
  def __init__(self, z_dance=512, style=30):
    super().__init__()
    self.body = nn.Sequential(*_mlp_block(z_dance, 512), *_mlp_block(512, 256),
                              *_mlp_block(256, 128), nn.Linear(128, style))

  def forward(self, z):
    return self.body(z)


class DanceAudDis2(nn.Module):
  def __init__(self, aud=28, z_mov=512, length=3):
    super().__init__()
    self.move = nn.Sequential(*_mlp_block(2 * z_mov * length, 1024), *_mlp_block(1024, 512),
                              *_mlp_block(512, 256), nn.Linear(256, 30))
    self.aud = nn.Sequential(*_mlp_block(aud, 30), *_mlp_block(30, 30))
    self.joint = nn.Linear(60, 1)

  def forward(self, movement, aud_mean):
    m = self.move(movement.reshape(movement.shape[0], -1))
    return self.joint(torch.cat([m, self.aud(aud_mean)], 1))


class PaperStyleExtractor(nn.Module):
  """``AudioClassifier_rnn(10, 30, 28)``'s style path: learned h0, GRU(28->30), last output."""

  def __init__(self):
    super().__init__()
    self.h0 = nn.Parameter(torch.randn(1, 1, 30))
    self.gru = nn.GRU(28, 30, batch_first=True)
    self.head = nn.Sequential(nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 3))

  def forward(self, aud):
    out, _ = self.gru(aud, self.h0.expand(-1, aud.shape[0], -1).contiguous())
    return out[:, -1]


def sample(mu, logvar):
  return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl(mu, logvar):
  return torch.mean(torch.sum(-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()), dim=1))


def _adam(module, lr):
  return torch.optim.Adam(module.parameters(), lr=lr, betas=(0.9, 0.999))


def _clip(module, norm=0.5):
  nn.utils.clip_grad_norm_(module.parameters(), norm, foreach=True)


def kld_coef(it):
  return 1.0 / (1.0 + math.exp(-0.0005 * (it - 15000.0)))


# ----------------------------------------------------------------------------------------------

def build_decomposition(batch_size: int, *, device="cpu", dtype=torch.float32, pose: int = 28,
                        compile: bool = False, amp: bool = False) -> Peer:
  """One DU-VAE iteration: forward, one backward of the summed loss, four Adams."""
  mods = nn.ModuleDict({"initp_enc": InitPoseEnc(pose), "initp_dec": InitPoseDec(pose),
                        "movement_enc": MovementEnc(pose), "stdp_dec": StandardPoseDec(pose)})
  prepare(mods.to(device=device, dtype=dtype))
  opts = {k: _adam(m, 2e-4) for k, m in mods.items()}
  g = torch.Generator().manual_seed(0)
  x = torch.randn(batch_size, 32, pose, generator=g)
  x1 = x.to(device=device, dtype=dtype)
  x2 = (x + 0.1 * torch.randn(batch_size, 32, pose, generator=g)).to(device=device, dtype=dtype)
  it = [0]
  B = batch_size

  def loss_fn(x1, x2, w_kl):
    mu_i, lv_i = mods["initp_enc"](torch.cat([x1[:, 0], x2[:, 0]]))
    z_i = sample(mu_i, lv_i)
    mu_m, lv_m = mods["movement_enc"](torch.cat([x1, x2]))
    z_m = sample(mu_m, lv_m)
    zi1, zi2 = z_i[:B], z_i[B:]
    zm1, zm2 = z_m[:B], z_m[B:]
    dec = mods["stdp_dec"](torch.cat([zi1, zi2, zi1, zi2]), torch.cat([zm1, zm2, zm2, zm1]))
    rec1, rec2, cr1, cr2 = dec.chunk(4)
    mods["initp_dec"](z_i)  # computed, unused in any loss (as the original)
    r = torch.randperm(31, device=x1.device)[:4]
    singles = x1[:, r].transpose(0, 1).reshape(-1, x1.shape[-1]).detach()
    mu_s, lv_s = mods["initp_enc"](singles)
    single_rec = mods["initp_dec"](sample(mu_s, lv_s))
    return (w_kl * kl(mu_i, lv_i) + F.l1_loss(single_rec, singles) + w_kl * kl(mu_m, lv_m)
            + F.l1_loss(rec1, x1) + F.l1_loss(rec2, x2) + F.l1_loss(cr1, x1) + F.l1_loss(cr2, x2)
            + torch.mean(torch.abs(zm1 - zm2)))

  fwd = torch.compile(loss_fn) if compile else loss_fn

  def step():
    for o in opts.values():
      o.zero_grad(set_to_none=True)
    with autocast(device, amp):
      loss = fwd(x1, x2, 0.01 * kld_coef(it[0]))
    loss.backward()
    _clip(mods["movement_enc"])
    _clip(mods["stdp_dec"])
    for o in opts.values():
      o.step()
    it[0] += 1

  return Peer(step, batch_size, sum(p.numel() for p in mods.parameters()),
              "DU-VAE, one unit pair per example, 4 Adams, clip 0.5 (movement_enc, stdp_dec)", mods)


def build_composition(batch_size: int, *, device="cpu", dtype=torch.float32, pose: int = 28,
                      compile: bool = False, amp: bool = False) -> Peer:
  """One composition iteration: D step, G step, style-regression step (recomputed forward).

  ``compile``: every module wrapped in ``torch.compile`` (the optimiser steps between the three
  phases stay eager); ``amp``: the forward passes under bfloat16 autocast.
  """
  m = nn.ModuleDict({
      "initp_enc": InitPoseEnc(pose), "movement_enc": MovementEnc(pose),
      "stdp_dec": StandardPoseDec(pose), "dance_enc": DanceEnc(), "dance_dec": DanceDec(),
      "audstyle_enc": AudstyleEnc(), "dance_reg": Dance2Style(),
      "dance_aud_dis": DanceAudDis2(length=3), "zdance_dis": DanceAudDis2(length=1),
      "style_extractor": PaperStyleExtractor()})
  prepare(m.to(device=device, dtype=dtype))
  for k in ("initp_enc", "movement_enc", "style_extractor"):
    m[k].requires_grad_(False)
  opt = {k: _adam(m[k], 2e-4) for k in ("dance_enc", "dance_dec", "audstyle_enc", "dance_reg",
                                        "dance_aud_dis", "zdance_dis")}
  opt["stdp_dec"] = _adam(m["stdp_dec"], 2e-5)
  trained = sum(p.numel() for k in opt for p in m[k].parameters())
  modules = m
  if compile:  # same parameters, compiled forwards (optimisers hold the parameters already)
    m = {k: torch.compile(v) for k, v in m.items()}
  g = torch.Generator().manual_seed(0)
  B = batch_size
  units = torch.randn(B, 3, 32, pose, generator=g).to(device=device, dtype=dtype)
  aud = torch.randn(B, 30, 28, generator=g).to(device=device, dtype=dtype)
  ones = torch.ones(B, 1, device=device, dtype=dtype)
  zeros = torch.zeros(B, 1, device=device, dtype=dtype)
  bce = F.binary_cross_entropy_with_logits
  discs = (m["dance_aud_dis"], m["zdance_dis"])

  def step():
    with autocast(device, amp):
      _step()

  def _step():
    seq = units.reshape(3 * B, 32, pose)
    with torch.no_grad():
      aud_style = m["style_extractor"](aud)
      aud_mean = aud.mean(1)
      z_init = sample(*m["initp_enc"](seq[:, 0]))
      mu_m, lv_m = m["movement_enc"](seq)
    mu_m3, lv_m3 = mu_m.view(B, 3, -1), lv_m.view(B, 3, -1)
    # real path
    mu_d, lv_d = m["dance_enc"](mu_m3, lv_m3)
    z_dance = sample(mu_d, lv_d)
    mu_r, lv_r = m["dance_dec"](z_dance)
    recon = m["stdp_dec"](z_init, sample(mu_r, lv_r))
    # fake path (latent only)
    mu_df, lv_df = m["audstyle_enc"](aud_style)
    z_dance_f = sample(mu_df, lv_df)
    mu_f, lv_f = m["dance_dec"](z_dance_f)
    real_m = torch.cat([mu_r, lv_r], 1).view(B, 3, -1)
    fake_m = torch.cat([mu_f, lv_f], 1).view(B, 3, -1)
    real_z = torch.cat([mu_d, lv_d], 1)
    fake_z = torch.cat([mu_df, lv_df], 1)
    # phase 1: discriminators on detached inputs
    for k in ("dance_aud_dis", "zdance_dis"):
      opt[k].zero_grad(set_to_none=True)
    d_loss = (bce(discs[0](real_m.detach(), aud_mean), ones)
              + bce(discs[0](fake_m.detach(), aud_mean), zeros)
              + bce(discs[1](real_z.detach(), aud_mean), ones)
              + bce(discs[1](fake_z.detach(), aud_mean), zeros))
    d_loss.backward()
    for k, d in zip(("dance_aud_dis", "zdance_dis"), discs):
      _clip(d)
      opt[k].step()
    # phase 2: generator (fresh D forward with the updated D; no grads into D params)
    gen = ("dance_enc", "dance_dec", "audstyle_enc", "stdp_dec")
    for k in gen:
      opt[k].zero_grad(set_to_none=True)
    for d in discs:
      d.requires_grad_(False)
    g_loss = (0.01 * kl(mu_r, lv_r) + 0.01 * kl(mu_d, lv_d) + F.l1_loss(mu_r, mu_m)
              + F.l1_loss(lv_r, lv_m) + 10.0 * F.l1_loss(recon, seq)
              + bce(discs[0](fake_m, aud_mean), ones) + bce(discs[1](fake_z, aud_mean), ones))
    g_loss.backward()
    for d in discs:
      d.requires_grad_(True)
    for k in gen:
      _clip(m[k])
      opt[k].step()
    # phase 3: style regression, forward recomputed with the updated weights (choice (a))
    sty = ("dance_enc", "audstyle_enc", "dance_reg")
    for k in sty:
      opt[k].zero_grad(set_to_none=True)
    z_dance = sample(*m["dance_enc"](mu_m3, lv_m3))
    z_dance_f = sample(*m["audstyle_enc"](aud_style))
    s_loss = (F.mse_loss(m["dance_reg"](z_dance), aud_style)
              + F.mse_loss(m["dance_reg"](z_dance_f), aud_style))
    s_loss.backward()
    for k in sty:
      _clip(m[k])
      opt[k].step()

  return Peer(step, batch_size, trained,
              "composition: D, G, style phases; frozen encoders under no_grad; phase 3 recomputed",
              modules)


def param_counts(pose: int = 28):
  """Parameter counts of every module (to check against the spec's [run] values)."""
  mods = {"InitPose_Enc": InitPoseEnc(pose), "InitPose_Dec": InitPoseDec(pose),
          "Movement_Enc": MovementEnc(pose), "StandardPose_Dec": StandardPoseDec(pose),
          "Dance_Enc": DanceEnc(), "Dance_Dec": DanceDec(), "Audstyle_Enc": AudstyleEnc(),
          "Dance2Style": Dance2Style(), "DanceAud_Dis2(3)": DanceAudDis2(length=3),
          "DanceAud_Dis2(1)": DanceAudDis2(length=1)}
  return {k: sum(p.numel() for p in v.parameters()) for k, v in mods.items()}


SPEC_PARAM_COUNTS = {"InitPose_Enc": 7572, "InitPose_Dec": 6940, "Movement_Enc": 8576000,
                     "StandardPose_Dec": 6340636, "Dance_Enc": 7348224, "Dance_Dec": 7351296,
                     "Audstyle_Enc": 144704, "Dance2Style": 432542,
                     "DanceAud_Dis2(3)": 3816155, "DanceAud_Dis2(1)": 1719003}
