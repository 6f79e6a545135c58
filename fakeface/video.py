"""Video: sample a clip's frames, score each frame's faces as a still image, link them into tracks, decide.

    bytes -> sniff (is it a video?) -> open the container (limits checked from its header, no decoding yet)
          -> packet index (demuxing only) -> N frames evenly over the clip, reached by keyframe seeking
          -> each frame: Predictor.predict_image (faces.face_crops -> the model), exactly what the image route
             returns for that frame -> faces linked across frames by box overlap into tracks (one per person)
          -> per track a robust aggregate -> the clip follows its most suspicious track

Frames only: no audio, no lip-sync, no motion or other temporal cue is read; the model is the still-image model.
Decoding is defensive like images.py: the file size, duration and frame size are checked before any frame is
decoded, and a truncated or corrupt file ends in one FakefaceError sentence.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np
from PIL import Image

from .errors import FakefaceError, TooLargeError, UnsupportedFormatError

MAX_VIDEO_BYTES = 100 * 1024 * 1024
MAX_DURATION_S = 300.0  # 5 minutes: a 10-minute clip is refused before decoding
MAX_FRAME_PIXELS = 2560 * 1440  # 1440p; a 4K frame (8.3 MP) costs 4x a 1080p one to decode and is refused
# At most this many frames a second over the longest clip: the packet index of anything denser is refused (a
# hostile file of tiny packets could otherwise make a huge index from a small file).
MAX_INDEX_FRAMES = int(MAX_DURATION_S * 120)
DEFAULT_FRAMES = 16
MAX_FRAMES = 64
READ_BUFFER = 1 << 20  # bytes per read from the file object FFmpeg demuxes
SUPPORTED_TEXT = "MP4, MOV, WebM, MKV or AVI"
# File-name suffixes of those containers, for folder scans (`fakeface predict DIR`); the reader goes by content.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".qt", ".webm", ".mkv", ".avi"})

# Two sampled frames' faces belong to one track when their boxes overlap at least this much (intersection over
# union). Samples of a clip are often a second or more apart, so the bar is low; two people's faces side by side
# do not overlap at all.
TRACK_MIN_IOU = 0.3
# A track seen in fewer sampled frames than this share (at least 1, at most 3 frames) does not decide the clip:
# a face found once among 16 frames is most often a false detection (a pattern in the background), and one
# frame's score is the least reliable. When no track is that long, every track decides (faces were seen).
TRACK_MIN_SHARE = 0.25
TRACK_MIN_FRAMES_CAP = 3
# The robust per-track aggregate: a trimmed mean dropping this share of frames at each end. A still-image model
# misfires on single frames (motion blur, a profile, a hand over the face, a compression burst) in both
# directions; a face swap or a composited face is fake in (nearly) every frame it is on screen. Dropping the
# extreme fifth on each side removes those outliers whichever way they point, and unlike "the mean of the
# confident frames" (the DFDC winner's rule) it needs no second threshold fitted on video data we do not have.
# Tracks under 5 frames keep all their frames (int(0.2 * n) = 0). A short fake segment inside a long real track
# is diluted by it: the timeline shows each frame's score for that reason.
TRIM_SHARE = 0.2
SUSPICIOUS_FRAMES = 3  # the most suspicious frames kept (full size, with heat maps when asked)


# ------------------------------------------------------------------------------------------------- sniffing

# ISO base media brands that are still images (AVIF, HEIF/HEIC), not clips.
_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
# QuickTime files written without an `ftyp` box start with one of these atoms.
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def sniff_container(head: bytes) -> str | None:
    """The demuxer for a file's first 16 bytes: "mov" (MP4, MOV, M4V), "matroska" (MKV, WebM), "avi", or None.

    Only these three demuxers are ever used: a file is never handed to FFmpeg's format guessing, which also knows
    playlists and concat lists that name other files."""
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mov"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def is_video(source) -> bool:
    """True when `source` (path, bytes or binary file object) starts like a supported video container, or is a
    path with a video suffix that does not start like an image (so it gets the video reader's error message)."""
    head = _head(source)
    if sniff_container(head):
        return True
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in VIDEO_SUFFIXES:
        from .images import looks_like_image

        return not looks_like_image(head)
    return False


def _head(source, n: int = 16) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:n])
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return f.read(n)
        except OSError:
            return b""  # missing or unreadable: the reader that takes it says so
    if hasattr(source, "read") and getattr(source, "seekable", lambda: False)():
        at = source.tell()
        head = source.read(n)
        source.seek(at)
        return bytes(head)
    return b""


