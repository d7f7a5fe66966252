"""imaging: checking image bytes (producer) and decoding them for a model (worker), with reasons on failure."""

from __future__ import annotations

import contextlib
import functools
import io
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from capq.errors import InputError

# capq checks the pixel count itself, before any decode, against CAPQ_MAX_IMAGE_PIXELS. PIL's own guard
# would refuse some images under a larger configured cap, and its warning filter is process-wide (not
# thread-safe), so it is switched off here in favour of the explicit checks below.
Image.MAX_IMAGE_PIXELS = None


def _return_freed_pixels_to_the_os() -> None:
    """Pin glibc's mmap threshold at 1 MiB. Its default rises after the first big free, and from then on each
    thread's arena keeps every decoded image's memory: eight threads held ~700 MB after decoding one 100 MB
    image at a time (measured). Pinned, an image's pixel blocks are unmapped when it is freed, and the decode
    budget below bounds the process's real memory. Elsewhere than glibc this does nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_return_freed_pixels_to_the_os()

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


class PixelBudget:
    """At most `pixels` decoded at once in this process: the submit threads of the API and the fetch threads of
    a worker take their image's pixels from it and wait when it is spent. An image larger than the whole budget
    waits until it can be decoded alone. So a flood of large images queues up instead of adding up in memory."""

    def __init__(self, pixels: int):
        self.pixels, self.used = pixels, 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        pixels = min(pixels, self.pixels)
        with self._cond:
            self._cond.wait_for(lambda: self.used + pixels <= self.pixels)
            self.used += pixels
        try:
            yield
        finally:
            with self._cond:
                self.used -= pixels
                self._cond.notify_all()


@functools.cache
def decode_budget(pixels: int) -> PixelBudget:
    """The process's one budget of that size (CAPQ_DECODE_BUDGET_PIXELS)."""
    return PixelBudget(pixels)


def open_image(data: bytes) -> Image.Image:
    """Parse the header only, and only with the parsers of the formats capq supports (never all of Pillow's)."""
    return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)


class InvalidImage(InputError, ValueError):
    """The bytes are not an image capq can caption; the message says why and what to do."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    size: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def inspect_image(data: bytes, max_bytes: int, max_pixels: int, budget: PixelBudget | None = None) -> ImageInfo:
    """Check real content (not the file name): size cap, known format, pixel cap from the header, then that it
    is whole (a full decode for every format but JPEG, under `budget`)."""
    if not data:
        raise InvalidImage("file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidImage(f"file is {len(data):,} bytes, over the {max_bytes:,}-byte cap (CAPQ_MAX_IMAGE_BYTES)")
    try:
        img = open_image(data)
    except UnidentifiedImageError:
        raise InvalidImage(
            f"not an image: content matches no supported format ({', '.join(SUPPORTED_FORMATS)})"
        ) from None
    except Exception as exc:  # PIL raises many types on damaged headers
        raise InvalidImage(f"cannot read image header: {exc}") from None
    with img:
        fmt, (width, height) = img.format, img.size
        if fmt not in SUPPORTED_FORMATS:
            raise InvalidImage(f"format {fmt} is not supported; use one of {', '.join(SUPPORTED_FORMATS)}")
        # Checked before decoding, so a decompression bomb is refused without allocating it.
        if width * height > max_pixels:
            raise InvalidImage(
                f"{width}x{height} is {width * height:,} pixels, over the {max_pixels:,}-pixel cap "
                "(CAPQ_MAX_IMAGE_PIXELS); resize it"
            )
        if fmt == "JPEG":
            _check_jpeg_complete(data)
        else:
            with budget.hold(width * height) if budget else contextlib.nullcontext():
                _check_decodes(img)
    return ImageInfo(fmt, width, height, len(data))


def _check_jpeg_complete(data: bytes) -> None:
    """A JPEG whose last scan is not closed by an end-of-image marker was cut off (an interrupted download
    or copy: the usual damage). Inside compressed data a 0xFF byte is always followed by 0x00 or a restart
    marker, so the two markers cannot appear by accident there. Damage inside the compressed data is left
    to the worker's full decode, which records the image as failed with the reason when the decoder detects
    it (a stray marker, say; bit flips it fills in silently go unseen): decoding every JPEG here as well
    doubled the producer's CPU per image (docs/benchmarks.md)."""
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise InvalidImage(
            "truncated JPEG: the image data ends before its end-of-image marker; "
            "the file was cut off (copy or download it again)"
        )


def _check_decodes(img: Image.Image) -> None:
    """Read the whole stream, so damage is found at submission rather than on a worker."""
    try:
        img.load()
    except Exception as exc:  # PIL raises many types on damaged data
        raise InvalidImage(f"cannot decode image (damaged or truncated?): {exc}") from None


def decode_rgb(
    data: bytes,
    max_pixels: int,
    max_side_px: int = 1024,
    budget: PixelBudget | None = None,
    min_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Fully decode to an upright RGB image (EXIF orientation applied); InvalidImage on any damage.

    The header's size is checked against `max_pixels` before any decode. A JPEG is decoded with DCT scaling
    (Pillow's draft, done inside the JPEG decoder) at the smallest of 1/1, 1/2, 1/4, 1/8 that keeps both sides at
    least `min_size` (width, height: the model's input), or, without it, its longer side at `max_side_px` or more:
    captioning models look at a few hundred pixels, so a 12 MP photo meant for a 384 px model decodes at 1/4 scale,
    and a JPEG whose header claims 10000x10000 costs at most 1250x1250 here, never the size it claims. Other
    formats decode in full, under `budget`.
    """
    if not data:
        raise InvalidImage("file is empty (0 bytes)")
    try:
        img = open_image(data)
        if img.width * img.height > max_pixels:
            raise InvalidImage(f"{img.width}x{img.height} is over the {max_pixels:,}-pixel cap (CAPQ_MAX_IMAGE_PIXELS)")
        if img.format == "JPEG" and min_size:
            img.draft("RGB", min_size)
        elif img.format == "JPEG" and max(img.size) > max_side_px:
            scale = max_side_px / max(img.size)
            img.draft("RGB", (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        # load() forces the whole decode: a truncated JPEG fails here, not later inside the model.
        with budget.hold(img.width * img.height) if budget else contextlib.nullcontext():
            img.load()
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except InvalidImage:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"cannot decode image: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"cannot decode image (damaged or truncated?): {exc}") from None
