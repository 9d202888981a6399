"""d2m-jax: music-to-dance generation in JAX/Flax.

Sub-packages:
  data     - readers (mocap, OpenPose, npz), librosa audio features, the procedural default dataset,
             TFDS builders and the sharded tf.data input pipeline.
  nn       - shared layers: PyTorch-parity initialisers, GRU/LSTM as lax.scan with hoisted input
             projections.
  train    - the engine: one jitted, donated, data-parallel step per model, orbax checkpoints,
             exact resume, logging.
  models   - Flax modules of the published systems.
  tasks    - one module per trainable model family, tying a model to the engine (see tasks/__init__).
"""

__version__ = "0.1.0"
