"""Stick-figure videos of dances: MP4 (H.264) with the music muxed in, and a GIF.

* 2D skeletons (OpenPose coco14 / body15) are drawn as they are (front view);
* the 3D mocap23 skeleton is projected orthographically from a chosen view (azimuth around the up
  axis, elevation), with the authors' bones including the mid-point bones (neck = mid(3, 12), feet
  = mid of the heel/toe markers; ``d2m_jax.data.skeleton``);
* optional beat markers: a dot that lights up on music-beat frames, and a beat strip.

Speed: one matplotlib figure, artists created once (a ``LineCollection`` for bones, one scatter for
joints); each frame restores the cached background, updates the artists' data, draws only them
(blitting) and pipes the raw RGB buffer to ONE ffmpeg process that writes the MP4 (libx264,
yuv420p, the music as AAC) and the GIF (reduced rate and size) at once. Nothing is written per
frame to disk. Outputs go to temporary names and are ``os.replace``d at the end.

ffmpeg comes from ``$D2M_FFMPEG``, the ``imageio-ffmpeg`` package (ships a static binary) or the
system ``PATH``, in that order; :func:`find_ffmpeg` raises a clear error when none exists.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from typing import Optional, Sequence

import numpy as np

from d2m_jax import files
from d2m_jax.data import skeleton as skel

_SIDE_COLOURS = {"A": "#d62728", "B": "#1f77b4", "C": "#444444"}


class FFmpegNotFound(RuntimeError):
  pass


def find_ffmpeg() -> str:
  """Path of an ffmpeg binary: $D2M_FFMPEG, imageio-ffmpeg's, or the system's."""
  env = os.environ.get("D2M_FFMPEG")
  if env:
    if os.path.isfile(env) and os.access(env, os.X_OK):
      return env
    raise FFmpegNotFound(f"$D2M_FFMPEG={env!r} is not an executable file")
  try:
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    if exe and os.path.isfile(exe):
      return exe
  except Exception:  # pylint: disable=broad-except  # not installed or no binary for this OS
    pass
  exe = shutil.which("ffmpeg")
  if exe:
    return exe
  raise FFmpegNotFound("ffmpeg not found: `pip install imageio-ffmpeg` (ships a binary), install "
                       "ffmpeg on the PATH, or set $D2M_FFMPEG to its path")


def _segments_spec(skeleton: str):
  """[(a, b, c, d, side)]: a bone from mid(a, b) to mid(c, d), coloured by body side."""
  sk = skel.SKELETONS[skeleton]
  names = sk["joints"]

  def side(i):
    n = names[i]
    if n.endswith("_A") or n.startswith("r_"):
      return "A"
    if n.endswith("_B") or n.startswith("l_"):
      return "B"
    return "C"

  spec = []
  for a, b in sk["bones"]:
    s = side(b) if side(b) != "C" else side(a)
    spec.append((a, a, b, b, s))
  if skeleton == "mocap23":
    for (a, b), (c, d) in skel.MOCAP23_MID_BONES:
      s = side(a) if a == b else "C"
      spec.append((a, b, c, d, s))
  return spec


def project(joints: np.ndarray, *, azimuth: float = 30.0, elevation: float = 15.0,
            up_axis: int = 1) -> np.ndarray:
  """(T, J, 3) -> (T, J, 2) orthographic view: rotate ``azimuth`` degrees about the up axis,
  tilt by ``elevation``, keep (horizontal, up). 2D input is returned unchanged."""
  j = np.asarray(joints, np.float64)
  if j.shape[-1] == 2:
    return j
  if up_axis != 1:
    order = [c for c in range(3) if c != up_axis]
    j = j[..., [order[0], up_axis, order[1]]]
  az, el = np.radians(azimuth), np.radians(elevation)
  x, y, z = j[..., 0], j[..., 1], j[..., 2]
  xr = np.cos(az) * x + np.sin(az) * z
  zr = -np.sin(az) * x + np.cos(az) * z
  yr = np.cos(el) * y + np.sin(el) * zr
  return np.stack([xr, yr], axis=-1)


def _default_y_up(skeleton: str) -> bool:
  # coco14 (Dancing2Music) keeps image coordinates (y down); body15 (learn2dance) was negated to
  # y up by its parser; mocap23 is y up.
  return skeleton != "coco14"


def render_dance(joints: np.ndarray, *, skeleton: str, fps: float, out_mp4: Optional[str] = None,
                 out_gif: Optional[str] = None, music_path: Optional[str] = None,
                 music_offset: float = 0.0, beats: Optional[Sequence[int]] = None,
                 root: Optional[np.ndarray] = None, azimuth: float = 30.0,
                 elevation: float = 15.0, y_up: Optional[bool] = None, size: int = 480,
                 gif_fps: float = 12.5, gif_size: int = 240, title: str = "",
                 progress: Optional[bool] = None, crf: int = 23) -> dict:
  """Renders ``joints`` (T, J, C) to an MP4 (with ``music_path`` muxed) and/or a GIF.

  Args:
    joints: (T, J, C) or (T, J*C) in data units (mocap: cm, y up).
    skeleton: 'mocap23' | 'coco14' | 'body15'.
    music_path: any file ffmpeg decodes; ``music_offset`` seconds are skipped (for a dance that
      starts inside the song). The audio is cut to the video's length.
    beats: music-beat frame indices: a dot lights up on those frames, and a beat strip is drawn.
    root: optional (T, 3) root trajectory added to the joints (global motion).
    azimuth, elevation: the view for 3D skeletons (degrees).
    progress: tqdm progress bar (default: when stderr is a terminal and T > 250).
  Returns:
    dict(mp4=..., gif=..., frames=T, seconds=wall time).
  """
  import time  # pylint: disable=import-outside-toplevel
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg", force=False)
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.collections import LineCollection  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  if out_mp4 is None and out_gif is None:
    raise ValueError("nothing to write: give out_mp4 and/or out_gif")
  if music_path is not None and not os.path.isfile(music_path):
    raise FileNotFoundError(f"{music_path}: music file not found")
  t_start = time.perf_counter()
  sk = skel.SKELETONS[skeleton]
  J, C = len(sk["joints"]), sk["dims"]
  x = np.asarray(joints, np.float64).reshape(-1, J, C)
  if root is not None:
    x = x + np.asarray(root, np.float64)[:, None, :C]
  T = x.shape[0]
  if T < 1:
    raise ValueError("no frames to render")
  p2 = project(x, azimuth=azimuth, elevation=elevation)
  if not (_default_y_up(skeleton) if y_up is None else y_up):
    p2 = p2 * [1.0, -1.0]
  spec = _segments_spec(skeleton)
  ia, ib, ic, idd = (np.array([s[k] for s in spec]) for k in range(4))
  colours = [_SIDE_COLOURS[s[4]] for s in spec]
  seg0 = 0.5 * (p2[:, ia] + p2[:, ib])
  seg1 = 0.5 * (p2[:, ic] + p2[:, idd])
  segs = np.stack([seg0, seg1], axis=2)  # (T, nbones, 2, 2)

  lo, hi = p2.reshape(-1, 2).min(0), p2.reshape(-1, 2).max(0)
  centre, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-6) * 1.1
  size = int(size) // 2 * 2  # yuv420p needs even sides
  dpi = 100
  fig = Figure(figsize=(size / dpi, size / dpi), dpi=dpi, facecolor="white")
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_axes([0, 0, 1, 1])
  ax.set_xlim(centre[0] - half, centre[0] + half)
  ax.set_ylim(centre[1] - half, centre[1] + half)
  ax.set_aspect("equal")
  ax.axis("off")
  if title:
    ax.text(0.02, 0.97, title, transform=ax.transAxes, va="top", fontsize=9, color="#333333")
  beat_set = set(int(b) for b in beats) if beats is not None else set()
  if beats is not None:  # static beat strip along the bottom
    bx = centre[0] - half + 2 * half * (np.asarray(sorted(beat_set), np.float64) + 0.5) / T
    ax.vlines(bx, centre[1] - half, centre[1] - half * 0.97, colors="#bbbbbb", lw=0.6)
  lc = LineCollection(segs[0], colors=colours, linewidths=3.0, capstyle="round", animated=True)
  ax.add_collection(lc)
  sc = ax.scatter(p2[0, :, 0], p2[0, :, 1], s=10, c="#222222", zorder=3, animated=True)
  beat_dot = ax.scatter([centre[0] + half * 0.88], [centre[1] + half * 0.88], s=220,
                        c="#ff7f0e", animated=True)
  cursor = ax.scatter([centre[0] - half], [centre[1] - half * 0.985], s=12, marker="^",
                      c="#ff7f0e", animated=True) if beats is not None else None
  canvas.draw()
  background = canvas.copy_from_bbox(fig.bbox)
  w, h = canvas.get_width_height()

  ffmpeg = find_ffmpeg()
  cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "rawvideo", "-pix_fmt", "rgba", "-s", f"{w}x{h}",
         "-r", f"{fps:g}", "-i", "pipe:0"]
  duration = T / float(fps)
  if music_path is not None and out_mp4 is not None:
    cmd += ["-ss", f"{music_offset:.3f}", "-t", f"{duration:.3f}", "-i", music_path]
  filters = []
  if out_mp4 and out_gif:
    filters.append("[0:v]split=2[vm][vg]")
    vm, vg = "[vm]", "[vg]"
  else:
    vm = vg = "[0:v]"
  if out_gif:
    filters.append(f"{vg}fps={gif_fps:g},scale={int(gif_size)}:-2:flags=bilinear[gif]")
  if out_mp4 and not out_gif:
    filters.append("[0:v]null[vm]")
    vm = "[vm]"
  cmd += ["-filter_complex", ";".join(filters)]

  outputs = contextlib.ExitStack()   # each output: a temporary file, os.replace'd on success

  def tmp_for(path):
    return outputs.enter_context(files.atomic_path(os.path.abspath(path)))

  if out_mp4:
    cmd += ["-map", vm]
    if music_path is not None:
      cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-r", f"{fps:g}", "-t", f"{duration:.3f}", "-movflags", "+faststart",
            "-f", "mp4", tmp_for(out_mp4)]
  if out_gif:
    cmd += ["-map", "[gif]", "-pix_fmt", "rgb8", "-f", "gif", tmp_for(out_gif)]

  if progress is None:
    progress = T > 250 and sys.stderr.isatty()
  frames_iter = range(T)
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    frames_iter = tqdm(frames_iter, desc="render", unit="frame")
  with outputs:  # the temporary files become the outputs only when ffmpeg succeeded
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
      for t in frames_iter:
        canvas.restore_region(background)
        lc.set_segments(segs[t])
        sc.set_offsets(p2[t])
        ax.draw_artist(lc)
        ax.draw_artist(sc)
        if t in beat_set:
          ax.draw_artist(beat_dot)
        if cursor is not None:
          cursor.set_offsets([[centre[0] - half + 2 * half * (t + 0.5) / T,
                               centre[1] - half * 0.985]])
          ax.draw_artist(cursor)
        proc.stdin.write(canvas.buffer_rgba())
      proc.stdin.close()
      err = proc.stderr.read().decode(errors="replace")
      rc = proc.wait()
      if rc != 0:
        raise RuntimeError(
            f"ffmpeg failed (exit {rc}) writing {out_mp4 or out_gif}: {err.strip()}")
    except BrokenPipeError:
      err = proc.stderr.read().decode(errors="replace")
      proc.wait()
      raise RuntimeError(
          f"ffmpeg stopped early writing {out_mp4 or out_gif}: {err.strip()}") from None
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return dict(mp4=out_mp4 and os.path.abspath(out_mp4), gif=out_gif and os.path.abspath(out_gif),
              frames=T, seconds=time.perf_counter() - t_start)


def probe(path: str) -> dict:
  """Streams of a media file via ``ffmpeg -i`` (no ffprobe needed) plus an exact decoded frame
  count: dict(video=bool, audio=bool, frames=int, fps=float|None, duration=float|None)."""
  import re  # pylint: disable=import-outside-toplevel
  ffmpeg = find_ffmpeg()
  out = subprocess.run([ffmpeg, "-hide_banner", "-i", path, "-map", "0:v:0", "-f", "null", "-"],
                       capture_output=True, text=True, check=False).stderr
  frames = re.findall(r"frame=\s*(\d+)", out)
  fps = re.search(r"Video:.*?, ([\d.]+) fps", out)
  dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", out)
  return dict(video=bool(re.search(r"Stream #\S+.*Video:", out)),
              audio=bool(re.search(r"Stream #\S+.*Audio:", out)),
              frames=int(frames[-1]) if frames else 0,
              fps=float(fps.group(1)) if fps else None,
              duration=(int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)))
              if dur else None)
