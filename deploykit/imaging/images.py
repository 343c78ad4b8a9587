"""Image files <-> float32 arrays in 0..1 (Pillow, plus a small codec for 16-bit colour PNG/TIFF).

What ``read_image`` accepts and how it maps it (``write_image`` is the mirror):

- formats: PNG, JPEG, TIFF, WebP (anything else Pillow opens is tried too);
- bit depth: 8-bit samples are divided by 255, 16-bit by 65535; the depth is remembered so the output can keep it.
  Pillow reduces 16-bit *colour* PNG and TIFF (RGB, RGBA, gray+alpha) to 8 bits on open, silently; those files are
  decoded here instead (PNG: every filter type, non-interlaced; TIFF: uncompressed chunky strips; a compressed
  16-bit colour TIFF is refused with a message rather than read at 8 bits). 16-bit grayscale goes through Pillow;
- grayscale (``1``, ``L``, ``I;16``, ``I``) is replicated to RGB for the model and written back as grayscale
  (ITU-R 601 luma of the output, the weights Pillow's ``convert("L")`` uses);
- alpha (``LA``, ``RGBA``, ``PA``, palette or colour-key transparency) is kept aside as a 0..1 plane and written
  back; super-resolution resizes it (bicubic, clipped to 0..1);
- palette images (``P``) become RGB (RGBA with transparency) and are written as RGB(A): re-quantising a restored
  image to a palette would undo the restoration;
- CMYK / YCbCr / LAB / HSV are converted to RGB and written as RGB;
- EXIF orientation is applied to the pixels (the model sees the image upright) and the written file carries the
  EXIF block without the orientation tag (PNG/JPEG/WebP) and the ICC profile.

Every failure is an ``InputError`` whose one-line message names the file. Decoded pixels are limited
(:data:`DEFAULT_MAX_PIXELS`, raised by :func:`pixel_limit` / ``deploykit infer --max-pixels``): the size is checked
from the header before anything is decoded (Pillow's ``MAX_IMAGE_PIXELS`` and the 16-bit readers alike).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deploykit.errors import InputError
from deploykit.util.files import share_mode, temp_prefix
from deploykit.util.text import one_line

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
           ".webp": "WEBP"}
# what a folder given as input yields (Pillow reads BMP too; deploykit writes only FORMATS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp"}
EIGHT_BIT_ONLY = ("JPEG", "WEBP")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's RGB -> L
_ORIENTATION = 0x0112
_ICC_TIFF_TAG = 34675
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP (a 12000 x 8000 photo): ~1.2 GB as float32 RGB before any model runs
_MAX_PIXELS: ContextVar[int] = ContextVar("deploykit_max_pixels", default=DEFAULT_MAX_PIXELS)


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Within the block :func:`read_image` decodes images of up to ``max_pixels`` pixels (None: the default)."""
    if max_pixels is not None and max_pixels < 1:
        raise InputError(f"--max-pixels must be a positive number of pixels, not {max_pixels}")
    token = _MAX_PIXELS.set(max_pixels or DEFAULT_MAX_PIXELS)
    try:
        yield
    finally:
        _MAX_PIXELS.reset(token)


def _check_pixels(path: Path, width: int, height: int) -> None:
    """Refuse a declared size over the pixel limit before any pixel is decoded (decompression bombs)."""
    limit = _MAX_PIXELS.get()
    if width < 1 or height < 1:
        raise InputError(f"{path}: declares an empty image ({width}x{height})")
    if width * height > limit:
        raise InputError(f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of {limit:,} "
                         f"(a decompression-bomb guard); pass --max-pixels {width * height} if the file is trusted")


