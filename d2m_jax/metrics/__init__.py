"""Dance-generation metrics (definitions: ../shared/specs/metrics.md).

* :mod:`frechet`: Fréchet distance, FID on GT-normalised features, Div (mean pairwise distance).
* :mod:`kinetic`: FID_k / Div_k features (AIST++ ``features/kinetic.py`` adapted to mocap23, 25 fps).
* :mod:`geometric`: FID_g / Div_g features (AIST++ ``features/manual.py``, Müller relations).
* :mod:`beats`: motion beats and the Beat Align Score (both conventions).
* :mod:`foot_contact`: PFC (EDGE ``eval/eval_pfc.py``).
* :mod:`style_eval`: music-style scores (clip / balanced / majority-vote sequence accuracy,
  per-class recall, confusion) over a style model's ``predict_clip_logits``.
* :mod:`unseen`: test sequences from a raw folder (preprocessed by the data layer) or a
  processed split; :mod:`evaluation`: the protocol behind ``launch/evaluate.py``.

The metrics are numpy (float64): no jax, TF or librosa imports (``unseen`` preprocesses audio
through the data layer, which imports librosa lazily).
"""
from d2m_jax.metrics.beats import beat_align_score, motion_beats
from d2m_jax.metrics.foot_contact import physical_foot_contact
from d2m_jax.metrics.frechet import (diversity, feature_stats, fid, frechet_distance,
                                     normalise_features)
from d2m_jax.metrics.geometric import geometric_features
from d2m_jax.metrics.kinetic import kinetic_features

__all__ = ["beat_align_score", "motion_beats", "physical_foot_contact", "diversity",
           "feature_stats", "fid", "frechet_distance", "normalise_features",
           "geometric_features", "kinetic_features"]
