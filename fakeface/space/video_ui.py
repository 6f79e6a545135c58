"""What the Space's Video tab and its `/predict_video` API event do: a clip in, its verdict, each face track's
fake probability over time (with the threshold marked), and the most suspicious frames with their faces boxed
and heat maps. app.py lays the tab out and wires these; fakeface/video.py does the work."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ..errors import FakefaceError
from ..predictor import Predictor
from ..video import DEFAULT_FRAMES, MAX_FRAMES, NO_FACE_MESSAGE, VideoPrediction, analyse_video, check_frame_count
from .guard import event_path
from .serving import ModelGate, checked_threshold
from .ui import heatmap_overlay, label_value, verdict_scale
from .uploads import UploadRefused

log = logging.getLogger(__name__)

FRAME_SIDE = 640  # the suspicious frames are shown at most this size
TRACK_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
VIDEO_ABOUT = (
    "Upload a clip (MP4, MOV, WebM, MKV or AVI; up to 5 minutes, 1440p and 100 MB). Frames are sampled evenly over "
    "the clip; every face in them is scored like a still image, faces are followed from frame to frame (one "
    "track per person), and the clip's verdict follows its most suspicious track. **Frames only:** the sound, "
    "lip-sync and motion are not examined, so a fake voice or a re-timed clip goes unnoticed.")


# What the tab shows for one clip, in the order of the /analyse_video outputs (then the kept result).
VIDEO_OUTPUTS = ("label", "scale", "summary", "timeline", "frames")


@dataclass
class KeptClip:
    """One analysed clip, kept in the page's session so a new threshold needs no model run."""

    path: str  # the upload it came from (its name holds a hash of its content)
    frames: int
    result: VideoPrediction  # without its suspicious frames: the gallery already shows them


class VideoEvents:
    """The Video tab's event functions for one demo, model and gate (their parameter names are the API's)."""

    def __init__(self, demo: gr.Blocks, predictor: Predictor, gate: ModelGate):
        self.demo, self.predictor, self.gate = demo, predictor, gate

    def analyse_video(self, video, threshold, frames, kept=None, progress=gr.Progress()):
        """/analyse_video: everything the tab shows (VIDEO_OUTPUTS), then the result kept for `rethreshold`.
        The clip `kept` came from is not run again for the same number of frames."""
        try:
            path = event_path(self.demo, video)
        except UploadRefused as exc:
            return (*_failure(str(exc)), None)
        if not path:
            return (*_cleared("Upload a video clip, or pick an example, to analyse it."), None)
        try:
            frames = check_frame_count(DEFAULT_FRAMES if frames in (None, "") else frames)
            if kept is not None and (kept.path, kept.frames) == (path, frames):
                return (*render_clip(kept.result, checked_threshold(threshold)), gr.skip(), kept)
            result = score_clip(self.predictor, path, threshold, frames, self.gate, heatmaps=True,
                                progress=_reporter(progress))
        except FakefaceError as exc:
            return (*_failure(str(exc)), None)
        except Exception:  # a bug of ours: the user gets a sentence, the log gets the traceback
            log.exception("video analysis failed")
            return (*_failure("Something went wrong while analysing this clip; it has been logged. Try another "
                              "clip."), None)
        gallery = suspicious_gallery(result)
        kept = KeptClip(path, frames, replace(result, suspicious=[]))
        return (*render_clip(result), gr.update(value=gallery, visible=bool(gallery)), kept)

    @staticmethod
    def rethreshold(kept, threshold):
        """The tab's answer for a new threshold, from the kept result: no model run."""
        if kept is None:
            return tuple(gr.skip() for _ in VIDEO_OUTPUTS[:-1])
        try:
            return render_clip(kept.result, checked_threshold(threshold))
        except FakefaceError as exc:
            gr.Warning(str(exc))
            return tuple(gr.skip() for _ in VIDEO_OUTPUTS[:-1])

    def predict_video(self, video, threshold, frames, progress=gr.Progress()):
        """/predict_video: the verdict with every track's and every sampled frame's scores, as JSON."""
        try:
            path = event_path(self.demo, video)
        except UploadRefused as exc:
            raise gr.Error(str(exc)) from None
        if not path:
            raise gr.Error("No video was given.")
        try:
            result = score_clip(self.predictor, path, threshold, frames, self.gate, progress=_reporter(progress))
        except FakefaceError as exc:
            raise gr.Error(str(exc)) from None
        except Exception:
            log.exception("video prediction failed")
            raise gr.Error("Something went wrong while analysing this clip; it has been logged.") from None
        return result.as_dict()


def _reporter(progress):
    return (lambda done, total: progress((done, total), desc="Scoring frames", unit="frames")) if progress else None


def _cleared(message: str) -> tuple:
    hidden = gr.update(value=None, visible=False)
    return None, "", message, None, hidden


def _failure(message: str) -> tuple:
    gr.Warning(message)
    return _cleared(f"**Could not analyse this clip.** {message}")


def score_clip(predictor: Predictor, path: str, threshold, frames, gate: ModelGate | None, heatmaps: bool = False,
               progress=None) -> VideoPrediction:
    """analyse_video on an upload, named by its base name in messages, each frame's model call in a gate slot
    (so a long clip does not hold the model between frames)."""
    threshold = checked_threshold(threshold)
    frames = check_frame_count(DEFAULT_FRAMES if frames in (None, "") else frames)
    try:
        f = open(path, "rb")
    except OSError:  # swept from the cache, or deleted after an identical upload was used
        raise UploadRefused() from None
    with f:
        return analyse_video(predictor, f, frames=frames, threshold=threshold, name=Path(path).name,
                             heatmaps=heatmaps, progress=progress, slot=gate.slot if gate else nullcontext)


