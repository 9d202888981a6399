"""Dancing2Music stage 1, the dance-unit VAE (``d2m_jax/tasks/d2m_decomposition.py``).

Run (embedded synthetic default, mocap-like 69-d poses)::

  .venv/bin/python launch/train.py --config=configs/d2m_decomposition.py --workdir=runs/d2m_decomp

Real mocap data::

  .venv/bin/python launch/train.py --config=configs/d2m_decomposition.py \
      --config.data.source=music_to_dance --workdir=runs/d2m_decomp_mocap

OpenPose 2D data (14 joints x 2): ``--config.data.source=openpose --config.model.pose_size=28``
(or ``configs/d2m_decomposition.py:openpose``). The CPU recipe on the real mocap:
``configs/d2m_decomposition.py:cpu`` (:func:`cpu_recipe`); the default variant is the paper's.

Paper-size model (H 1024, z_mov 512, 14.9M parameters). Measured on the shared 2-core CPU
(load 14-21, so noisy): batch 32 with units_per_example=1 takes 2.3 CPU-seconds per step
(9-10 s wall under that load); with all 3 units per example 6.7 CPU-s. A reduced smoke run
(``--config.model.hidden=256 --config.model.z_mov=128 --config.num_train_steps=150``) takes
8-10 min wall there (compile ~45 s) and the loss falls from 5.4 to 2.1 (synthetic) / 5.3 to
2.7 (music_to_dance); the KL weight only ramps up around step 15k. The paper trains 1000
epochs at batch 256 (one unit per example): a GPU job.
"""
import ml_collections

from d2m_jax.train.defaults import base_config


def model_config(pose_size: int = 69):
  m = ml_collections.ConfigDict()
  m.pose_size = pose_size      # 69 = 23 mocap joints x 3 (cm); 28 = 14 OpenPose joints x 2 (px)
  m.joint_dims = 0             # coordinates per joint (0: 3 if pose_size == 69 else 2)
  m.z_init = 10
  m.z_mov = 512
  m.hidden = 1024              # GRU hidden size of movement_enc / stdp_dec
  m.init_hidden = 64           # MLP width of the init-pose VAE
  m.unit_length = 32
  m.rnn_impl = "auto"         # GRU/LSTM: auto | scan | unrolled | pallas (d2m_jax/nn/rnn.py)
  m.units_per_example = 3      # 3: every unit of each 3-unit example; 1: one random unit
  m.beat_phase_input = False   # not in the paper: the unit decoder also reads the beat phase
  m.jitter = "auto"            # auto (yaw for 3D, translate for 2D) | translate | yaw | none
  m.jitter_x = 50.0            # translate: +-px
  m.jitter_y = 20.0
  m.jitter_yaw_deg = 45.0      # yaw: +-degrees about the vertical axis
  return m


VARIANTS = ("mocap", "openpose", "cpu")


def cpu_recipe(c):
  """The ``:cpu`` variant: the real mocap at demo size, an objective that keeps the motion.

  Demo size (GRU H=256, z_mov=128, one unit per example, as the quick start); KL weight 1e-3
  instead of 1e-2 (the linear-Gaussian bound, benchmarks/motion_bound.py, keeps ~0.8 of the test
  units' motion at 1e-3 against ~0.45 at 1e-2), annealed around step 1000 (the paper's 15000
  would leave the latent unregularised in a CPU-length run); the unit decoder reads the beat
  phase (``model.beat_phase_input``) and Adam runs at 2e-3 instead of 2e-4: on the embedded
  data these took the reconstruction's motion at 200 steps from 0.23 to 0.52 of the real units'
  (docs/dancing2music.md, the quick start's experiments); 3000 steps.
  """
  c.data.source = "music_to_dance"
  c.model.hidden = 256
  c.model.z_mov = 128
  c.model.units_per_example = 1
  c.model.beat_phase_input = True
  c.optim.lr = 2e-3
  c.optim.lambda_kl = 1e-3
  c.optim.kl_anneal_center = 1000.0
  c.optim.kl_anneal_rate = 0.004
  c.num_train_steps = 3000
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c


def get_config(variant: str = "mocap"):
  if variant not in VARIANTS:
    raise ValueError(f"configs/d2m_decomposition.py:{variant}: unknown variant; known {VARIANTS}")
  c = base_config()
  c.task = "d2m_decomposition"
  c.data.kind = "units"
  c.data.batch_size = 32
  if variant == "openpose":
    c.data.source = "openpose"
  c.model = model_config(28 if variant == "openpose" else 69)
  o = c.optim
  o.lr = 2e-4
  o.b1 = 0.9
  o.b2 = 0.999
  o.clip_norm = 0.0            # the encoders of the initial pose: not clipped
  for net in ("movement_enc", "stdp_dec"):   # clipped separately (clip_grad_norm_ 0.5)
    o[net] = ml_collections.ConfigDict({"clip_norm": 0.5})
  o.lambda_kl = 0.01
  o.kl_anneal_rate = 0.0005    # kld_coef = sigmoid(rate * (step - center))
  o.kl_anneal_center = 15000.0
  o.lambda_initp_recon = 1.0
  o.lambda_stdp_recon = 1.0
  o.lambda_dist_z_movement = 1.0
  o.kl_free_bits = 0.0         # not in the paper: free-bits floor (nats per latent dim) on the KLs
  o.lambda_stdp_velocity = 0.0  # not in the paper: frame-difference L1 of the reconstructions
  o.num_single_poses = 4
  c.num_train_steps = 100000
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  if variant == "cpu":
    cpu_recipe(c)
  return c
