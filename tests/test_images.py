"""fakeface.images.load_image: every valid kind of input decodes to the right RGB picture, every bad one fails
with its own FakefaceError message. All files are generated here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from fakeface import images
from fakeface.errors import FakefaceError
from fakeface.images import MAX_FILE_BYTES, MAX_PIXELS, load_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def pixel(im: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(im)[xy[1], xy[0]].astype(int)


def close_to(actual: np.ndarray, expected, tol: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tol))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(size: int) -> bytes:
    """A valid all-black 1-bit PNG of size x size pixels, a few hundred kB on disk."""
    row = b"\x00" * (1 + (size + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    stream = b"".join(packer.compress(row * 1000) for _ in range(size // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")


def assert_refused(source, *phrases: str) -> str:
    with pytest.raises(FakefaceError) as info:
        load_image(source)
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message, message
    return message


# ---------------------------------------------------------------- bad inputs


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    message = assert_refused(path, "empty file")
    assert str(path) in message  # the user is told which file


def test_random_bytes_named_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_refused(path, "not an image", "supported: JPEG, PNG, WebP, GIF, BMP, TIFF")


@pytest.mark.parametrize(
    "text",
    [
        "<!DOCTYPE html><html><body><img src='face.png'></body></html>",
        '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        '<rect width="10" height="10" fill="red"/></svg>',
    ],
    ids=["html", "svg"],
)
def test_text_renamed_png(tmp_path, text):
    path = tmp_path / "face.png"
    path.write_text(text)
    assert_refused(path, "not an image")


def test_unsupported_format_is_refused(tmp_path):
    path = tmp_path / "face.ico"
    noise(32, 32).save(path, "ICO")
    assert_refused(path, "not an image", "supported:")


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    noise(256, 256).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    assert_refused(data[: len(data) // 2], "image is truncated or corrupt")


def test_png_with_damaged_idat(tmp_path):
    buffer = io.BytesIO()
    noise(64, 64).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 4 + 100] ^= 0xFF  # inside the compressed pixels, so the chunk CRC no longer matches either
    path = tmp_path / "bad_crc.png"
    path.write_bytes(bytes(data))
    assert_refused(path, "image is truncated or corrupt")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(30000))
    assert path.stat().st_size < 1_000_000
    assert_refused(path, "image too large", "900000000 pixels", f"limit {MAX_PIXELS}")


def test_image_just_over_limit_is_refused():
    # 100 MP is between Pillow's warning and error thresholds: the warning must still refuse it.
    assert_refused(bomb_png(10000), "image too large", "100000000 pixels")


def test_own_pixel_check_when_pillow_guard_is_off(monkeypatch):
    # Another library may switch Pillow's guard off; our own check on the header size still refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert_refused(bomb_png(10000), "image too large: 10000x10000 = 100000000 pixels")


def test_pillow_limit_is_ours():
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_file_too_large_bytes():
    assert_refused(b"\xff\xd8\xff" + b"\0" * MAX_FILE_BYTES, "file too large", f"limit {MAX_FILE_BYTES}")


def test_file_too_large_path_is_not_read(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert_refused(path, "file too large", str(MAX_FILE_BYTES + 1))


def test_missing_file_and_folder(tmp_path):
    assert_refused(tmp_path / "nope.jpg", "no such file")
    assert_refused(tmp_path, "is a folder")


def test_text_mode_file_object(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with open(path) as f:
        assert_refused(f, "binary mode")


def test_wrong_source_type():
    assert_refused(12345, "pass a path, bytes or a file")


# ---------------------------------------------------------------- valid inputs


def test_path_bytes_and_file_object_agree(tmp_path):
    path = tmp_path / "face.png"
    noise(40, 30).save(path)
    from_path = load_image(path)
    from_str = load_image(str(path))
    from_bytes = load_image(path.read_bytes())
    with open(path, "rb") as f:
        from_file = load_image(f)
    with open(path, "rb") as f:
        f.read()  # left at its end, as after writing an upload
        from_file_at_end = load_image(f)
    for im in (from_path, from_str, from_bytes, from_file, from_file_at_end):
        assert im.mode == "RGB" and im.size == (40, 30)
        assert np.array_equal(np.asarray(im), np.asarray(from_path))


def test_large_legal_image_loads(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("L", (8000, 8000), 128).save(path, quality=50)  # grayscale keeps the test fast
    im = load_image(path)  # a JPEG this big decodes at half size (draft mode), and says so
    assert im.mode == "RGB" and im.size == (4000, 4000) and im.info[images.DECODE_SCALE] == 2
    assert close_to(pixel(im, (2000, 2000)), (128, 128, 128), tol=2)
    png = tmp_path / "big.png"
    Image.new("L", (8000, 8000), 128).save(png)
    assert load_image(png).size == (8000, 8000)  # other formats decode in full


def test_one_pixel(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    im = load_image(path)
    assert im.size == (1, 1) and tuple(pixel(im, (0, 0))) == (10, 20, 30)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=95)  # no cyan/black, full magenta+yellow
    assert Image.open(path).mode == "CMYK"
    im = load_image(path)
    assert im.mode == "RGB" and close_to(pixel(im, (16, 16)), RED, tol=20)


def test_sixteen_bit_png_keeps_its_gradient(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (8, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    row = np.asarray(load_image(path))[0, :, 0].astype(int)
    assert np.all(np.abs(row - (ramp[0] // 256)) <= 1)  # scaled, not clipped at 255
    assert row[0] == 0 and row[-1] == 255 and row[128] in range(126, 131)
    assert np.all(np.diff(row) >= 0)


def test_sixteen_bit_big_endian_and_float(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=">u2")
    big = Image.frombytes("I;16B", (3, 1), values.tobytes())
    assert tuple(np.asarray(images._to_rgb(big))[0, :, 0]) == (0, 128, 255)
    floats = Image.fromarray(np.array([[-1.0, 0.0, 3.0]], dtype=np.float32))
    assert tuple(np.asarray(images._to_rgb(floats))[0, :, 0]) == (0, 64, 255)


def test_float_tiff(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.linspace(0, 1000, 64, dtype=np.float32).reshape(8, 8)).save(path)
    gray = np.asarray(load_image(path))[..., 0].astype(int).ravel()
    assert gray[0] == 0 and gray[-1] == 255 and np.all(np.diff(gray) >= 0)


def test_palette_with_transparency_goes_on_white(tmp_path):
    pal = Image.new("P", (20, 10), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (10, 0, 20, 10))  # right half index 1 = red; left half index 0 = transparent black
    path = tmp_path / "pal.png"
    pal.save(path, transparency=0)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (20, 10)
    assert tuple(pixel(im, (2, 5))) == WHITE
    assert tuple(pixel(im, (15, 5))) == RED


def test_rgba_and_la_composited_on_white(tmp_path):
    arr = np.zeros((10, 30, 4), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0, 0)  # fully transparent red -> white
    arr[:, 10:20] = (0, 0, 255, 255)  # opaque blue
    arr[:, 20:] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    im = load_image(path)
    assert tuple(pixel(im, (5, 5))) == WHITE
    assert tuple(pixel(im, (15, 5))) == BLUE
    assert close_to(pixel(im, (25, 5)), (127, 127, 127), tol=2)
    la = tmp_path / "la.png"
    Image.new("LA", (4, 4), (0, 0)).save(la)
    assert tuple(pixel(load_image(la), (1, 1))) == WHITE


def test_rgb_png_with_colour_key_transparency(tmp_path):
    im = Image.new("RGB", (10, 4), (0, 255, 0))
    im.paste((9, 9, 9), (0, 0, 5, 4))  # left half uses the transparent key colour
    path = tmp_path / "key.png"
    im.save(path, transparency=(9, 9, 9))
    loaded = load_image(path)
    assert tuple(pixel(loaded, (1, 1))) == WHITE and tuple(pixel(loaded, (8, 1))) == GREEN


def test_grayscale_and_one_bit(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (8, 8), 77).save(gray)
    im = load_image(gray)
    assert im.mode == "RGB" and tuple(pixel(im, (3, 3))) == (77, 77, 77)
    bits = tmp_path / "bits.bmp"
    one = Image.new("1", (8, 8), 0)
    one.paste(1, (4, 0, 8, 8))
    one.save(bits)
    im = load_image(bits)
    assert tuple(pixel(im, (1, 1))) == (0, 0, 0) and tuple(pixel(im, (6, 1))) == WHITE


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (16, 16) and tuple(pixel(im, (8, 8))) == RED


def test_webp_still_and_animated(tmp_path):
    still = tmp_path / "face.webp"
    Image.new("RGB", (24, 16), GREEN).save(still, quality=95)
    im = load_image(still)
    assert im.size == (24, 16) and close_to(pixel(im, (12, 8)), GREEN)
    anim = tmp_path / "anim.webp"
    frames = [Image.new("RGB", (16, 16), c) for c in (BLUE, RED)]
    frames[0].save(anim, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert close_to(pixel(load_image(anim), (8, 8)), BLUE, tol=2)


@pytest.mark.parametrize("fmt,suffix", [("BMP", "bmp"), ("TIFF", "tif")])
def test_bmp_and_tiff(tmp_path, fmt, suffix):
    path = tmp_path / f"face.{suffix}"
    source = noise(20, 12)
    source.save(path, fmt)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(source))


def test_mpo_first_picture(tmp_path):
    path = tmp_path / "stereo.mpo"
    left, right = Image.new("RGB", (32, 16), RED), Image.new("RGB", (32, 16), BLUE)
    left.save(path, "MPO", save_all=True, append_images=[right], quality=95)
    assert Image.open(path).format == "MPO"
    im = load_image(path)
    assert im.size == (32, 16) and close_to(pixel(im, (16, 8)), RED)


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (60, 40), BLUE)
    stored.paste(RED, (0, 0, 12, 12))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    im = load_image(path)
    assert im.size == (40, 60)  # width and height swap
    assert close_to(pixel(im, (40 - 6, 6)), RED, tol=30)  # top-left went to the top-right
    assert close_to(pixel(im, (6, 6)), BLUE, tol=30)
    assert close_to(pixel(im, (6, 60 - 6)), BLUE, tol=30)


def test_result_is_detached_from_the_file(tmp_path):
    path = tmp_path / "face.jpg"
    noise(16, 16).save(path)
    im = load_image(path)
    path.unlink()  # fully loaded: nothing is read later
    assert np.asarray(im).shape == (16, 16, 3)


def test_huge_jpeg_decodes_at_reduced_size_and_says_by_how_much():
    """Draft mode: a JPEG twice DECODE_MIN_SIDE long decodes at half size; PNGs and smaller JPEGs do not."""
    side = 2 * images.DECODE_MIN_SIDE
    ramp = Image.linear_gradient("L").resize((side, 48)).convert("RGB")
    jpeg, png = io.BytesIO(), io.BytesIO()
    ramp.save(jpeg, "JPEG", quality=80)
    ramp.save(png, "PNG")
    small = load_image(jpeg.getvalue())
    assert small.size == (side // 2, 24) and small.info[images.DECODE_SCALE] == 2
    assert load_image(png.getvalue()).size == (side, 48)
    cropped = io.BytesIO()
    ramp.crop((0, 0, side - 8, 48)).save(cropped, "JPEG")
    assert images.DECODE_SCALE not in load_image(cropped.getvalue()).info


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_exif_rotated_copy_reads_back_upright(orientation):
    """transforms.exif_rotated_copy stores a photo sideways with the tag that turns it upright (the delivery
    check "exif:N"); the project's loader must give the upright photo back."""
    from fakeface.transforms import exif_rotated_copy

    rng = np.random.default_rng(orientation)
    upright = Image.fromarray(np.repeat(np.repeat(rng.integers(0, 255, (6, 4, 3), dtype=np.uint8), 16, 0), 16, 1))
    stored = Image.open(io.BytesIO(exif_rotated_copy(upright, orientation)))
    assert stored.size == (upright.size if orientation == 3 else upright.size[::-1])
    back = load_image(exif_rotated_copy(upright, orientation))
    assert back.size == upright.size
    assert np.abs(np.asarray(back, float) - np.asarray(upright, float)).mean() < 4  # JPEG q95 only
