"""PyTorch peer of the phase-3 music-conditioned WGAN step (``wgan_learn2dance_kakashi.md`` §1.4).

Generator ``SequenceGenerator`` (default encoder): per frame a 0.2 s window (3200 samples, stride
640, from the clip zero-padded by 1280 each side: exactly 120 windows) -> AudioEncoder
``Conv1d(1->32, k250, s50, p124)-BN-ReLU``, 5 x ``Conv1d(c->2c, k4, s2, p1)-BN-ReLU``,
``Conv1d(1024->250, k2)`` -> ``GRU(250->240, 3 layers)``, plus ``GRU(10->10)`` over N(0,1) noise,
concatenated (250) -> FrameDecoder ``Linear(250->256)-BN-ReLU``, 2 residual ``LinearBlock``\\ s
(BN), ``Linear(256->69)``. The residual block is the fixed one (``x + ReLU(BN(fc2(ReLU(BN(fc1 x)))))``;
the original discards ``fc1``'s output), as our JAX default.

Critic ``SequenceDiscriminator``: stick branch ``Conv1d(69->128, k25, p12)-ReLU``, 2 temporal
blocks (k7), ``Conv1d(128->100, k120)``; audio branch on the raw 4.8 s clip, 5 x
``Conv1d(k25, s4, p11)-ReLU`` (1->32->...->512), ``Conv1d(512->100, k75)``; fusion
``Linear(200->128)-ReLU-Linear(128->1)``.

One iteration, as the JAX task: ``n_critic`` (8) critic updates, each on its own slice of the
batch, loss ``D(fake, a) - D(real, a) + 10 * GP`` with the two-sided penalty on both inputs
(pose interpolate, real audio; ``create_graph=True``), the generator's fakes detached; then one
generator update on the last slice, ``-D(fake, a) + beta * L1(real, fake)`` (beta 1; the
constant ``D(real, a)`` term of the original is left out: it has no generator gradient).
Adam 2e-4 for both. Competent-PyTorch details: the audio branch runs once for the real and fake
scores of a critic update; no ``.item()`` inside the step.

One example = one 4.8 s window; a step consumes ``batch_size`` = n_critic x per-update windows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_reference import Peer, autocast, prepare

T, HOP, WINDOW, PAD = 120, 640, 3200, 1280
WAVE = T * HOP + 2 * PAD  # 79360


class AudioEncoder(nn.Module):
  def __init__(self, code=250, ch=32, down=5):
    super().__init__()
    layers = [nn.Conv1d(1, ch, 250, 50, 124), nn.BatchNorm1d(ch), nn.ReLU()]
    c = ch
    for _ in range(down):
      layers += [nn.Conv1d(c, 2 * c, 4, 2, 1), nn.BatchNorm1d(2 * c), nn.ReLU()]
      c *= 2
    layers += [nn.Conv1d(c, code, 2)]
    self.net = nn.Sequential(*layers)

  def forward(self, w):  # (N, 3200)
    return self.net(w.unsqueeze(1)).squeeze(-1)


class LinearBlock(nn.Module):
  def __init__(self, size):
    super().__init__()
    self.fc1, self.bn1 = nn.Linear(size, size), nn.BatchNorm1d(size)
    self.fc2, self.bn2 = nn.Linear(size, size), nn.BatchNorm1d(size)

  def forward(self, x):
    h = F.relu(self.bn1(self.fc1(x)))
    return x + F.relu(self.bn2(self.fc2(h)))


class Generator(nn.Module):
  def __init__(self, pose=69, code=250, latent=250, noise=10, size=256, cells=3):
    super().__init__()
    self.noise = noise
    self.encoder = AudioEncoder(code)
    self.audio_rnn = nn.GRU(code, latent - noise, num_layers=cells, batch_first=True)
    self.noise_rnn = nn.GRU(noise, noise, batch_first=True)
    self.decoder = nn.Sequential(nn.Linear(latent, size), nn.BatchNorm1d(size), nn.ReLU(),
                                 LinearBlock(size), LinearBlock(size), nn.Linear(size, pose))

  def forward(self, wave):  # (B, 79360) -> (B, T, pose)
    B = wave.shape[0]
    windows = wave.unfold(1, WINDOW, HOP)  # (B, 120, 3200), a view
    codes = self.encoder(windows.reshape(B * T, WINDOW)).view(B, T, -1)
    a, _ = self.audio_rnn(codes)
    n, _ = self.noise_rnn(torch.randn(B, T, self.noise, device=wave.device, dtype=wave.dtype))
    h = torch.cat([a, n], 2).reshape(B * T, -1)
    return self.decoder(h).view(B, T, -1)


class TemporalBlock(nn.Module):
  def __init__(self, ch, k=7):
    super().__init__()
    self.c1, self.c2 = nn.Conv1d(ch, ch, k, padding=k // 2), nn.Conv1d(ch, ch, k, padding=k // 2)

  def forward(self, x):
    return x + F.relu(self.c2(F.relu(self.c1(x))))


class Critic(nn.Module):
  def __init__(self, pose=69, ch=128, code=100, hidden=128):
    super().__init__()
    self.stick = nn.Sequential(nn.Conv1d(pose, ch, 25, padding=12), nn.ReLU(),
                               TemporalBlock(ch), TemporalBlock(ch), nn.Conv1d(ch, code, T))
    layers, c = [], 1
    for i in range(5):
      layers += [nn.Conv1d(c, 32 * 2 ** i, 25, 4, 11), nn.ReLU()]
      c = 32 * 2 ** i
    layers += [nn.Conv1d(c, code, 75)]
    self.audio = nn.Sequential(*layers)
    self.fusion = nn.Sequential(nn.Linear(2 * code, hidden), nn.ReLU(), nn.Linear(hidden, 1))

  def audio_code(self, clip):  # (B, 76800)
    return self.audio(clip.unsqueeze(1)).squeeze(-1)

  def score(self, pose, acode):  # pose (B, T, P)
    s = self.stick(pose.transpose(1, 2)).squeeze(-1)
    return self.fusion(torch.cat([s, acode], 1))

  def forward(self, pose, clip):
    return self.score(pose, self.audio_code(clip))


def build(batch_size: int, *, device="cpu", dtype=torch.float32, n_critic: int = 8,
          gamma: float = 10.0, beta: float = 1.0, pose: int = 69, compile: bool = False,
          amp: bool = False) -> Peer:
  """``compile``: the generator only (``torch.compile`` does not support the double backward
  of the critic's gradient penalty); ``amp``: forward passes under bfloat16 autocast."""
  if batch_size % n_critic:
    raise ValueError(f"batch {batch_size} is not a multiple of n_critic={n_critic}")
  b = batch_size // n_critic
  G, D = prepare(Generator(pose).to(device, dtype)), Critic(pose).to(device, dtype)
  opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
  opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
  n_params = sum(p.numel() for p in G.parameters()) + sum(p.numel() for p in D.parameters())
  modules = nn.ModuleDict({"generator": G, "critic": D})
  if compile:
    G = torch.compile(G)
  g = torch.Generator().manual_seed(0)
  real_all = torch.rand(n_critic, b, T, pose, generator=g).to(device, dtype)
  wave = torch.zeros(n_critic, b, WAVE)
  wave[..., PAD:-PAD] = 0.1 * torch.randn(n_critic, b, WAVE - 2 * PAD, generator=g)
  wave = wave.to(device, dtype)

  def step():
    with autocast(device, amp):
      _step()

  def _step():
    for k in range(n_critic):
      real, w = real_all[k], wave[k]
      clip = w[:, PAD:-PAD]
      with torch.no_grad():
        fake = G(w)
      opt_d.zero_grad(set_to_none=True)
      acode = D.audio_code(clip)
      wdist = D.score(real, acode).mean() - D.score(fake, acode).mean()
      alpha = torch.rand(b, 1, 1, device=device, dtype=dtype)
      x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
      clip_g = clip.detach().requires_grad_(True)
      gx, ga = torch.autograd.grad(D(x_hat, clip_g).sum(), (x_hat, clip_g), create_graph=True)
      gp = ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean() + \
           ((ga.flatten(1).norm(dim=1) - 1) ** 2).mean()
      (-wdist + gamma * gp).backward()
      opt_d.step()
    real, w = real_all[-1], wave[-1]
    opt_g.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    fake = G(w)
    g_loss = -D(fake, w[:, PAD:-PAD]).mean() + beta * F.l1_loss(fake, real)
    g_loss.backward()
    D.requires_grad_(True)
    opt_g.step()

  return Peer(step, batch_size, n_params,
              f"phase-3 WGAN-GP: {n_critic} critic updates of {b} + 1 generator update", modules)
