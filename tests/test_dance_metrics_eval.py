"""The ``dance_metrics`` evaluator (registered by d2m_jax.metrics.evaluation) on the tiny
synthetic dataset: a generator that returns each test sequence's real dance scores exactly the
real-vs-real row; a damped copy of it scores worse on FID_k."""
import hashlib

import ml_collections
import numpy as np

from d2m_jax.data import pipeline
from d2m_jax.metrics import evaluation as ev
from d2m_jax.metrics import unseen
from d2m_jax.train import evaluators


class _CopyTask:
  """Generates the real dance of the sequence whose music it is given, times ``scale``."""
  generation_features = ("d2m28",)

  def __init__(self, items, scale):
    self.poses = {self.key(it.processed["d2m28"]): np.asarray(it.processed["pose"], np.float32)
                  for it in items}
    self.scale = scale

  @staticmethod
  def key(x):
    return hashlib.sha1(np.asarray(x, np.float32).tobytes()).hexdigest()

  def generate(self, state, feats, beats, num_frames, rng, num_samples=1):
    pose = self.poses[self.key(feats["d2m28"])][:num_frames] * self.scale
    return np.repeat(pose[None], num_samples, axis=0)


def test_dance_metrics_of_the_real_dances_equal_the_real_row(tiny_data_cfg):
  data = tiny_data_cfg.copy_and_resolve_references()
  config = ml_collections.ConfigDict(dict(data=data))
  items = unseen.load_processed_split(pipeline.processed_dir(data), "test")
  spec = ml_collections.ConfigDict(dict(kind="dance_metrics", split="test"))
  out = {}
  for scale in (1.0, 0.3):
    ctx = evaluators.EvalContext(config, _CopyTask(items, scale), dp=None, batches=None)
    out[scale] = evaluators.run("dance", spec, ctx, state=None)
  assert "dance_metrics" in evaluators.REGISTRY and ev.dance_metrics_evaluator
  same = out[1.0]
  assert same["clips"] >= len(items)
  np.testing.assert_allclose(same["FID_k"], same["real_FID_k"], rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(same["Div_k"], same["real_Div_k"], rtol=1e-9)
  np.testing.assert_allclose(same["BAS"], same["real_BAS"], rtol=1e-9)
  assert out[0.3]["FID_k"] > same["FID_k"] + 1.0
  assert out[0.3]["Div_k"] < same["Div_k"]