@dataclass
class Picture:
    """A decoded image: ``rgb`` float32 [3, H, W] in 0..1 (grayscale replicated), optional ``alpha`` [H, W]."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grayscale: bool = False
    format: str = "PNG"
    mode: str = "RGB"  # the mode as stored in the file (Pillow's name; 'RGB;16' etc. for the 16-bit codec)
    orientation: int = 1  # EXIF orientation that was applied (1 = none)
    icc_profile: bytes | None = None
    exif: bytes | None = None  # EXIF block without the orientation tag, for writing back
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[2])

    def nchw(self) -> np.ndarray:
        """The image as the model takes it: float32 [1, 3, H, W]."""
        return np.ascontiguousarray(self.rgb[None], dtype=np.float32)

    @property
    def kind(self) -> str:
        """e.g. '16-bit gray+alpha'."""
        return f"{self.bit_depth}-bit {'gray' if self.grayscale else 'RGB'}{'+alpha' if self.alpha is not None else ''}"

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.kind}"


# --- reading -----------------------------------------------------------------------------------------------

def read_image(path: str | Path) -> Picture:
    """Decode ``path`` to a Picture; InputError (naming the file) when missing, corrupt, truncated or unsupported."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = _MAX_PIXELS.get()  # Pillow's own guard, at our limit (checked again below)
        head = _read_head(path)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and _png_is_16bit_colour(head):
            picture = _read_png16(path)
        elif head[:4] in (b"II*\x00", b"MM\x00*") and _tiff_16bit_colour(path):
            picture = _read_tiff16(path)
        else:
            picture = _read_pillow(path)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's guard (at twice our limit) fired inside open()
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise InputError(f"{path}: {int(pixels.group(1)) if pixels else 'too many':,} pixels, over the limit of "
                         f"{_MAX_PIXELS.get():,} (a decompression-bomb guard); pass --max-pixels "
                         f"{pixels.group(1) if pixels else 'N'} if the file is trusted") from exc
    except Image.UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image file Pillow can read (supported: PNG, JPEG, TIFF, WebP)") from exc
    except MemoryError as exc:
        raise InputError(f"{path}: not enough memory to decode this image") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error ... for broken files
        raise InputError(f"{path}: cannot decode image, the file is corrupt or truncated ({one_line(exc, 200)})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    picture.path = path
    return picture


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(64)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to an [H, W, ...] array (the same result as PIL.ImageOps.exif_transpose)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def _exif_without_orientation(exif: Image.Exif) -> tuple[int, bytes | None]:
    orientation = int(exif.get(_ORIENTATION, 1) or 1)
    if _ORIENTATION in exif:
        del exif[_ORIENTATION]
    return (orientation if 1 <= orientation <= 8 else 1), (exif.tobytes() if len(exif) else None)


def _picture(samples: np.ndarray, depth: int, *, fmt: str, mode: str, orientation: int = 1,
             icc: bytes | None = None, exif: bytes | None = None) -> Picture:
    """[H, W, C] integer samples (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) -> Picture (orientation applied)."""
    samples = _orient(samples if samples.ndim == 3 else samples[..., None], orientation)
    scale = np.float32(1.0 / (65535.0 if depth == 16 else 255.0))
    channels = samples.shape[2]
    colour = samples[..., : 1 if channels <= 2 else 3].astype(np.float32) * scale
    alpha = samples[..., -1].astype(np.float32) * scale if channels in (2, 4) else None
    rgb = np.repeat(colour, 3, axis=2) if channels <= 2 else colour
    return Picture(np.ascontiguousarray(rgb.transpose(2, 0, 1)), alpha, depth, channels <= 2, fmt, mode,
                   orientation, icc, exif)


def _read_pillow(path: Path) -> Picture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # over the limit: refused just below
        im = Image.open(path)
    with im:
        _check_pixels(path, *im.size)  # the header's size; nothing decoded yet
        im.load()
        fmt, mode = im.format or "PNG", im.mode
        orientation, exif = _exif_without_orientation(im.getexif())
        icc = im.info.get("icc_profile")
        transparent = "transparency" in im.info
        if mode == "P":
            im = im.convert("RGBA" if transparent else "RGB")
        elif mode == "PA":
            im = im.convert("RGBA")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("L", "RGB") and transparent:
            im = im.convert("LA" if mode == "L" else "RGBA")
        elif mode == "La":
            im = im.convert("LA")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            im = im.convert("RGB")
            if mode != "RGBX":
                icc = None  # a CMYK / Lab profile does not describe the converted RGB pixels
        if im.mode in ("L", "LA", "RGB", "RGBA"):
            return _picture(np.asarray(im), 8, fmt=fmt, mode=mode, orientation=orientation, icc=icc, exif=exif)
        if im.mode.startswith("I;16"):
            return _picture(np.asarray(im).astype(np.uint16), 16, fmt=fmt, mode=mode, orientation=orientation,
                            icc=icc, exif=exif)
        if im.mode == "I":
            values = np.asarray(im)
            if values.min() < 0 or values.max() > 65535:
                raise InputError(f"{path}: 32-bit integer samples outside 0..65535 are not supported")
            return _picture(values.astype(np.uint16), 16, fmt=fmt, mode=mode, orientation=orientation,
                            icc=icc, exif=exif)
        raise InputError(f"{path}: unsupported pixel mode {im.mode!r} (use 8/16-bit gray, RGB or RGBA)")


# --- 16-bit colour PNG (Pillow reduces it to 8 bits) ---------------------------------------------------------

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_is_16bit_colour(head: bytes) -> bool:
    if len(head) < 29 or head[12:16] != b"IHDR":
        return False
    depth, colour = head[24], head[25]
    return depth == 16 and colour in (2, 4, 6)


def _png_chunks(data: bytes, path: Path):
    pos = len(_PNG_SIG)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) < length or len(crc) < 4:
            raise InputError(f"{path}: truncated PNG (chunk {kind.decode('latin-1')!r} cut short)")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise InputError(f"{path}: corrupt PNG (CRC mismatch in chunk {kind.decode('latin-1')!r})")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise InputError(f"{path}: truncated PNG (no IEND chunk)")