# ------------------------------------------------------------------------------------------------ the clip


@dataclass
class VideoInfo:
    """What the container says about a clip (read from its header and packet index, nothing decoded)."""

    name: str
    container: str  # the demuxer: mov, matroska or avi
    codec: str
    width: int
    height: int
    duration: float  # seconds spanned by the frames that could be read
    frame_count: int
    header_duration: float | None = None  # what the header claims; longer than `duration` when truncated

    @property
    def fps(self) -> float:
        return self.frame_count / self.duration if self.duration > 0 else 0.0

    @property
    def truncated(self) -> bool:
        return self.header_duration is not None and self.header_duration > self.duration + max(1.0, 0.1 * self.duration)


@dataclass
class SampledFrame:
    t: float  # seconds from the first frame
    image: Image.Image  # upright RGB, full size


class VideoReader:
    """An open clip: `info` is known on construction (limits checked); `sample(n)` decodes n frames.

    Use as a context manager, or call close(). `source`: a path, bytes or a binary file object.
    """

    def __init__(self, source, name: str | None = None):
        import av

        self.name = name if name is not None else _source_name(source)
        size = _source_size(source)
        if size == 0:
            raise FakefaceError(self._at + f"empty file (0 bytes). Choose a video ({SUPPORTED_TEXT}).")
        if size > MAX_VIDEO_BYTES:
            raise TooLargeError(self._at + f"video too large: {size} bytes (limit {MAX_VIDEO_BYTES}). Trim or "
                                           "recompress the clip and try again.")
        head = _head(source)
        demuxer = sniff_container(head)
        if demuxer is None:
            from .images import looks_like_image

            if looks_like_image(head):
                raise UnsupportedFormatError(self._at + "this is a still image, not a video: analyse it as an image.")
            raise UnsupportedFormatError(self._at + f"not a video, or not in a supported format ({SUPPORTED_TEXT}).")
        self.frames_decoded = 0  # by sample(): at most one keyframe interval per sampled frame
        self.packets_skipped = 0  # packets the decoder rejected (damaged data)
        # FFmpeg always gets a file object, never a name: a name would be read as a URL ("concat:", "http:").
        self._file = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            source = self._file = open(source, "rb")
        else:
            source.seek(0)
        try:
            self._container = av.open(_ReadView(source), format=demuxer, buffer_size=READ_BUFFER)
        except av.FFmpegError as exc:
            self._close_file()
            raise self._corrupt(exc) from None
        try:
            self.info, self._index = self._read_header_and_index(demuxer)
        except BaseException:
            self.close()
            raise

    @property
    def _at(self) -> str:
        return f"{self.name}: " if self.name else ""

    def _corrupt(self, exc) -> FakefaceError:
        import av

        if isinstance(exc, av.error.EOFError):
            return FakefaceError(self._at + "the video ends before its first frame (it is empty or truncated). "
                                            "Re-export or re-download it.")
        reason = getattr(exc, "strerror", None) or str(exc)
        return FakefaceError(self._at + f"the video is truncated or corrupt ({reason}). Re-export or re-download it.")

    def close(self) -> None:
        self._container.close()
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------- header, limits and index

    def _read_header_and_index(self, demuxer: str) -> tuple[VideoInfo, "_PacketIndex"]:
        import av

        container = self._container
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise FakefaceError(self._at + f"the file has no video stream (it holds {', '.join(kinds)}).")
        stream = self._stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise FakefaceError(self._at + "the video stream has no frame size; the file is corrupt.")
        if width * height > MAX_FRAME_PIXELS:
            raise TooLargeError(self._at + f"video frames too large: {width}x{height} (limit {MAX_FRAME_PIXELS} "
                                           "pixels, 2560x1440). Resize the clip to 1080p and try again.")
        claimed = _header_duration(container, stream)
        self._check_duration(claimed)
        try:
            index = _PacketIndex.read(container, stream)
        except av.FFmpegError as exc:
            raise self._corrupt(exc) from None
        except OverflowError:
            raise TooLargeError(self._at + f"the video has more than {MAX_INDEX_FRAMES} frames; trim it and try "
                                           "again.") from None
        if not index.times:
            raise FakefaceError(self._at + "the video has no frames.")
        duration = index.span_seconds
        self._check_duration(duration)
        info = VideoInfo(self.name, demuxer, stream.codec_context.name, width, height, duration, len(index.times),
                         header_duration=claimed)
        return info, index

    def _check_duration(self, seconds: float | None) -> None:
        if seconds is not None and seconds > MAX_DURATION_S:
            raise TooLargeError(self._at + f"video too long: {seconds:.0f} s (limit {MAX_DURATION_S:.0f} s). Trim the "
                                           "clip to the part to check and try again.")

    # ----------------------------------------------------------------------------------------------- frames

    def sample(self, n: int = DEFAULT_FRAMES) -> Iterator[SampledFrame]:
        """`n` frames spread evenly over the clip (all of them when it has fewer), in time order.

        Each frame is reached by seeking to the keyframe before it and decoding from there; a frame in the same
        keyframe interval as the previous one is reached by decoding on. So at most one keyframe interval is
        decoded per sampled frame, and never more than the whole clip once.
        """
        import av

        n = check_frame_count(n)
        targets = self._index.evenly_spaced(n)
        frames = None  # decoded frames since the last seek
        last = None  # pts of the last frame decoded
        sampled = 0
        try:
            for target in targets:
                if last is not None and last >= target:
                    continue  # a damaged stretch made the decoder skip past this target already
                key = self._index.keyframe_before(target)
                if frames is None or last is None or last < key:
                    frames, last = self._frames_from(key), None
                for frame in frames:
                    self.frames_decoded += 1
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:
                        continue
                    last = pts
                    if pts >= target:
                        sampled += 1
                        yield SampledFrame(self._index.seconds(pts), _upright(frame))
                        break
                else:
                    return  # the stream ended early (a truncated file): what was read is what there is
        except av.FFmpegError as exc:
            if not sampled:
                raise self._corrupt(exc) from None
            # The file breaks off after some good frames: the frames sampled so far stand.

    def _frames_from(self, key: int) -> Iterator:
        """Decoded frames from the keyframe at or before `key` on. A packet the decoder rejects is skipped (its
        picture is lost until the next keyframe repairs it), so one damaged stretch does not end the clip."""
        import av

        self._container.seek(key, stream=self._stream, backward=True, any_frame=False)
        for packet in self._container.demux(self._stream):
            try:
                decoded = packet.decode()  # the last, empty packet drains the decoder
            except av.error.InvalidDataError:
                self.packets_skipped += 1
                continue
            yield from decoded


