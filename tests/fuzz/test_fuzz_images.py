"""Hostile image files: every one is read correctly or refused with one InputError line, never a traceback, a hang
or an unbounded allocation (declared sizes are checked against the pixel limit before decoding)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageOps

from deploykit.errors import InputError
from deploykit.imaging.images import DEFAULT_MAX_PIXELS, pixel_limit, read_image, write_image

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "TIFF", "WEBP", "GIF", "BMP"]
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a",
         b"BM", b""]


def _check_picture(picture, width: int | None = None, height: int | None = None) -> None:
    assert picture.rgb.dtype == np.float32 and picture.rgb.ndim == 3 and picture.rgb.shape[0] == 3
    assert np.isfinite(picture.rgb).all() and picture.rgb.min() >= 0 and picture.rgb.max() <= 1
    if width is not None:
        assert {picture.width, picture.height} == {width, height}  # EXIF may swap them
    if picture.alpha is not None:
        assert picture.alpha.shape == picture.rgb.shape[1:]


def _read(path: Path):
    """read_image's contract: a Picture, or InputError naming the file on one line."""
    try:
        return read_image(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return None


def _encoded(mode: str, fmt: str, width: int, height: int, seed: int, **options) -> bytes | None:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    image = base.convert("P") if mode in ("P", "PA") else base.convert(mode) if mode not in ("I;16",) else \
        Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "PA":
        image = image.convert("PA")
    buf = io.BytesIO()
    try:
        image.save(buf, format=fmt, **options)
    except (OSError, ValueError, KeyError):
        return None  # this format cannot hold this mode
    return buf.getvalue()


@fuzz(120)
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS), width=st.integers(1, 24),
       height=st.integers(1, 24), seed=st.integers(0, 2**16), cut=st.floats(0, 1), flips=st.integers(0, 6))
def test_damaged_files_are_read_or_refused_in_one_line(tmp_path_factory, mode, fmt, width, height, seed, cut,
                                                       flips):
    data = _encoded(mode, fmt, width, height, seed)
    if data is None:
        return
    intact = _read_bytes(tmp_path_factory, data, fmt)
    if intact is not None:
        _check_picture(intact, width, height)
    rng = np.random.default_rng(seed)
    damaged = bytearray(data[: max(1, int(len(data) * cut))] if cut < 1 else data)
    for _ in range(flips):
        damaged[int(rng.integers(len(damaged)))] = int(rng.integers(256))
    picture = _read_bytes(tmp_path_factory, bytes(damaged), fmt)
    if picture is not None:
        _check_picture(picture)


def _read_bytes(tmp_path_factory, data: bytes, fmt: str):
    path = tmp_path_factory.mktemp("img") / f"in.{fmt.lower()}"
    path.write_bytes(data)
    return _read(path)


@fuzz(150)
@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=512))
def test_garbage_after_any_magic_is_refused_in_one_line(tmp_path_factory, magic, tail):
    picture = _read_bytes(tmp_path_factory, magic + tail, "png")
    if picture is not None:
        _check_picture(picture)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_declaring(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


LIMIT = 4096  # a small limit keeps every accepted example cheap to decode


@fuzz(80)
@given(width=st.one_of(st.integers(1, 128), st.integers(1, 2**31 - 1)),
       height=st.one_of(st.integers(1, 128), st.integers(1, 2**31 - 1)),
       kind=st.sampled_from([(8, 2), (8, 6), (16, 2), (16, 6), (16, 0), (8, 0)]), zeros=st.integers(0, 1 << 20))
def test_huge_declared_sizes_are_refused_before_decoding(tmp_path_factory, width, height, kind, zeros):
    """A tiny file declaring a huge image (and a zlib bomb of zeros): the pixel limit, not the allocator, decides."""
    depth, colour = kind
    data = _png_declaring(width, height, depth, colour, zlib.compress(b"\x00" * zeros, 9))
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(data)
    with pixel_limit(LIMIT):
        if width * height > LIMIT:
            with pytest.raises(InputError, match=f"over the limit of {LIMIT:,}.*--max-pixels {width * height} "):
                read_image(path)
        else:
            picture = _read(path)
            if picture is not None:
                _check_picture(picture, width, height)


@pytest.mark.parametrize("width,height", [(10001, 10000), (2**31 - 1, 2**31 - 1), (1, 200_000_001)])
def test_default_limit_refuses_a_bomb_at_once(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(width, height, 8, 2, zlib.compress(b"\x00" * 1000)))
    with pytest.raises(InputError, match=f"{width * height:,} pixels, over the limit of {DEFAULT_MAX_PIXELS:,}"):
        read_image(path)


def test_max_pixels_raises_the_limit_and_16bit_readers_check_it(tmp_path):
    rgb = np.random.default_rng(0).random((3, 40, 50), dtype=np.float32)
    for suffix in ("png", "tif"):
        path = write_image(tmp_path / f"img16.{suffix}", rgb, bit_depth=16)
        with pixel_limit(1999), pytest.raises(InputError, match=r"50x40 is 2,000 pixels, over the limit of 1,999"):
            read_image(path)
        with pixel_limit(2000):
            assert read_image(path).bit_depth == 16
    eight = write_image(tmp_path / "img8.png", rgb)
    with pixel_limit(100), pytest.raises(InputError, match="--max-pixels 2000"):
        read_image(eight)
    with pixel_limit(2 * 10**9):  # above Pillow's own bomb limit: --max-pixels really raises it
        assert Image.MAX_IMAGE_PIXELS != 2 * 10**9
        assert read_image(eight).width == 50
    with pytest.raises(InputError, match="positive"), pixel_limit(0):
        pass


@fuzz(40)
@given(orientation=st.integers(1, 8), width=st.integers(1, 9), height=st.integers(1, 9), seed=st.integers(0, 999))
def test_exif_orientation_is_applied_like_pillow(tmp_path_factory, orientation, width, height, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path_factory.mktemp("exif") / "o.png"
    image.save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), np.float32) / 255
    picture = read_image(path)
    assert picture.orientation == orientation
    np.testing.assert_allclose(picture.rgb.transpose(1, 2, 0), expected, atol=1e-6)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG"])
def test_multi_frame_files_read_their_first_frame(tmp_path, fmt):
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)) for _ in range(3)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    expected = np.asarray(frames[0].convert("RGB"), np.float32) / 255
    picture = read_image(path)
    np.testing.assert_allclose(picture.rgb.transpose(1, 2, 0), expected, atol=1e-6)