def _unfilter(raw: bytes, height: int, width: int, bpp: int, path: Path) -> np.ndarray:
    """Undo PNG scanline filters; returns uint8 [H, W*bpp].

    Rows filtered with None/Sub/Up are undone row by row with numpy. Average and Paeth make each pixel depend
    on its left, upper and upper-left neighbours, so those images are undone along anti-diagonals (every pixel
    of one diagonal is independent): H + W vectorised steps instead of H * W scalar ones.
    """
    stride = width * bpp
    buf = np.frombuffer(raw, np.uint8)
    if buf.size < height * (stride + 1):
        raise InputError(f"{path}: truncated PNG ({buf.size} of {height * (stride + 1)} image bytes)")
    rows = buf[: height * (stride + 1)].reshape(height, stride + 1)
    kinds, filt = rows[:, 0], rows[:, 1:]
    if kinds.max(initial=0) > 4:
        raise InputError(f"{path}: corrupt PNG (unknown scanline filter {int(kinds.max())})")
    if kinds.max(initial=0) <= 2:
        out = np.empty((height, stride), np.uint8)
        prev = np.zeros(stride, np.uint8)
        for y in range(height):
            row, kind = filt[y], kinds[y]
            if kind == 1:
                row = np.cumsum(row.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
            elif kind == 2:
                row = row + prev
            out[y] = row
            prev = out[y]
        return out
    f = filt.reshape(height, width, bpp).astype(np.int16)
    padded = np.zeros((height + 1, width + 1, bpp), np.int16)  # row 0 / column 0: the zeros PNG assumes
    kinds16 = kinds.astype(np.int16)
    for d in range(height + width - 1):
        ys = np.arange(max(0, d - width + 1), min(height, d + 1))
        xs = d - ys
        a, b, c = padded[ys + 1, xs], padded[ys, xs + 1], padded[ys, xs]
        k = kinds16[ys][:, None]
        p_a, p_b, p_c = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((p_a <= p_b) & (p_a <= p_c), a, np.where(p_b <= p_c, b, c))
        pred = np.select([k == 1, k == 2, k == 3, k == 4], [a, b, (a + b) >> 1, paeth], 0)
        padded[ys + 1, xs + 1] = (f[ys, xs] + pred) & 0xFF
    return padded[1:, 1:].astype(np.uint8).reshape(height, stride)


def _read_png16(path: Path) -> Picture:
    data = path.read_bytes()
    header, idat, icc, exif_raw, trns = None, [], None, None, None
    for kind, body in _png_chunks(data, path):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"iCCP":
            name_end = body.index(b"\x00")
            icc = zlib.decompress(body[name_end + 2:])
        elif kind == b"eXIf":
            exif_raw = body
        elif kind == b"tRNS":
            trns = body
    if header is None:
        raise InputError(f"{path}: corrupt PNG (no IHDR chunk)")
    width, height, depth, colour, _, _, interlace = header
    _check_pixels(path, width, height)
    if interlace:
        raise InputError(f"{path}: interlaced 16-bit PNG is not supported; save it without interlacing")
    channels = _PNG_CHANNELS[colour]
    try:  # at most the bytes the header's size needs: a zlib bomb stops there
        raw = zlib.decompressobj().decompress(b"".join(idat), height * (1 + width * channels * 2))
    except zlib.error as exc:
        raise InputError(f"{path}: corrupt or truncated PNG image data ({exc})") from exc
    samples = _unfilter(raw, height, width, channels * 2, path).view(">u2").reshape(height, width, channels)
    samples = samples.astype(np.uint16)
    if trns is not None and colour == 2 and len(trns) == 6:  # one transparent colour -> an alpha plane
        key = np.array(struct.unpack(">HHH", trns), np.uint16)
        alpha = np.where((samples == key).all(axis=2), 0, 65535).astype(np.uint16)
        samples = np.concatenate([samples, alpha[..., None]], axis=2)
    orientation, exif = 1, None
    if exif_raw:
        parsed = Image.Exif()
        parsed.load(exif_raw)
        orientation, exif = _exif_without_orientation(parsed)
    mode = {3: "RGB;16", 2: "LA;16", 4: "RGBA;16"}[samples.shape[2]]
    return _picture(samples, 16, fmt="PNG", mode=mode, orientation=orientation, icc=icc, exif=exif)


# --- 16-bit colour TIFF (uncompressed, chunky): Pillow reduces it to 8 bits -----------------------------------

_TIFF_TYPES = {1: "B", 2: "s", 3: "H", 4: "I", 7: "B", 16: "Q"}


def _tiff_tags(path: Path) -> tuple[dict[int, tuple], str]:
    """The first IFD's tags (tag -> tuple of values) and the byte order ('<' or '>'); classic TIFF only."""
    data = path.read_bytes()
    order = "<" if data[:2] == b"II" else ">"
    (magic, offset) = struct.unpack(order + "HI", data[2:8])
    if magic != 42:
        raise InputError(f"{path}: BigTIFF is not supported")
    (count,) = struct.unpack(order + "H", data[offset:offset + 2])
    tags = {}
    for k in range(count):
        tag, typ, n, value = struct.unpack(order + "HHI4s", data[offset + 2 + 12 * k:offset + 14 + 12 * k])
        if typ not in _TIFF_TYPES:
            continue
        size = struct.calcsize(_TIFF_TYPES[typ]) * n
        raw = value[:size] if size <= 4 else data[struct.unpack(order + "I", value)[0]:][:size]
        if typ in (2, 7):
            tags[tag] = (bytes(raw),)
        else:
            tags[tag] = struct.unpack(order + _TIFF_TYPES[typ] * n, raw)
    return tags, order


def _tiff_16bit_colour(path: Path) -> bool:
    try:
        tags, _ = _tiff_tags(path)
    except (struct.error, IndexError, InputError):
        return False  # let Pillow report what is wrong with it
    bits = tags.get(258, (1,))
    return all(b == 16 for b in bits) and tags.get(277, (1,))[0] >= 2


def _read_tiff16(path: Path) -> Picture:
    tags, order = _tiff_tags(path)
    width, height = tags[256][0], tags[257][0]
    _check_pixels(path, width, height)
    channels = tags[277][0]
    compression = tags.get(259, (1,))[0]
    if compression != 1 or tags.get(284, (1,))[0] != 1 or 324 in tags:
        raise InputError(f"{path}: 16-bit colour TIFF with compression {compression}, planar or tiled layout is "
                         "not supported (Pillow would read it at 8 bits); save it uncompressed or as 16-bit PNG")
    if channels not in (2, 3, 4):
        raise InputError(f"{path}: 16-bit TIFF with {channels} samples per pixel is not supported")
    if channels in (2, 4) and tags.get(338, (2,))[0] == 1:
        raise InputError(f"{path}: premultiplied (associated) alpha is not supported; save with unassociated alpha")
    data = path.read_bytes()
    offsets, counts = tags[273], tags[279]
    raw = b"".join(data[o:o + c] for o, c in zip(offsets, counts))
    need = width * height * channels * 2
    if len(raw) < need:
        raise InputError(f"{path}: truncated TIFF ({len(raw)} of {need} image bytes)")
    samples = np.frombuffer(raw[:need], order + "u2").reshape(height, width, channels).astype(np.uint16)
    icc = tags.get(_ICC_TIFF_TAG, (None,))[0]
    orientation = tags.get(274, (1,))[0]
    mode = {3: "RGB;16", 2: "LA;16", 4: "RGBA;16"}[channels]
    return _picture(samples, 16, fmt="TIFF", mode=mode, orientation=orientation if 1 <= orientation <= 8 else 1,
                    icc=icc)


# --- writing -------------------------------------------------------------------------------------------------

def format_for(path: str | Path) -> str:
    """Pillow format name for a file suffix; InputError for suffixes we do not write."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: cannot write '{Path(path).suffix}' files (use .png, .jpg, .tif or .webp)")
    return fmt


def quantize(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """float 0..1 -> uint8/uint16: clip, scale, round half to even (BasicSR's tensor2img rounds too)."""
    peak = 65535.0 if bit_depth == 16 else 255.0
    out = np.rint(np.clip(values, 0.0, 1.0) * peak)
    return out.astype(np.uint16 if bit_depth == 16 else np.uint8)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] -> [H, W] luma (ITU-R 601-2)."""
    return np.tensordot(LUMA, rgb.astype(np.float32), axes=1)


# ITU-R BT.601 studio-range YCbCr as skimage.color.rgb2ycbcr computes it (RGB 0..1 -> Y 16..235, Cb/Cr 16..240),
# divided by 255: the Y that models trained on skimage's conversion take (PANet CAR)
_YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_FROM_RGB)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])[:, None, None] / 255.0


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] RGB 0..1 -> [3, H, W] studio-range Y, Cb, Cr / 255 (a gray pixel g has Y = (16 + 219 g) / 255)."""
    return (np.tensordot(_YCBCR_FROM_RGB, rgb.astype(np.float64), axes=1) + _YCBCR_OFFSET).astype(np.float32)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_ycbcr`, clipped to 0..1."""
    rgb = np.tensordot(_RGB_FROM_YCBCR, ycbcr.astype(np.float64) - _YCBCR_OFFSET, axes=1)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def resize_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of a float 0..1 plane (alpha for super-resolution), clipped to 0..1."""
    if plane.shape == (height, width):
        return plane
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.clip(np.asarray(image.resize((width, height), Image.Resampling.BICUBIC)), 0.0, 1.0)


def _png16_bytes(samples: np.ndarray, icc: bytes | None) -> bytes:
    height, width, channels = samples.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(samples, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    bpp = channels * 2
    sub = rows.copy()
    sub[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # filter 1 (Sub), uint8 wrap-around is what PNG wants
    raw = np.concatenate([np.ones((height, 1), np.uint8), sub], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    parts = [_PNG_SIG, chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))]
    if icc:
        parts.append(chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    parts += [chunk(b"IDAT", zlib.compress(raw, 6)), chunk(b"IEND", b"")]
    return b"".join(parts)


def _tiff16_bytes(samples: np.ndarray, icc: bytes | None) -> bytes:
    """Uncompressed little-endian chunky TIFF, one strip, 16 bits per sample."""
    height, width, channels = samples.shape
    pixels = np.ascontiguousarray(samples, dtype="<u2").tobytes()
    entries = [(256, 4, (width,)), (257, 4, (height,)), (258, 3, (16,) * channels), (259, 3, (1,)),
               (262, 3, (2 if channels >= 3 else 1,)), (273, 4, (0,)), (277, 3, (channels,)),
               (278, 4, (height,)), (279, 4, (len(pixels),)), (284, 3, (1,))]
    if channels in (2, 4):
        entries.append((338, 3, (2,)))  # unassociated alpha
    if icc:
        entries.append((_ICC_TIFF_TAG, 7, tuple(icc)))
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size
    extra = b""
    blobs = []
    for tag, typ, values in entries:
        fmt = {3: "H", 4: "I", 7: "B"}[typ]
        blob = struct.pack("<" + fmt * len(values), *values)
        blobs.append(blob)
        if len(blob) > 4:
            extra += blob + (b"\x00" if len(blob) % 2 else b"")
    data_at = extra_at + len(extra)
    out, extra_pos = [b"II*\x00", struct.pack("<I", 8), struct.pack("<H", len(entries))], extra_at
    for (tag, typ, values), blob in zip(entries, blobs):
        if tag == 273:
            blob = struct.pack("<I", data_at)
        if len(blob) > 4:
            field_ = struct.pack("<I", extra_pos)
            extra_pos += len(blob) + (len(blob) % 2)
        else:
            field_ = blob.ljust(4, b"\x00")
        out.append(struct.pack("<HHI", tag, typ, len(values)) + field_)
    out.append(struct.pack("<I", 0))
    return b"".join(out) + extra + pixels


def write_image(path: str | Path, rgb: np.ndarray, *, alpha: np.ndarray | None = None, bit_depth: int = 8,
                grayscale: bool = False, format: str | None = None, icc_profile: bytes | None = None,
                exif: bytes | None = None, quality: int = 95) -> Path:
    """Write float 0..1 ``rgb`` ([3, H, W] or [1, 3, H, W]) atomically (temp file + rename).

    ``grayscale`` writes luma only; ``alpha`` [H, W] (same size) adds the alpha channel; ``bit_depth`` 8 or 16
    (16 only for PNG and TIFF). JPEG is written at ``quality`` with 4:4:4 chroma; WebP at ``quality`` (100 =
    lossless).
    """
    path = Path(path)
    fmt = (format or format_for(path)).upper()
    if bit_depth not in (8, 16):
        raise InputError(f"{path}: bit depth must be 8 or 16, not {bit_depth}")
    if bit_depth == 16 and fmt in EIGHT_BIT_ONLY:
        raise InputError(f"{path}: {fmt} stores 8 bits per sample; write 16-bit output as PNG or TIFF "
                         "(--format png) or ask for --bit-depth 8")
    if alpha is not None and fmt == "JPEG":
        raise InputError(f"{path}: JPEG cannot store the alpha channel; use --format png, webp or tiff")
    rgb = np.asarray(rgb)
    if rgb.ndim == 4:
        rgb = rgb[0]
    planes = [to_gray(rgb)[..., None]] if grayscale else [np.moveaxis(rgb, 0, -1)]
    if alpha is not None:
        if alpha.shape != rgb.shape[1:]:
            raise InputError(f"{path}: alpha plane {alpha.shape} does not match the image {rgb.shape[1:]}")
        planes.append(alpha[..., None])
    samples = np.ascontiguousarray(quantize(np.concatenate(planes, axis=2), bit_depth))
    if bit_depth == 16:
        blob = _png16_bytes(samples, icc_profile) if fmt == "PNG" else _tiff16_bytes(samples, icc_profile)
        return _atomic_write(path, lambda fh: fh.write(blob))
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[2]]
    image = Image.fromarray(samples[..., 0] if mode == "L" else samples, mode=mode)
    options: dict = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif and fmt in ("PNG", "JPEG", "WEBP"):
        options["exif"] = exif
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=quality, lossless=quality >= 100)
    return _atomic_write(path, lambda fh: image.save(fh, format=fmt, **options))


def _atomic_write(path: Path, write) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the output file ({one_line(exc, 200)})") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        share_mode(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, ValueError, KeyError)):
            raise InputError(f"{path}: cannot write image ({one_line(exc, 200)})") from exc
        raise
    return path


def image_files(items, option: str) -> list[Path]:
    """Files and folders (a folder gives its images, sorted by name) -> image files; InputError naming the
    ``option`` (``--images``, ``--calib``) and what is missing."""
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{option} {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in that folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{option} {path}: no such file or folder")
    return files