class _ReadView:
    """A file object's reading side only. PyAV gives a file object that can also write (a w+b temporary file,
    such as the spooled uploads of a web form) a writing I/O context, from which it then reads nothing."""

    def __init__(self, f):
        self.read, self.seek, self.tell = f.read, f.seek, f.tell


def _upright(frame) -> Image.Image:
    """The frame as RGB, turned as its display matrix says (phones store portrait clips sideways)."""
    image = frame.to_image()
    turn = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
            -180: Image.Transpose.ROTATE_180}.get(round(frame.rotation or 0))
    return image.transpose(turn) if turn is not None else image


def check_frame_count(n) -> int:
    """The number of frames to sample, checked: a whole number from 1 to MAX_FRAMES."""
    try:
        value = int(n) if not isinstance(n, float) or n.is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None or isinstance(n, bool) or not 1 <= value <= MAX_FRAMES:
        raise FakefaceError(f"frames must be a whole number from 1 to {MAX_FRAMES}, not {n!r}.")
    return value


def _header_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


@dataclass
class _PacketIndex:
    """Every video packet's presentation time, and which are keyframes: read by demuxing alone (no decoding)."""

    times: list[int]  # sorted pts, in the stream's time base
    keyframes: list[int]  # sorted pts of the keyframes
    time_base: float
    frame_step: int  # the usual pts step between frames (to give the last frame its duration)

    @classmethod
    def read(cls, container, stream) -> "_PacketIndex":
        times, keyframes = [], []
        for packet in container.demux(stream):
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None or not packet.size:
                continue  # the demuxer's end-of-stream marker, or a packet without a time
            times.append(pts)
            if packet.is_keyframe:
                keyframes.append(pts)
            if len(times) > MAX_INDEX_FRAMES:
                raise OverflowError
        times.sort()
        keyframes.sort()
        steps = np.diff(times)
        step = int(np.median(steps)) if len(steps) else 0
        return cls(times, keyframes, float(stream.time_base or 0), step)

    @property
    def span_seconds(self) -> float:
        return (self.times[-1] - self.times[0] + self.frame_step) * self.time_base

    def seconds(self, pts: int) -> float:
        return round((pts - self.times[0]) * self.time_base, 3)

    def evenly_spaced(self, n: int) -> list[int]:
        """The pts of n frames spread evenly: frame k of the centre of each of n equal stretches."""
        count = len(self.times)
        picks = sorted({min(count - 1, int((i + 0.5) * count / n)) for i in range(n)})
        return [self.times[k] for k in picks]

    def keyframe_before(self, pts: int) -> int:
        """The last keyframe at or before pts (the first frame when the stream starts without one)."""
        k = bisect.bisect_right(self.keyframes, pts) - 1
        return self.keyframes[k] if k >= 0 else self.times[0]


