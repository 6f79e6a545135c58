"""Make short, real encoded clips from still photos: a slow pan and zoom over the photo, encoded with PyAV.

The project's example clips (scripts/make_video_examples.py), the tests' clips and the benchmark's clip are all
made here, so each is a genuine H.264 / VP9 / MPEG-4 file that goes through the same demuxer and decoder as an
upload. Nothing in serving imports this module.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
import os
from typing import Iterable, Iterator

from PIL import Image

# Container format -> (codec, pixel format). MP4/MOV/MKV carry H.264 (what phones and browsers make), WebM VP9
# (what browsers record), AVI MPEG-4 Part 2 (old cameras and screen recorders).
CODECS = {"mp4": "libx264", "mov": "libx264", "mkv": "libx264", "webm": "libvpx-vp9", "avi": "mpeg4"}


def pan_zoom_frames(photo: Image.Image, size: tuple[int, int], n_frames: int, zoom: tuple[float, float] = (1.0, 1.25),
                    pan: tuple[float, float] = (0.0, 1.0)) -> Iterator[Image.Image]:
    """`n_frames` views of `photo` at `size` (width, height): the window shrinks from 1/zoom[0] to 1/zoom[1] of the
    largest window of that aspect the photo holds, and slides from `pan[0]` to `pan[1]` of the free room (0 = left
    and top, 1 = right and bottom): a slow camera move, so faces drift and grow from frame to frame."""
    photo = photo.convert("RGB")
    width, height = size
    fit = min(photo.width / width, photo.height / height)  # the largest window of the output's aspect
    for i in range(n_frames):
        s = i / max(n_frames - 1, 1)
        z = zoom[0] + (zoom[1] - zoom[0]) * s
        w, h = width * fit / z, height * fit / z
        p = pan[0] + (pan[1] - pan[0]) * s
        x0, y0 = (photo.width - w) * p, (photo.height - h) * p
        yield photo.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h))


def encode_clip(frames: Iterable[Image.Image], path: str | os.PathLike, fps: int = 25, container: str | None = None,
                crf: int | None = 23, gop: int | None = None, preset: str = "medium") -> str:
    """Encode RGB frames (all of one size) into `path`; the container follows the suffix unless given.

    crf: H.264 / VP9 quality (lower = better, larger); gop: frames between keyframes (None: the codec's default,
    250 for x264, so a short clip has one keyframe); preset: x264's speed/size trade-off.
    """
    import av

    path = str(path)
    container = container or os.path.splitext(path)[1].lstrip(".").lower()
    if container not in CODECS:
        raise ValueError(f"unknown container {container!r}; choose one of {', '.join(CODECS)}")
    codec = CODECS[container]
    frames = iter(frames)
    first = next(frames)
    options = {}
    if codec == "libx264":
        options["preset"] = preset
    if crf is not None and codec in ("libx264", "libvpx-vp9"):
        options["crf"] = str(crf)
        if codec == "libvpx-vp9":
            options.update({"b": "0", "deadline": "realtime", "cpu-used": "8"})  # constant quality, fast
    with av.open(path, "w", format={"mkv": "matroska"}.get(container, container)) as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = first.size
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for k, image in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_image(image.convert("RGB"))
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            out.mux(packet)
    return path


def pan_zoom_clip(photo: Image.Image, path: str | os.PathLike, size: tuple[int, int] = (384, 384),
                  seconds: float = 3.0, fps: int = 25, zoom: tuple[float, float] = (1.0, 1.25),
                  pan: tuple[float, float] = (0.0, 1.0), **encode_options) -> str:
    """A pan-and-zoom clip of `photo` (see pan_zoom_frames), `seconds` long, written to `path` (encode_clip's
    options: container, crf, gop, preset)."""
    n_frames = max(1, round(seconds * fps))
    return encode_clip(pan_zoom_frames(photo, size, n_frames, zoom, pan), path, fps=fps, **encode_options)
