"""Dancing2Music stage 2, the music-to-movement GAN (``d2m_jax/tasks/d2m_composition.py``).

Needs a decomposition workdir (stage 1, ``configs/d2m_decomposition.py``); its model sizes and
normalisation stats are taken from there. Run::

  .venv/bin/python launch/train.py --config=configs/d2m_composition.py \
      --config.model.decomp_workdir=runs/d2m_decomp --workdir=runs/d2m_comp

Real mocap data: add ``--config.data.source=music_to_dance`` (and use a stage-1 workdir trained
on it). Style extractor: ``--config.model.style_workdir=runs/style`` (a style-classifier
workdir); without it a frozen, randomly initialised GRU-30 is the documented fallback (no
learned genre information). ``--config.model.update_mode=merged`` selects WeiyuDu's merged update.

Paper-size model (27.2M trained parameters + 8.6M frozen). Measured on the shared 2-core CPU
(noisy): batch 32 takes 2.1 CPU-seconds per step (11 s wall under load ~20). A reduced smoke
run (``--config.model.dance_hidden=256 --config.model.z_dance=128``, stage 1 reduced likewise,
150 steps) takes 2-6 min wall; reconstruction terms fall (stdpseq_recon 0.87 -> 0.56 synthetic,
0.83 -> 0.72 real; style_loss 0.41 -> 0.18 / 0.20) while the adversarial terms rise as the
discriminators learn (the total is a GAN objective, not expected to fall monotonically). The
paper trains 1500 epochs at batch 256.
"""
import ml_collections

from d2m_jax import configs
from d2m_jax.train.defaults import base_config

def decomp_model_config(pose_size: int):
  """``model_config`` of configs/d2m_decomposition.py."""
  return configs.module("d2m_decomposition").model_config(pose_size)


VARIANTS = ("mocap", "openpose", "cpu")


def cpu_recipe(c):
  """The ``:cpu`` variant (with a ``configs/d2m_decomposition.py:cpu`` stage 1): demo size,
  KL weights 1e-3, the stage-1 decoder kept frozen (its fine-tuning at lr x 0.1 on the blurred
  dance-path codes lowered the reconstruction motion 0.47 -> 0.33), the static-unit threshold
  at the 30th percentile of the train units' motion (chosen on the validation split among 10,
  30, 50 and the sliding style: docs/dancing2music.md, run 6), 20 candidates per triplet;
  3000 steps."""
  c.data.source = "music_to_dance"
  c.model.hidden = 256
  c.model.z_mov = 128
  c.model.units_per_example = 1
  c.model.z_dance = 128
  c.model.dance_hidden = 256
  c.model.gen_static_percentile = 30.0
  c.model.gen_max_tries = 20
  c.model.gen_static_fallback = "least_static"
  c.optim.lambda_kl = 1e-3
  c.optim.lambda_kl_dance = 1e-3
  c.optim.finetune_stdp_dec = False
  c.num_train_steps = 3000
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c


def get_config(variant: str = "mocap"):
  if variant not in VARIANTS:
    raise ValueError(f"configs/d2m_composition.py:{variant}: unknown variant; known {VARIANTS}")
  c = base_config()
  c.task = "d2m_composition"
  c.data.kind = "units"
  c.data.batch_size = 32
  if variant == "openpose":
    c.data.source = "openpose"
  m = decomp_model_config(28 if variant == "openpose" else 69)
  m.decomp_workdir = ml_collections.FieldReference(None, field_type=str)
  m.style_workdir = ml_collections.FieldReference(None, field_type=str)
  m.style_input_frames = 50     # fallback extractor's window (2 s at 25 fps); a style
                                # checkpoint's own input length overrides it
  m.style_dim = 30
  m.noise_dim = 30
  m.z_dance = 512
  m.dance_hidden = 1024
  m.rnn_impl = "auto"         # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  m.update_mode = "recompute"        # 'recompute' (phase 3 after the phase-2 update) | 'merged'
  # generation (d2m_jax/models/d2m_inference.py)
  m.fps = 25.0                  # motion fps of the data (mocap and the synthetic default)
  m.gen_style_mode = "mean"     # 'mean': one style vector for the song | 'sliding': per window
  m.gen_style_window_s = 8.0    # sliding: seconds of music per style vector
  m.gen_static_thr = 0.0577     # static-unit rejection: mean |x_{t+1}-x_t| per dim and frame
                                # (normalised units; = the original's 50 / (31 * 28))
  m.gen_static_percentile = 0.0  # > 0: the threshold is this percentile of the train units'
                                # motion, stored with the checkpoint (stats unit_motion_pct)
  m.gen_init_pose = "facing_mean"  # first frame: facing-normalised mean pose (= the plain mean
                                # for 2-D data, the paper's); 'mean': the plain mean pose
  m.gen_max_tries = 10
  m.gen_static_fallback = "first"  # no moving candidate: keep 'first' (the paper's) or
                                # 'least_static' (the one whose slowest unit moves most)
  m.gen_tries_per_call = 0      # candidates drawn per jitted call (0: all gen_max_tries at once;
                                # 1-2 is faster once trained weights rarely give static units)
  c.model = m
  o = c.optim
  o.lr = 2e-4
  o.b1 = 0.9
  o.b2 = 0.999
  o.clip_norm = 0.5
  o.stdp_dec = ml_collections.ConfigDict()
  o.stdp_dec.lr = o.get_ref("lr") * 0.1     # the pretrained decoder: 0.1 x lr (the paper)
  o.finetune_stdp_dec = True   # fine-tune the stage-1 decoder (the paper); False keeps it frozen
  o.kl_free_bits = 0.0         # not in the paper: free-bits floor (nats per latent dim)
  o.lambda_kl = 0.01
  o.lambda_kl_dance = 0.01
  o.lambda_zmovements_recon = 1.0
  o.lambda_stdpseq_recon = 10.0
  o.lambda_stdpseq_velocity = 0.0  # not in the paper: frame-difference L1 of the pose recon
  o.lambda_gan = 1.0
  o.lambda_style = 1.0
  c.num_train_steps = 100000
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  if variant == "cpu":
    cpu_recipe(c)
  return c
