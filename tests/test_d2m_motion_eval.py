"""The motion_ratio evaluator on the Dancing2Music decomposition's rows (tiny networks)."""
import jax
import ml_collections
import numpy as np

from configs.d2m_decomposition import get_config as decomp_config
from d2m_jax.tasks import get_task
from d2m_jax.train import evaluators
from d2m_jax.train import state as state_lib


def test_decomposition_motion_rows_through_the_evaluator():
  """'real' is the z-scored units' own motion (numpy, float64); the VAE rows are finite and
  their ratios are their motion over the real one."""
  c = decomp_config()
  m = c.model
  m.hidden, m.z_mov, m.init_hidden, m.z_init = 16, 8, 8, 4
  task = get_task(c)
  batch = task.synthetic_batch(2, np.random.default_rng(0))
  u = batch["units"].reshape(-1, batch["units"].shape[-1])
  stats = {"pose_mean": u.mean(0), "pose_std": u.std(0) + 0.5}
  state = state_lib.build_state(task, jax.random.PRNGKey(0), batch, stats)
  ctx = evaluators.EvalContext(c, task, dp=None, batches=lambda split: [batch])
  out = evaluators.run("m", ml_collections.ConfigDict(dict(kind="motion_ratio", split="test")),
                       ctx, state)
  x = (batch["units"].reshape((-1,) + batch["units"].shape[2:]).astype(np.float64)
       - stats["pose_mean"]) / stats["pose_std"]
  np.testing.assert_allclose(out["real_motion"], np.abs(np.diff(x, axis=1)).mean(), rtol=1e-5)
  for row in ("vae_recon", "vae_prior"):
    assert np.isfinite(out[f"{row}_motion"])
    np.testing.assert_allclose(out[f"{row}_ratio"], out[f"{row}_motion"] / out["real_motion"])