def _source_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return Path(str(getattr(source, "name", "") or "")).name


def _source_size(source) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).stat().st_size
        except FileNotFoundError:
            raise FakefaceError(f"{source}: no such file. Check the path and try again.") from None
        except OSError as exc:
            raise FakefaceError(f"{source}: cannot read the file ({exc.strerror}).") from None
    if hasattr(source, "seek") and hasattr(source, "tell"):
        at = source.tell()
        size = source.seek(0, io.SEEK_END)
        source.seek(at)
        return size
    raise FakefaceError(f"cannot read a video from a {type(source).__name__}; pass a path, bytes or a file.")


# ------------------------------------------------------------------------------------------- faces in time


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_tracks(frame_boxes: list[list[tuple]], min_iou: float = TRACK_MIN_IOU) -> list[list[int]]:
    """Track ids for the boxes of each frame (same shape as `frame_boxes`), from box overlap alone.

    Frame by frame, faces are matched to the tracks seen so far (their last box, however many frames ago) by
    the assignment that maximises total IoU (Hungarian); a face matching no track above `min_iou` starts a new
    one. Ids count from 0 in order of first appearance.
    """
    from scipy.optimize import linear_sum_assignment

    last_box: list[tuple] = []  # track id -> its latest box
    ids_per_frame = []
    for boxes in frame_boxes:
        ids = [-1] * len(boxes)
        if boxes and last_box:
            overlap = np.array([[box_iou(box, last) for last in last_box] for box in boxes])
            rows, cols = linear_sum_assignment(-overlap)
            for r, c in zip(rows, cols):
                if overlap[r, c] >= min_iou:
                    ids[r] = int(c)
        for r, box in enumerate(boxes):
            if ids[r] < 0:
                ids[r] = len(last_box)
                last_box.append(box)
            else:
                last_box[ids[r]] = box
        ids_per_frame.append(ids)
    return ids_per_frame


