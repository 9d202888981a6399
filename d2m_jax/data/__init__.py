"""Data: readers, audio features, examples, TFDS builders and the input pipeline.

Import the submodules you need (``from d2m_jax.data import pipeline``); nothing is imported
here, so models and the engine never pull in TensorFlow or librosa by accident.
"""
