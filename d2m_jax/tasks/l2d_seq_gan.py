"""Task ``l2d_seq_gan``: learn2dance's latent-sequence GAN on top of a frozen pose generator.

Generator: (seq z 100, pose z 100) -> 49 latent deltas -> latent path = cumsum([pose_z, deltas])
(50 latents) -> the **frozen** pose generator of an ``l2d_pose_gan`` run (inference mode) decodes
each latent into a 2-D pose -> (B, 50, P2). Critic: bidirectional 2-layer LSTM(100) -> concat of
the first and last outputs -> block(400 -> 500) -> logit; standard GAN (BCE on logits, i.e. the
original's Sigmoid + BCELoss, non-saturating generator loss: ``NON_SATURATING`` plugged into the
package's one GAN step, :class:`d2m_jax.tasks.l2d_common.L2DGANTask`), Adam 1e-3 (0.5, 0.999).

Data: kind ``"windows"``; a random ``seq_len``-frame (50 = 2 s at 25 fps; the original: 50 frames
at 30 fps) crop of each window, projected/normalised with the pose GAN's own statistics (stored
in its checkpoint). ``config.model.pose_gan_workdir`` names the pose-GAN run to load (host side,
``prepare_host``; ``init_state`` stays traceable); when it is None a randomly initialised pose
generator is used (benchmarks and unit tests only; a warning is
logged).

Generation (unconditional; the learn2dance GAN has no music input): windows of ``seq_len``
latents chained by starting each window's path at the previous window's last latent (rescaled
onto the prior's typical norm when it has walked further out), so a song of any length gives one
continuous latent walk that stays where the pose generator was trained.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from d2m_jax.models.learn2dance import project_to_2d
from d2m_jax.models.learn2dance_gan import POSE_Z, SEQ_Z, SeqCritic, SeqGenerator
from d2m_jax.tasks import l2d_common as common
from d2m_jax.tasks.l2d_pose_gan import PoseGANTask
from d2m_jax.tasks.wgan_common import NON_SATURATING, apply_generator
from d2m_jax.train.parallel_utils import pmean


class SeqGANState(flax.struct.PyTreeNode):
  step: Any
  rng: Any
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  pose_g: Any          # frozen {"params", "batch_stats"} of the pose generator
  pose2d_mean: Any
  pose2d_scale: Any


def _frozen_pose(s):
  """What the sequence GAN keeps of a pose-GAN state: its generator and normalisation."""
  return {k: getattr(s, k) for k in ("g_params", "g_batch_stats", "pose2d_mean", "pose2d_scale")}


class SeqGANTask(common.L2DGANTask):
  name = "l2d_seq_gan"
  loss = NON_SATURATING
  num_keys = 6

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.L = int(m.seq_len)
    self.pose_task = PoseGANTask(config)
    self.G = SeqGenerator(self.L, hidden=m.hidden, bn_eps=m.bn_eps, dtype=self.dtype)
    self.D = SeqCritic(hidden=m.critic_hidden, dtype=self.dtype,
                       rnn_impl=m.get("rnn_impl", "auto"))
    self._pose_state = None   # the frozen pose generator, set by prepare_host()

  def prepare_host(self, batch, stats=None):
    """Loads the frozen pose generator of ``config.model.pose_gan_workdir`` (host side, once)."""
    del batch, stats
    wd = self.config.model.get("pose_gan_workdir")
    if wd and self._pose_state is None:
      from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel
      s, _, _ = restore_workdir(wd)
      logging.info("l2d_seq_gan: frozen pose generator from %s (step %d)", wd, int(s.step))
      self._pose_state = jax.device_get(_frozen_pose(s))

  def _random_pose_state(self, rng, batch, stats):
    if not self.config.model.get("pose_gan_workdir"):
      logging.warning("l2d_seq_gan: no config.model.pose_gan_workdir: using a RANDOM pose "
                      "generator (only meaningful for benchmarks/tests)")
    # (With a workdir but no prepare_host: a shape-only build, whose values a restore replaces.)
    return _frozen_pose(self.pose_task.init_state(rng, batch, stats))

  def init_state(self, rng, batch, stats=None, pose_state=None):
    kp, kg, kd, ks = jax.random.split(rng, 4)
    if pose_state is not None:
      ps = _frozen_pose(pose_state)
    elif self._pose_state is not None:     # loaded by prepare_host
      ps = self._pose_state
    else:
      ps = self._random_pose_state(kp, batch, stats)
    # Jitted: the engine initialises this task eagerly, and an eager flax init of scans is slow.
    gv = jax.jit(lambda k: self.G.init({"params": k}, jnp.zeros((2, SEQ_Z)),
                                       jnp.zeros((2, POSE_Z)), False))(kg)
    dv = jax.jit(lambda k: self.D.init({"params": k}, jnp.zeros((2, self.L, self.P2)), False))(kd)
    pose_g = {"params": jax.tree.map(jnp.asarray, ps["g_params"]),
              "batch_stats": jax.tree.map(jnp.asarray, ps["g_batch_stats"])}
    return SeqGANState(step=jnp.int32(0), rng=ks, g_params=gv["params"],
                       g_batch_stats=gv["batch_stats"], d_params=dv["params"],
                       g_opt=self.g_tx.init(gv["params"]), d_opt=self.d_tx.init(dv["params"]),
                       pose_g=pose_g, pose2d_mean=jnp.asarray(ps["pose2d_mean"], jnp.float32),
                       pose2d_scale=jnp.asarray(ps["pose2d_scale"], jnp.float32))

  def _decode(self, pose_g, latents):
    """(B, L, 100) latents -> (B, L, P2) normalised poses through the frozen pose generator."""
    B, L, Z = latents.shape
    p = self.pose_task.G.apply(jax.lax.stop_gradient(pose_g), latents.reshape(B * L, Z), False)
    return p.reshape(B, L, self.P2)

  def _real(self, state, batch, key):
    pose = project_to_2d(batch["pose"], self.J, self.C)
    B, T, _ = pose.shape
    start = jax.random.randint(key, (B,), 0, T - self.L + 1)
    idx = start[:, None] + jnp.arange(self.L)[None]
    crop = jnp.take_along_axis(pose, idx[..., None], 1)
    return (crop - state.pose2d_mean) / state.pose2d_scale

  def key_roles(self, kc, kz1, kz2, kgd, kd1, kd2):
    """Crop, sequence noise, pose noise and generator dropout (one fake sample for both
    updates), critic dropout, the generator update's critic dropout; no penalty."""
    fake = (kz1, kz2, kgd)
    return kc, (fake, (kd1, kd1), None), (fake, kd2)

  def prepare(self, state, batch, rng):
    return self._real(state, batch, rng)[None], {}

  def sample_fake(self, state, g_params, cond, rng, axis_name, num, train=True):
    k_seq, k_pose, k_d = rng
    z = (jax.random.normal(k_seq, (num, SEQ_Z)), jax.random.normal(k_pose, (num, POSE_Z)))
    lat, stats = apply_generator(self.G, g_params, state.g_batch_stats, z, k_d, train,
                                 axis_name=axis_name)
    return self._decode(state.pose_g, lat), stats

  def eval_step(self, state, batch, axis_name: Optional[str] = None):
    real = self._real(state, batch, jax.random.key(0))
    B = real.shape[0]
    k1, k2 = jax.random.split(jax.random.key(1))
    fake = self._window(state, jax.random.normal(k1, (B, SEQ_Z)),
                        jax.random.normal(k2, (B, POSE_Z)))[1]
    d = lambda x: self.D.apply({"params": state.d_params}, x, False)  # noqa: E731
    loss, _ = NON_SATURATING.critic(d(real), d(fake))
    speed = lambda x: jnp.mean(jnp.abs(jnp.diff(x, axis=1)))  # noqa: E731
    return pmean({"loss": loss, "speed_real": speed(real), "speed_fake": speed(fake)}, axis_name)

  def _window(self, state, seq_z, pose_z):
    lat = self.G.apply({"params": state.g_params, "batch_stats": state.g_batch_stats}, seq_z,
                       pose_z, False)
    return lat, self._decode(state.pose_g, lat)

  def generate(self, state, feats, beats, num_frames, rng, num_samples=1):
    """Unconditional dance of ``num_frames`` frames: chained latent windows (music unused).
    Returns (num_samples, num_frames, J, coords): 2-D front view, depth 0 for mocap."""
    del feats, beats
    window = jax.jit(self._window)
    kz, key = jax.random.split(rng)
    pose_z = jax.random.normal(kz, (num_samples, POSE_Z))
    pieces, n = [], 0
    while n < num_frames:
      key, k = jax.random.split(key)
      lat, poses = window(state, jax.random.normal(k, (num_samples, SEQ_Z)), pose_z)
      if pieces:               # the window starts at the previous window's last latent
        poses = poses[:, 1:]
      pieces.append(np.asarray(poses)); n += poses.shape[1]
      # Next window starts at this one's last latent, pulled back onto the prior's typical
      # shell (|z| <= sqrt(100)): an unbounded cumulative walk over minutes leaves the region
      # the pose generator was trained on (measured: values overflow within 30 s).
      last = lat[:, -1]
      norm = jnp.linalg.norm(last, axis=-1, keepdims=True)
      pose_z = last * jnp.minimum(1.0, np.sqrt(POSE_Z) / jnp.maximum(norm, 1e-6))
    out = np.concatenate(pieces, 1)[:, :num_frames]
    out = out * float(state.pose2d_scale) + np.asarray(state.pose2d_mean)
    return common.to_output_joints(out, self.J, self.C)   # mocap: depth 0


def make_task(config):
  return SeqGANTask(config)
