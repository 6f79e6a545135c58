"""The one image decoder: every image (training, CLI, app, REST) goes through `load_image`.

Images come from users, so decoding is defensive: the file size and the pixel count are checked before any
pixel is decoded, only a few common formats are accepted, and a broken file fails here with a clear
`FakefaceError` instead of turning into a half-grey picture later.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import FakefaceError, TooLargeError, UnsupportedFormatError

MAX_FILE_BYTES = 30 * 1024 * 1024
MAX_PIXELS = 80_000_000  # an 8000x8000 photo (64 MP) loads; a 10000x10000 one does not
# A JPEG with a longer side of twice this or more is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's own DCT
# scaling, Pillow's draft mode), keeping the longer side at least this: an 8000x8000 photo decodes at 4000x4000,
# a quarter of the memory, while its faces keep more pixels than the 224-px crops the model reads. The image
# keeps the factor in `info[DECODE_SCALE]`, so face boxes are reported in the file's own pixels.
DECODE_MIN_SIDE = 3000
DECODE_SCALE = "fakeface_decode_scale"

# Pillow's own guard warns above MAX_IMAGE_PIXELS and refuses above twice that. Its default (~89 MP) is close
# to ours by chance only: we set it on purpose so that the library-wide guard (which also covers GIF frames and
# TIFF tiles that we never see as `im.size`) matches the limit we promise.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Formats Pillow is allowed to try. MPO (multi-picture JPEG from cameras) is opened by the JPEG plugin.
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ALLOWED_FORMATS = frozenset(_OPEN_FORMATS + ("MPO",))
_SUPPORTED_TEXT = "supported: JPEG, PNG, WebP, GIF, BMP, TIFF"
# File-name suffixes of those formats: the one list every folder scan (training data, `fakeface predict DIR`,
# the app's examples) uses to pick image files. The decoder itself goes by content, never by name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                            ".mpo"})

# Modes that carry an alpha channel; they are flattened onto white.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


def _at(name: str) -> str:
    """Message prefix naming the file, when there is a name to show."""
    return f"{name}: " if name else ""


def check_file_size(n_bytes: int, name: str = "") -> None:
    """Raise FakefaceError if a file of `n_bytes` is empty or over MAX_FILE_BYTES."""
    if n_bytes == 0:
        raise FakefaceError(_at(name) + "empty file (0 bytes). Choose a JPEG, PNG or WebP image.")
    if n_bytes > MAX_FILE_BYTES:
        raise TooLargeError(
            _at(name) + f"file too large: {n_bytes} bytes (limit {MAX_FILE_BYTES}). "
            "Resize or recompress the image and try again."
        )


def check_pixel_count(width: int, height: int, name: str = "") -> None:
    """Raise FakefaceError if a width x height image is over MAX_PIXELS."""
    pixels = width * height
    if pixels > MAX_PIXELS:
        raise TooLargeError(
            _at(name) + f"image too large: {width}x{height} = {pixels} pixels (limit {MAX_PIXELS}). "
            "Resize the image and try again."
        )


def load_image(source: ImageSource) -> Image.Image:
    """Decode a path, bytes or binary file object into an upright, fully loaded RGB image.

    Raises FakefaceError for anything that is not a readable image within the limits.
    """
    return decode_image(*read_file_bytes(source))


def decode_image(name: str, data: bytes) -> Image.Image:
    """`load_image` for a file's bytes already read by `read_file_bytes` (whose other readers, such as the
    provenance metadata, need the original bytes too)."""
    with _open_header(data, name) as im:
        check_pixel_count(im.width, im.height, name)
        if im.format == "PNG":
            _verify_png(data, name)
        scale = _draft(im)
        _decode(im, name)
        upright = _to_rgb(_exif_upright(im))
        if scale != 1:
            upright.info[DECODE_SCALE] = scale
        return upright


def _draft(im: ImageFile.ImageFile) -> float:
    """Ask libjpeg for a reduced decode of a huge JPEG (see DECODE_MIN_SIDE); the factor it took (1 if none)."""
    longer = max(im.size)
    if im.format not in ("JPEG", "MPO") or longer < 2 * DECODE_MIN_SIDE:
        return 1
    width = im.width
    wanted = tuple(max(1, -(-side * DECODE_MIN_SIDE // longer)) for side in im.size)  # ceiling division
    im.draft(im.mode, wanted)
    return width / im.width


def read_file_bytes(source: ImageSource) -> tuple[str, bytes]:
    """(a name for messages, the file's bytes as given), within the size limit."""
    name, data = _read_source(source)
    check_file_size(len(data), name)
    return name, data


def _read_source(source: ImageSource) -> tuple[str, bytes]:
    """Return (a name for messages, the file's bytes), reading at most MAX_FILE_BYTES + 1 bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "", bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source))
    if hasattr(source, "read"):
        name = Path(str(getattr(source, "name", ""))).name
        if getattr(source, "seekable", lambda: False)():
            source.seek(0)  # like Image.open: a just-written upload is often left at its end
        data = source.read(MAX_FILE_BYTES + 1)  # one byte over is enough to know it is too large
        if not isinstance(data, (bytes, bytearray)):
            raise FakefaceError(_at(name) + "file object is not opened in binary mode; open it with 'rb'.")
        return name, bytes(data)
    raise FakefaceError(f"cannot read an image from a {type(source).__name__}; pass a path, bytes or a file.")


def _read_path(path: Path) -> tuple[str, bytes]:
    # The size is checked from the directory entry first so that a huge file is never read into memory.
    try:
        check_file_size(path.stat().st_size, str(path))
        return str(path), path.read_bytes()
    except FileNotFoundError:
        raise FakefaceError(f"{path}: no such file. Check the path and try again.") from None
    except IsADirectoryError:
        raise FakefaceError(f"{path}: is a folder, not an image file.") from None
    except PermissionError:
        raise FakefaceError(f"{path}: permission denied; cannot read the file.") from None


def _open_header(data: bytes, name: str) -> ImageFile.ImageFile:
    """Identify the format and read the header only (no pixels are decoded yet)."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large_from_pillow(exc, name) from None
    except UnidentifiedImageError:
        kind = _signature_format(data)
        if kind:  # Pillow hides a plugin's parse error behind "cannot identify": say what it really is
            raise _corrupt(name, f"its {kind} header cannot be read") from None
        raise UnsupportedFormatError(
            _at(name) + f"not an image, or not in a supported format ({_SUPPORTED_TEXT})."
        ) from None
    except Exception as exc:  # a header Pillow recognised but could not parse
        raise _corrupt(name, exc) from None
    if im.format not in ALLOWED_FORMATS:  # plugins can hand back subclasses; accept only what we listed
        im.close()
        raise UnsupportedFormatError(_at(name) + f"{im.format} images are not accepted ({_SUPPORTED_TEXT}).")
    return im


# Leading bytes of the accepted formats, to tell "broken PNG" from "not an image at all".
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), None)


