"""Rendering: a tiny MP4 carries the music and the expected number of frames."""
import numpy as np
import pytest
import soundfile as sf

from d2m_jax import render


def test_mp4_has_audio_and_frame_count_gif_too(tmp_path):
  T, fps = 12, 25.0
  rng = np.random.default_rng(0)
  joints = rng.normal(scale=30.0, size=(T, 23, 3))
  song = tmp_path / "song.wav"
  sf.write(song, 0.2 * np.sin(np.linspace(0, 800, 16000)).astype(np.float32), 16000)
  r = render.render_dance(joints, skeleton="mocap23", fps=fps, out_mp4=str(tmp_path / "d.mp4"),
                          out_gif=str(tmp_path / "d.gif"), music_path=str(song),
                          beats=[0, 6], size=96, gif_size=48)
  info = render.probe(r["mp4"])
  assert info["video"] and info["audio"]
  assert info["frames"] == T and info["fps"] == fps
  gif = render.probe(r["gif"])
  assert gif["video"] and not gif["audio"] and gif["frames"] >= 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["d.gif", "d.mp4", "song.wav"]


def test_2d_skeleton_without_music(tmp_path):
  joints = np.random.default_rng(1).normal(size=(5, 28))  # coco14 flattened
  r = render.render_dance(joints, skeleton="coco14", fps=15.0, out_mp4=str(tmp_path / "p.mp4"),
                          size=64)
  info = render.probe(r["mp4"])
  assert info["video"] and not info["audio"] and info["frames"] == 5


def test_projection_front_view_keeps_x_and_up():
  p = np.array([[[1.0, 2.0, 3.0]]])
  np.testing.assert_allclose(render.project(p, azimuth=0, elevation=0), [[[1.0, 2.0]]])
  np.testing.assert_allclose(render.project(p, azimuth=90, elevation=0), [[[3.0, 2.0]]])


def test_missing_ffmpeg_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.setenv("D2M_FFMPEG", str(tmp_path / "no-ffmpeg"))
  with pytest.raises(render.FFmpegNotFound, match="D2M_FFMPEG"):
    render.find_ffmpeg()