def trimmed_mean(values, share: float = TRIM_SHARE) -> float:
    """The mean after dropping int(share * n) values at each end (the per-track aggregate; see TRIM_SHARE)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(share * len(ordered))
    return float(ordered[cut:len(ordered) - cut].mean())


def min_track_frames(frames_sampled: int) -> int:
    """How many sampled frames a track needs to decide the clip (see TRACK_MIN_SHARE)."""
    return max(1, min(TRACK_MIN_FRAMES_CAP, math.ceil(TRACK_MIN_SHARE * frames_sampled)))


@dataclass
class VideoFace:
    box: tuple  # (x0, y0, x1, y1) in the upright frame
    fake_prob: float
    track: int


@dataclass
class ClipFrame:
    t: float
    faces: list[VideoFace]


@dataclass
class Track:
    id: int
    times: list[float]  # the sampled frames it is seen in
    probs: list[float]  # its face's fake_prob in each of them
    counted: bool = True  # long enough to decide the clip

    @property
    def fake_prob(self) -> float:
        return trimmed_mean(self.probs)

    def as_dict(self) -> dict:
        return {"id": self.id, "fake_prob": round(self.fake_prob, 6), "frames": len(self.probs),
                "counted": self.counted, "first_t": self.times[0], "last_t": self.times[-1]}


@dataclass
class SuspiciousFrame:
    """One of the frames whose faces scored highest, kept at full size; `prediction` is the image route's
    answer for it (with heat maps when they were asked for)."""

    t: float
    index: int  # its place in VideoPrediction.frames
    image: Image.Image
    prediction: object  # predictor.Prediction


@dataclass
class VideoPrediction:
    info: VideoInfo
    frames: list[ClipFrame]
    tracks: list[Track]
    threshold: float
    uncertain_band: float
    suspicious: list[SuspiciousFrame] = field(default_factory=list)

    @property
    def face_found(self) -> bool:
        return bool(self.tracks)

    @property
    def deciding_track(self) -> Track | None:
        """The most suspicious counted track: the clip's verdict follows it (None without a face)."""
        counted = [t for t in self.tracks if t.counted]
        return max(counted, key=lambda t: t.fake_prob) if counted else None

    @property
    def fake_prob(self) -> float | None:
        track = self.deciding_track
        return None if track is None else track.fake_prob

    def as_prediction(self):
        """The clip's answer as an image's (predictor.Prediction, so the one verdict rule and every view of it
        apply): the deciding track's score; no face, no verdict."""
        from .predictor import Prediction  # here: the predictor imports torch, which `fakeface --help` need not

        return Prediction(fake_prob=self.fake_prob or 0.0, threshold=self.threshold,
                          uncertain_band=self.uncertain_band, face_found=self.face_found)

    @property
    def verdict(self) -> str | None:
        """REAL or FAKE at the threshold; None when no face was found."""
        return self.as_prediction().verdict

    @property
    def uncertain(self) -> bool | None:
        return self.as_prediction().uncertain if self.face_found else None

    @property
    def headline(self) -> str:
        """REAL, UNCERTAIN, FAKE or NO FACE, as for an image."""
        return self.as_prediction().headline

    def as_dict(self, filename: str | None = None) -> dict:
        """The JSON answer (REST, /predict_video): an image answer's fields (verdict, uncertain, headline,
        fake_prob, faces_found = face tracks), then what was read, every track and every sampled frame."""
        fake = self.fake_prob
        row = {"filename": filename if filename is not None else self.info.name,
               "verdict": self.verdict, "uncertain": self.uncertain, "headline": self.headline,
               "fake_prob": None if fake is None else round(fake, 6),
               "real_prob": None if fake is None else round(1 - fake, 6), "threshold": self.threshold,
               "uncertain_band": self.uncertain_band, "faces_found": len(self.tracks),
               "duration": round(self.info.duration, 3), "frames_sampled": len(self.frames),
               "tracks": [t.as_dict() for t in self.tracks],
               "frames": [{"t": f.t, "faces": [{"box": [int(v) for v in x.box], "fake_prob": round(x.fake_prob, 6),
                                                "track": x.track} for x in f.faces]} for f in self.frames]}
        notes = [] if self.face_found else [NO_FACE_MESSAGE]
        if self.info.truncated:
            notes.append(f"Only the first {self.info.duration:.1f} s of {self.info.header_duration:.1f} s could be "
                         "read (the file is truncated).")
        if notes:
            row["message"] = " ".join(notes)
        return row


