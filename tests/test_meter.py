"""Meter and rhythm features (d2m_jax/models/meter.py): every feature against a float64 numpy
reference, and each feature group on click/accent tracks of known meter (a 3/4 and a 4/4 track at
the same tempo told apart; hand-computed accent patterns; octave-folded tempo)."""
from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from d2m_jax.models import meter  # noqa: E402

NAMES = meter.feature_names()
METER = jax.jit(meter.meter_features)        # one compile per shape, not one per eager op
L = 360                                      # every clip of these tests: one compiled shape


def col(name):
  return NAMES.index(name)


def tempogram(env, win=384):
  """numpy float64: per frame the autocorrelation of the centred window, lag 0 = 1."""
  n = len(env)
  pad = np.concatenate([np.zeros(win // 2), env, np.zeros(win // 2)])
  w = np.lib.stride_tricks.sliding_window_view(pad, win)[:n]
  ac = np.stack([np.sum(w[:, :win - k] * w[:, k:], 1) for k in range(win)], 1)
  return ac / np.maximum(ac[:, :1], 1e-12)


def click_track(frames, beat, bar, accent=2.0, phase=0, first_downbeat=0):
  """Onset envelope (1 per beat, ``accent`` on each bar's first beat), low-frequency log energy
  (a bass note on each downbeat: log 1 vs log 0.25 on the other beats, log 0.01 between beats)
  and the beat one-hot of a click track with ``beat`` frames per beat and ``bar`` beats per bar
  (the first beat on frame ``phase``, the first downbeat the beat ``first_downbeat``)."""
  onset, beats = np.zeros(frames), np.zeros(frames)
  low = np.full(frames, np.log(0.01))
  k = np.round(np.arange(phase, frames, beat)).astype(int)
  k = k[k < frames]
  onset[k], beats[k], low[k] = 1.0, 1.0, np.log(0.25)
  onset[k[first_downbeat::bar]], low[k[first_downbeat::bar]] = accent, 0.0
  return onset, low, beats


def reference(ac, onset, low, beat, fps=25.0):
  """float64 loops over the beats: the features of the module docstring."""
  b = np.where(beat > 0.5)[0]
  if len(b) >= 2:
    period = np.polyfit(np.arange(len(b)), b, 1)[0]
  else:
    period = 8 + np.argmax(ac[8:31])
  lags = np.arange(len(ac))
  out = [np.log1p(max(np.interp(k * period + d, lags, ac) for d in (-1, 0, 1)))
         for k in meter.AC_BEATS]
  L = len(onset)
  on_max = np.array([onset[max(t - 1, 0):t + 2].max() for t in range(L)])
  low_mean = np.array([low[max(t - 1, 0):t + 2].mean() for t in range(L)])
  for sig, v in (("onset", on_max), ("low", low_mean)):
    pats = {}
    for m in (3, 4, 6, 8):
      per_beat = v[b]
      p = np.array([per_beat[j::m].mean() if len(per_beat[j::m]) else np.nan for j in range(m)])
      p = np.where(np.isnan(p), np.nanmean(p), p)
      pats[m] = p / p.mean() - 1.0 if sig == "onset" else p - p.mean()
    for m in meter.BAR_BEATS:
      out += list(np.roll(pats[m], -int(np.argmax(pats[m]))))
    out += [np.log(np.abs(np.fft.fft(pats[m])[k]) / m + 1e-3) for m, k in meter.DFT_TERMS]
  out.append(np.log(on_max[b].mean() / on_max.mean()))
  f = np.log2(60.0 * fps / period / meter.FOLD_REF_BPM) % 1.0
  out += [np.cos(2 * np.pi * f), np.sin(2 * np.pi * f), np.cos(4 * np.pi * f),
          np.sin(4 * np.pi * f)]
  return np.array(out)


def features(onset, low, beat):
  ac = tempogram(onset).mean(0)
  return np.asarray(METER(jnp.asarray(ac, jnp.float32), jnp.asarray(onset, jnp.float32),
                         jnp.asarray(low, jnp.float32), jnp.asarray(beat, jnp.float32)),
                    np.float64), ac


def test_feature_names_and_groups():
  assert len(NAMES) == meter.NUM_FEATURES == 7 + 2 * (7 + 5) + 1 + 4
  assert [NAMES[i] for i in meter.group_columns(("ac",))] == [
      "ac@0.5", "ac@1", "ac@2", "ac@3", "ac@4", "ac@6", "ac@8"]
  assert len(meter.group_columns(meter.GROUPS)) == meter.NUM_FEATURES
  assert meter.group_columns(("tempo",)) == list(range(meter.NUM_FEATURES - 4,
                                                       meter.NUM_FEATURES))


def test_meter_features_match_float64_numpy_on_a_noisy_track():
  rng = np.random.default_rng(0)
  onset, low, beat = click_track(L, 14.3, 4)
  onset = onset + 0.2 * rng.random(L)
  low = low + 0.1 * rng.standard_normal(L)
  beat[np.where(beat > 0)[0][5]] = 0.0                         # a missed beat
  beat[101] = 1.0                                              # and an extra one
  got, ac = features(onset, low, beat)
  np.testing.assert_allclose(got, reference(ac, onset, low, beat), rtol=2e-4, atol=2e-4)
  # Batched (..., L) inputs = one clip at a time.
  o2, l2, b2 = click_track(L, 17.0, 3)
  ac2 = tempogram(o2).mean(0)
  batch = np.asarray(METER(*(jnp.asarray(np.stack(p), jnp.float32) for p in (
      (ac, ac2), (onset, o2), (low, l2), (beat, b2)))))
  np.testing.assert_allclose(batch[0], got, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batch[1], reference(ac2, o2, l2, b2), rtol=2e-4, atol=2e-4)


def test_beat_period_is_the_least_squares_slope_with_a_tempogram_fallback():
  rng = np.random.default_rng(1)
  b = np.sort(rng.choice(L, 20, replace=False))
  beat = np.zeros(L)
  beat[b] = 1.0
  period, cnt = meter.beat_period(jnp.asarray(beat))
  np.testing.assert_allclose(float(period), np.polyfit(np.arange(20), b, 1)[0], rtol=1e-5)
  assert int(cnt) == 20
  # One beat only: the period comes from the tempogram's peak over lags 8..30 (here 19).
  ac = np.exp(-0.5 * ((np.arange(384) - 19.0) / 2.0) ** 2) + np.exp(-np.arange(384) / 3.0)
  one = np.zeros(L)
  one[40] = 1.0
  flat = np.ones(L)
  feats = np.asarray(METER(jnp.asarray(ac, jnp.float32), jnp.asarray(flat, jnp.float32),
                           jnp.zeros(L), jnp.asarray(one, jnp.float32)), np.float64)
  np.testing.assert_allclose(feats, reference(ac, flat, np.zeros(L), one),
                             rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(feats[col("ac@1")], np.log1p(1.0 + np.exp(-19 / 3.0)), rtol=1e-4)


def test_each_feature_group_tells_3_4_from_4_4_at_the_same_tempo():
  # 100 BPM (15 frames per beat), 24 beats in the clip: a multiple of 3, 4, 6 and 8 beats.
  # (First beat on frame 1: every beat has both neighbours inside the clip.)
  f3, _ = features(*click_track(L, 15, 3, phase=1))
  f4, _ = features(*click_track(L, 15, 4, phase=1))
  # Autocorrelation at beat lags: the bar of 3 beats lifts lags 3 and 6, the bar of 4 lags 4 and
  # 8 (the window's decay with the lag is common to both tracks: compare across them).
  for short, long in (("ac@3", "ac@4"), ("ac@6", "ac@8")):
    assert f3[col(short)] > f4[col(short)] + 0.05 and f4[col(long)] > f3[col(long)] + 0.05
    assert (f4[col(long)] - f4[col(short)]) - (f3[col(long)] - f3[col(short)]) > 0.1
  assert f3[col("ac@3")] > f3[col("ac@4")] + 0.05
  # Accent patterns by hand: 3/4 onset per position [2, 1, 1] / (4/3) - 1; the 4/4 track spreads
  # its downbeats evenly over 3 positions (flat); 4/4: [2, 1, 1, 1] / 1.25 - 1.
  on3 = [col(f"onset3[{j}]") for j in range(3)]
  on4 = [col(f"onset4[{j}]") for j in range(4)]
  np.testing.assert_allclose(f3[on3], [0.5, -0.25, -0.25], atol=1e-5)
  np.testing.assert_allclose(f4[on3], [0.0, 0.0, 0.0], atol=1e-5)
  np.testing.assert_allclose(f4[on4], [0.6, -0.2, -0.2, -0.2], atol=1e-5)
  np.testing.assert_allclose(f3[on4], [0.0] * 4, atol=1e-5)
  # Low-frequency energy, the mean over the beat frame and its two neighbours (log 0.01): the
  # downbeats are log 1 - log 0.25 over 3 frames above the other beats; minus the mean.
  d = np.log(4.0) / 3.0
  np.testing.assert_allclose(f3[[col(f"low3[{j}]") for j in range(3)]],
                             [2 * d / 3, -d / 3, -d / 3], atol=1e-5)
  np.testing.assert_allclose(f4[[col(f"low4[{j}]") for j in range(4)]],
                             [3 * d / 4, -d / 4, -d / 4, -d / 4], atol=1e-5)
  # Phase-free strengths: |F1| of the 3-beat pattern = |0.5 + 0.25| / 3 = 0.25 for 3/4, none for
  # 4/4;
  # |F1| of the 4-beat pattern = |0.6 + 0.2| / 4 = 0.2 for 4/4. The 6- and 8-beat terms: the same bars when the
  # beat tracker runs at twice the tempo (a 3/4 bar = 6 tracked beats, a 4/4 bar = 8).
  d3, _ = features(*click_track(L, 7.5, 6, phase=1))
  d4, _ = features(*click_track(L, 7.5, 8, phase=1))
  for sig in ("onset", "low"):
    assert f3[col(f"{sig}|F1_3|")] > f4[col(f"{sig}|F1_3|")] + 3.0
    assert f4[col(f"{sig}|F1_4|")] > f3[col(f"{sig}|F1_4|")] + 3.0
    assert d3[col(f"{sig}|F1_6|")] > d4[col(f"{sig}|F1_6|")] + 3.0
    assert d4[col(f"{sig}|F1_8|")] > d3[col(f"{sig}|F1_8|")] + 3.0
  np.testing.assert_allclose(f3[col("onset|F1_3|")], np.log(0.25 + 1e-3), atol=1e-4)
  np.testing.assert_allclose(f4[col("onset|F1_4|")], np.log(0.2 + 1e-3), atol=1e-4)
  # Same tempo: the folded tempo is the same for both meters.
  tempo = [col(n) for n in ("tempo_cos1", "tempo_sin1", "tempo_cos2", "tempo_sin2")]
  np.testing.assert_allclose(f3[tempo], f4[tempo], atol=1e-5)
  # Where the bar starts in the clip does not change the phase-free features.
  g3, _ = features(*click_track(L, 15, 3, phase=1, first_downbeat=2))
  phase_free = meter.group_columns(("accents", "dft"))
  np.testing.assert_allclose(g3[phase_free], f3[phase_free], atol=1e-4)


def test_tempo_folds_octaves_and_keeps_other_ratios_apart():
  p = jnp.asarray([15.0, 30.0, 7.5, 18.75, 12.5])     # 100, 50, 200, 80, 120 BPM at 25 fps
  t = np.asarray(meter.folded_tempo(p))
  np.testing.assert_allclose(t[1], t[0], atol=1e-5)
  np.testing.assert_allclose(t[2], t[0], atol=1e-5)
  assert np.abs(t[3] - t[0]).max() > 0.3                # 80 BPM is not an octave of 100
  f = np.log2(100.0 / 60.0) % 1.0
  np.testing.assert_allclose(t[0], [np.cos(2 * np.pi * f), np.sin(2 * np.pi * f),
                                    np.cos(4 * np.pi * f), np.sin(4 * np.pi * f)], atol=1e-5)
  # 120 BPM sits on the fold (f = 0): its neighbours 119 / 121 BPM (f = 0.988 / 0.012) stay
  # close on the circle (at most 4 pi x 0.024 = 0.30 apart), not 0.98 apart as f itself.
  near = np.asarray(meter.folded_tempo(jnp.asarray([1500.0 / 119.0, 1500.0 / 121.0])))
  assert np.abs(near[0] - near[1]).max() < 0.31 and np.abs(near[0] - t[4]).max() < 0.16


def test_low_frequency_energy_sums_the_lowest_mel_bands():
  rng = np.random.default_rng(2)
  mel = rng.random((5, 128)) * 3.0
  got = np.asarray(meter.low_frequency_energy(jnp.asarray(mel, jnp.float32)))
  want = np.log(np.expm1(mel[:, :meter.LOW_MEL_BANDS]).sum(1) + 1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-5)
