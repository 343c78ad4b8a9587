"""Image I/O: exact round trips at 8 and 16 bits, gray, alpha, palette, EXIF orientation, broken files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from deploykit.errors import InputError
from deploykit.imaging.images import _unfilter, quantize, read_image, resize_plane, write_image


def _rng(seed=0):
    return np.random.default_rng(seed)


def _samples(picture, channels: int) -> np.ndarray:
    """A Picture back to integer samples [H, W, C] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)."""
    colour = picture.rgb[:1] if channels <= 2 else picture.rgb
    planes = [colour] + ([picture.alpha[None]] if picture.alpha is not None else [])
    return quantize(np.concatenate(planes).transpose(1, 2, 0), picture.bit_depth)


def _png_bytes(samples: np.ndarray, depth: int, kinds: list[int]) -> bytes:
    """A PNG whose rows use the given filter types (a slow, obviously-correct reference encoder)."""
    h, w, ch = samples.shape
    rows = samples.astype(">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1).astype(int)
    bpp = ch * depth // 8
    raw = bytearray()
    for y in range(h):
        raw.append(kinds[y])
        for x in range(rows.shape[1]):
            a = rows[y, x - bpp] if x >= bpp else 0
            b = rows[y - 1, x] if y else 0
            c = rows[y - 1, x - bpp] if y and x >= bpp else 0
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (b if abs(p - b) <= abs(p - c)
                                                                                      else c)
            raw.append((rows[y, x] - [0, a, b, (a + b) // 2, paeth][kinds[y]]) % 256)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_8bit_rgb_round_trip_is_exact(tmp_path, suffix):
    samples = _rng().integers(0, 256, (13, 17, 3), dtype=np.uint8)
    src = tmp_path / f"in{suffix}"
    Image.fromarray(samples).save(src, **({"lossless": True} if suffix == ".webp" else {}))
    pic = read_image(src)
    assert (pic.bit_depth, pic.grayscale, pic.alpha, pic.rgb.shape) == (8, False, None, (3, 13, 17))
    assert pic.rgb.dtype == np.float32 and np.array_equal(_samples(pic, 3), samples)
    out = write_image(tmp_path / f"out{suffix}", pic.rgb, bit_depth=8, quality=100)
    assert np.array_equal(np.asarray(Image.open(out)), samples)


@pytest.mark.parametrize("suffix,channels", [(".png", 3), (".png", 4), (".png", 1), (".png", 2),
                                             (".tif", 3), (".tif", 4), (".tif", 1)])
def test_16bit_round_trip_is_exact(tmp_path, suffix, channels):
    samples = _rng(channels).integers(0, 65536, (11, 9, channels)).astype(np.uint16)
    gray = channels <= 2
    rgb = np.repeat(samples[..., :1], 3, 2) if gray else samples[..., :3]
    alpha = samples[..., -1] / 65535.0 if channels in (2, 4) else None
    path = write_image(tmp_path / f"x{suffix}", rgb.transpose(2, 0, 1) / 65535.0, alpha=alpha, bit_depth=16,
                       grayscale=gray)
    pic = read_image(path)
    assert pic.bit_depth == 16 and pic.grayscale == gray and (pic.alpha is not None) == (channels in (2, 4))
    assert np.array_equal(_samples(pic, channels), samples)
    assert pic.rgb.max() > 1.0 / 255  # really 16-bit values, not 8-bit ones


def test_16bit_gray_from_pillow_and_back(tmp_path):
    values = _rng(3).integers(0, 65536, (7, 10)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")  # Pillow writes mode I;16
    pic = read_image(tmp_path / "g16.png")
    assert pic.bit_depth == 16 and pic.grayscale
    assert np.array_equal(pic.rgb[0], pic.rgb[2]) and np.array_equal(quantize(pic.rgb[0], 16), values)
    out = write_image(tmp_path / "o.png", pic.rgb, bit_depth=16, grayscale=True)
    assert np.array_equal(np.asarray(Image.open(out)).astype(np.uint16), values)


@pytest.mark.parametrize("depth,channels", [(8, 3), (8, 4), (16, 3), (16, 4), (16, 2)])
def test_png_every_filter_type(tmp_path, depth, channels):
    """Our 16-bit decoder undoes None/Sub/Up/Average/Paeth; 8-bit files go through Pillow (cross-check below)."""
    samples = _rng(depth + channels).integers(0, 2 ** depth, (10, 12, channels))
    kinds = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]
    (tmp_path / "f.png").write_bytes(_png_bytes(samples, depth, kinds))
    pic = read_image(tmp_path / "f.png")
    assert pic.bit_depth == depth and np.array_equal(_samples(pic, channels), samples)


def test_wavefront_unfilter_matches_pillow_on_8bit(tmp_path):
    samples = _rng(9).integers(0, 256, (9, 14, 3))
    kinds = [4, 3, 4, 1, 3, 2, 4, 0, 3]
    data = _png_bytes(samples, 8, kinds)
    (tmp_path / "p.png").write_bytes(data)
    raw = zlib.decompress(data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8])
    ours = _unfilter(raw, 9, 14, 3, tmp_path).reshape(9, 14, 3)
    assert np.array_equal(ours, np.asarray(Image.open(tmp_path / "p.png")))


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("L", ".jpg"), ("LA", ".png"), ("1", ".png")])
def test_grayscale_runs_as_rgb_and_is_written_gray(tmp_path, mode, suffix):
    base = _rng(5).integers(0, 256, (8, 6, 2), dtype=np.uint8)
    image = Image.fromarray(base, "LA").convert(mode)
    image.save(tmp_path / f"g{suffix}")
    pic = read_image(tmp_path / f"g{suffix}")
    assert pic.grayscale and pic.rgb.shape == (3, 8, 6)
    assert np.array_equal(pic.rgb[0], pic.rgb[1]) and np.array_equal(pic.rgb[1], pic.rgb[2])
    assert (pic.alpha is not None) == (mode == "LA")
    out = write_image(tmp_path / f"o{suffix}", pic.rgb, alpha=pic.alpha, grayscale=True, quality=100)
    written = Image.open(out)
    assert written.mode == ("LA" if mode == "LA" else "L")
    if suffix == ".png":  # lossless: the gray values come back exactly (luma of R=G=B is the value)
        assert np.array_equal(np.asarray(written.convert("L")), np.asarray(Image.open(tmp_path / "g.png").convert("L")))


def test_rgba_alpha_is_carried(tmp_path):
    samples = _rng(6).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(samples, "RGBA").save(tmp_path / "a.png")
    pic = read_image(tmp_path / "a.png")
    assert pic.alpha is not None and np.array_equal(_samples(pic, 4), samples)
    out = write_image(tmp_path / "o.png", pic.rgb, alpha=pic.alpha)
    assert Image.open(out).mode == "RGBA" and np.array_equal(np.asarray(Image.open(out)), samples)


def test_alpha_resize_for_super_resolution():
    alpha = np.zeros((6, 8), np.float32)
    alpha[:, 4:] = 1.0
    big = resize_plane(alpha, 24, 32)
    assert big.shape == (24, 32) and big.min() >= 0 and big.max() <= 1
    assert big[:, :12].max() == 0.0 and big[:, 20:].min() == 1.0


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_images(tmp_path, transparent):
    rgb = _rng(7).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    if transparent:
        pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", **({"transparency": 0} if transparent else {}))
    pic = read_image(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGBA" if transparent else "RGB"))
    assert pic.mode == "P" and (pic.alpha is not None) == transparent
    assert np.array_equal(_samples(pic, 4 if transparent else 3), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_and_dropped(tmp_path, orientation):
    samples = _rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "deploykit-test"  # Make: kept in the output
    Image.fromarray(samples).save(tmp_path / "e.png", exif=exif.tobytes())
    pic = read_image(tmp_path / "e.png")
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "e.png")))
    assert pic.orientation == orientation and np.array_equal(_samples(pic, 3), upright)
    out = write_image(tmp_path / "o.png", pic.rgb, exif=pic.exif)
    written = Image.open(out).getexif()
    assert 0x0112 not in written and written.get(0x010F) == "deploykit-test"


def test_16bit_png_exif_orientation(tmp_path):
    samples = _rng(8).integers(0, 65536, (4, 6, 3))
    data = _png_bytes(samples, 16, [0] * 4)
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body) & 0xFFFFFFFF)
    at = data.index(b"IDAT") - 4
    (tmp_path / "r.png").write_bytes(data[:at] + chunk + data[at:])
    pic = read_image(tmp_path / "r.png")
    assert (pic.height, pic.width, pic.bit_depth) == (6, 4, 16)
    assert np.array_equal(_samples(pic, 3), np.rot90(samples, -1))


def test_16bit_to_8bit_and_icc_carried(tmp_path):
    values = np.linspace(0, 1, 24, dtype=np.float32).reshape(1, 4, 6).repeat(3, 0)
    icc = b"fake-icc-profile-bytes" * 4
    path = write_image(tmp_path / "a.png", values, bit_depth=16, icc_profile=icc)
    pic = read_image(path)
    assert pic.icc_profile == icc
    out = write_image(tmp_path / "b.png", pic.rgb, bit_depth=8, icc_profile=pic.icc_profile)
    assert np.array_equal(np.asarray(Image.open(out))[..., 0], quantize(values[0], 8))
    assert Image.open(out).info.get("icc_profile") == icc


def _one_line_naming(exc: InputError, path) -> None:
    text = str(exc)
    assert str(path) in text and "\n" not in text


def test_broken_files_give_one_line_errors_naming_them(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    cases = {
        "truncated.png": good.read_bytes()[: len(good.read_bytes()) // 2],
        "garbage.png": b"this is not an image" * 10,
        "empty.jpg": b"",
        "truncated16.png": _png_bytes(_rng().integers(0, 65536, (8, 8, 3)), 16, [1] * 8)[:-40],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as info:
            read_image(tmp_path / name)
        _one_line_naming(info.value, tmp_path / name)
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_write_refusals(tmp_path):
    rgb = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(InputError, match="8 bits"):
        write_image(tmp_path / "a.jpg", rgb, bit_depth=16)
    with pytest.raises(InputError, match="alpha"):
        write_image(tmp_path / "a.jpg", rgb, alpha=np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match=r"\.bmp"):
        write_image(tmp_path / "a.bmp", rgb)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_values_are_clipped_and_rounded(tmp_path):
    rgb = np.array([-0.5, 0.5 / 255, 1.49 / 255, 2.0], np.float32).reshape(1, 1, 4).repeat(3, 0)
    out = write_image(tmp_path / "c.png", rgb)
    assert np.asarray(Image.open(out))[0, :, 0].tolist() == [0, 0, 1, 255]


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    from deploykit.util.files import write_json_atomic

    old = os.umask(0o027)
    try:
        image = write_image(tmp_path / "c.png", np.zeros((3, 2, 2), np.float32))
        write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (image.stat().st_mode & 0o777) == 0o640
    assert ((tmp_path / "m.json").stat().st_mode & 0o777) == 0o640