NO_FACE_MESSAGE = ("No face was found in the sampled frames, so there is no verdict: the model judges faces only. "
                   "Try a clip where a face is clearly visible.")


def analyse_video(predictor, source, frames: int = DEFAULT_FRAMES, threshold: float | None = None,
                  name: str | None = None, heatmaps: bool = False, keep: int = SUSPICIOUS_FRAMES,
                  progress: Callable[[int, int], None] | None = None,
                  slot: Callable[[], ContextManager] = contextlib.nullcontext) -> VideoPrediction:
    """Sample `frames` frames of a clip, score every face in each as the image route would, track, decide.

    predictor: predictor.Predictor. keep: how many of the most suspicious frames to return at full size (with
    heat maps when `heatmaps`). progress(done, total) is called after each frame; `slot()` is held around each
    frame's model call (the server's model gate), so a long clip does not hold the model between frames.
    """
    threshold = predictor.threshold if threshold is None else float(threshold)
    scored: list[tuple[float, list]] = []  # (t, [(box, fake_prob)]) per sampled frame
    best: list = []  # heap of (score, order, SampledFrame, Prediction): the `keep` most suspicious frames
    with VideoReader(source, name=name) as reader:
        total = min(check_frame_count(frames), reader.info.frame_count)
        for order, frame in enumerate(reader.sample(frames)):
            with slot():
                pred = predictor.predict_image(frame.image, threshold=threshold)
            # Without a detector (backend "none") the whole frame is the face: its box is the frame.
            whole = (0, 0, *frame.image.size)
            faces = [(f.box or whole, f.fake_prob) for f in pred.faces] if pred.face_found else []
            scored.append((frame.t, faces))
            if faces and keep > 0:
                item = (max(p for _, p in faces), order, frame, pred)
                (heapq.heappush if len(best) < keep else heapq.heappushpop)(best, item)
            if progress is not None:
                progress(len(scored), total)
        info = reader.info
    if not scored:
        raise FakefaceError(f"{info.name}: no frame of the video could be decoded; the file is corrupt.")
    result = _assemble(info, scored, threshold, predictor.model.uncertain_band)
    for _, order, frame, pred in sorted(best, key=lambda item: (-item[0], item[1])):
        if heatmaps:
            with slot():
                pred = predictor.predict_image(frame.image, threshold=threshold, heatmap=True)
        result.suspicious.append(SuspiciousFrame(frame.t, order, frame.image, pred))
    return result


def _assemble(info: VideoInfo, scored: list, threshold: float, band: float) -> VideoPrediction:
    """Link the frames' faces into tracks and build the clip's prediction."""
    ids = link_tracks([[box for box, _ in faces] for _, faces in scored])
    frames, tracks = [], {}
    for (t, faces), frame_ids in zip(scored, ids):
        frames.append(ClipFrame(t, [VideoFace(tuple(box), float(p), k) for (box, p), k in zip(faces, frame_ids)]))
        for (_, p), k in zip(faces, frame_ids):
            track = tracks.setdefault(k, Track(k, [], []))
            track.times.append(t)
            track.probs.append(float(p))
    ordered = [tracks[k] for k in sorted(tracks)]
    needed = min_track_frames(len(scored))
    if any(len(t.probs) >= needed for t in ordered):
        for track in ordered:
            track.counted = len(track.probs) >= needed
    return VideoPrediction(info, frames, ordered, threshold, band)