def looks_like_image(head: bytes) -> bool:
    """True when a file's first bytes are those of an accepted image format (a BMP too)."""
    return _signature_format(head) is not None or head.startswith(b"BM")


def _verify_png(data: bytes, name: str) -> None:
    """Check every chunk checksum up to IEND. Pillow checks those before the pixels only, so a PNG damaged in its
    image data (bad IDAT CRC) would otherwise decode into whatever the damaged bytes say, as libpng would not."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as im:
            im.verify()
    except Exception as exc:  # SyntaxError (bad CRC), OSError/EOFError (truncated)
        raise _corrupt(name, exc) from None


def _too_large_from_pillow(exc: Exception, name: str) -> FakefaceError:
    # Pillow's message carries the pixel count but not the dimensions.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    count = match.group(1) if match else "too many"
    return TooLargeError(
        _at(name) + f"image too large: {count} pixels (limit {MAX_PIXELS}). Resize the image and try again."
    )


def _corrupt(name: str, exc: Exception | str) -> FakefaceError:
    return FakefaceError(_at(name) + f"image is truncated or corrupt ({exc}). Re-export or re-download it.")


def _decode(im: ImageFile.ImageFile, name: str) -> None:
    """Decode all pixels now, so that truncated or corrupt data fails here and not later."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone enabled Pillow's lenient mode; it would pad broken images with grey instead of failing.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; unset it so broken images are caught.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()  # first frame only for animated GIF/WebP
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large_from_pillow(exc, name) from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError... for bad data
        raise _corrupt(name, exc) from None


def _exif_upright(im: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        return im.copy()


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB without clipping or dropping detail."""
    # Deep greyscale first: Pillow's own convert() would clip these at 255. (A tRNS key on them is ignored.)
    if im.mode in _SIXTEEN_BIT_MODES:
        return _gray_array_to_rgb(np.asarray(im).astype(np.float64) / 256.0)
    if im.mode == "I":
        return _gray_array_to_rgb(_scale_int32(np.asarray(im)))
    if im.mode == "F":
        return _gray_array_to_rgb(_scale_by_range(np.asarray(im, dtype=np.float64)))
    if im.mode in _ALPHA_MODES or "transparency" in im.info:  # includes RGB/L PNGs with a tRNS colour key
        return _flatten_on_white(im.convert("RGBA"))
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")  # 1, L, P, CMYK, YCbCr...
    except ValueError as exc:
        raise FakefaceError(f"colour mode {im.mode} is not supported ({exc}); save it as RGB.") from None


def _scale_int32(values: np.ndarray) -> np.ndarray:
    # Mode "I" usually holds 16-bit samples (16-bit PNG/TIFF in some Pillow versions); anything else is scaled
    # by its own range.
    if values.size and values.min() >= 0 and values.max() <= 65535:
        return values.astype(np.float64) / 256.0
    return _scale_by_range(values.astype(np.float64))


def _scale_by_range(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    span = high - low if high > low else 1.0
    return (values - low) * (255.0 / span)


def _gray_array_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    # White, not black: transparent areas of logos, stickers and cut-out faces are meant to show the page
    # behind them, which is almost always white; black would add hard dark edges a detector could latch onto.
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