# ---------------------------------------------------------------------------------------------- the views


def render_clip(result: VideoPrediction, threshold: float | None = None) -> tuple:
    """VIDEO_OUTPUTS but the frames, judged at `threshold` (None: the one it was analysed with): the image
    page's label and verdict scale on the clip's score, the summary and the timeline."""
    if threshold is not None:
        result = replace(result, threshold=threshold)
    pred = result.as_prediction()
    return label_value(pred), verdict_scale(pred), video_summary(result), timeline_figure(result)


def video_summary(result: VideoPrediction) -> str:
    """The headline in words: the clip's score against the threshold and band, which track decides, what was
    read, and what video analysis leaves out."""
    info = result.info
    read = (f"{len(result.frames)} frames sampled from {info.duration:.1f} s ({info.width}x{info.height} "
            f"{info.codec}).")
    if not result.face_found:
        lines = [f"**No verdict.** {NO_FACE_MESSAGE}", read]
    else:
        track = result.deciding_track
        p, t, band = result.fake_prob, result.threshold, result.uncertain_band
        if result.uncertain:
            lead = f"**Uncertain (leans {result.verdict}).** Fake probability {p:.2f} is within ±{band:.2f} of the " \
                   f"threshold {t:.2f}: the model cannot tell reliably."
        else:
            side = "at or above" if result.verdict == "FAKE" else "below"
            lead = f"**{result.verdict}.** Fake probability {p:.2f} is {side} the threshold {t:.2f}, outside the " \
                   f"uncertain band (±{band:.2f})."
        lines = [lead + f" It is face track {track.id + 1}'s score: the mean of its {len(track.probs)} sampled "
                        "frames, the highest and lowest fifth left out.", read,
                 f"{len(result.tracks)} face track(s), one per person followed from frame to frame; the clip's "
                 "verdict follows the most suspicious one."
                 + ("" if all(t.counted for t in result.tracks) else
                    " Tracks seen in too few frames to decide are dotted on the timeline.")]
    if info.truncated:
        lines.append(f"Only the first {info.duration:.1f} s of {info.header_duration:.1f} s could be read: the file "
                     "is truncated.")
    lines.append("Frames only: the sound, lip-sync and motion are not examined.")
    return "\n\n".join(lines)


def timeline_figure(result: VideoPrediction) -> Figure:
    """Each track's fake probability at each sampled frame, over the threshold and its uncertain band."""
    figure = Figure(figsize=(7, 2.8), layout="constrained")
    ax = figure.add_subplot()
    low, high = result.threshold - result.uncertain_band, result.threshold + result.uncertain_band
    ax.axhspan(max(low, 0), min(high, 1), color="0.85", label="uncertain band")
    ax.axhline(result.threshold, color="#d62728", linestyle="--", linewidth=1.2,
               label=f"threshold {result.threshold:.2f}")
    for track in result.tracks:
        colour = TRACK_COLOURS[track.id % len(TRACK_COLOURS)]
        ax.plot(track.times, track.probs, marker="o", markersize=4, color=colour,
                linestyle="-" if track.counted else ":",
                label=f"track {track.id + 1} (mean {track.fake_prob:.2f})")
    ax.set_xlim(0, max(result.info.duration, 1e-3))
    ax.set_ylim(-0.03, 1.03)  # markers at 0 or 1 stay whole
    ax.set_xlabel("time in the clip (s)")
    ax.set_ylabel("fake probability")
    if not result.tracks:
        ax.text(0.5, 0.5, "no face found", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return figure


def suspicious_gallery(result: VideoPrediction) -> list[tuple[Image.Image, str]]:
    """For each of the most suspicious frames: the frame with its faces boxed (in their tracks' colours), then
    the heat map of each face in it."""
    items = []
    for frame in result.suspicious:
        tracks = {tuple(face.box): face.track for face in result.frames[frame.index].faces}
        faces = [(face, tracks.get(tuple(face.box or ()), 0)) for face in frame.prediction.faces if face.box]
        items.append((boxed_frame(frame.image, faces), f"t = {frame.t:.2f} s"))
        for face, track in faces:
            if face.heatmap is not None:
                items.append((heatmap_overlay(face.crop, face.heatmap, side=256),
                              f"t = {frame.t:.2f} s · track {track + 1} · fake {face.fake_prob:.2f}"))
    return items


def boxed_frame(image: Image.Image, faces: list) -> Image.Image:
    """The frame at most FRAME_SIDE pixels long, each (face, track) boxed and labelled in its track's colour."""
    scale = min(1.0, FRAME_SIDE / max(image.size))
    shown = image.resize((round(image.width * scale), round(image.height * scale))) if scale < 1 else image.copy()
    draw = ImageDraw.Draw(shown)
    width = max(2, round(max(shown.size) / 200))
    for face, track in faces:
        colour = TRACK_COLOURS[track % len(TRACK_COLOURS)]
        box = [v * scale for v in face.box]
        draw.rectangle(box, outline=colour, width=width)
        draw.text((box[0] + width, max(0, box[1] - 12)), f"{track + 1}: {face.fake_prob:.2f}", fill=colour)
    return shown


FRAMES_INFO = f"Frames sampled evenly over the clip (1 to {MAX_FRAMES}); more frames take longer."
