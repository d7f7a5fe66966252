"""imaging: checking image bytes (producer) and decoding them for a model (worker), with reasons on failure."""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# capq checks the pixel count itself, before any decode, against CAPQ_MAX_IMAGE_PIXELS. PIL's own guard
# would refuse some images under a larger configured cap, and its warning filter is process-wide (not
# thread-safe), so it is switched off here in favour of the explicit checks below.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                 "BMP": "image/bmp", "TIFF": "image/tiff"}


class InvalidImage(ValueError):
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


def inspect_image(data: bytes, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check real content (not the file name): size cap, known format, pixel cap, then that it is whole."""
    if not data:
        raise InvalidImage("file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidImage(f"file is {len(data):,} bytes, over the {max_bytes:,}-byte cap (CAPQ_MAX_IMAGE_BYTES)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("not an image: content matches no supported format "
                           f"({', '.join(SUPPORTED_FORMATS)})") from None
    except Exception as exc:  # PIL raises many types on damaged headers
        raise InvalidImage(f"cannot read image header: {exc}") from None
    with img:
        fmt, (width, height) = img.format, img.size
        if fmt not in SUPPORTED_FORMATS:
            raise InvalidImage(f"format {fmt} is not supported; use one of {', '.join(SUPPORTED_FORMATS)}")
        # Checked before decoding, so a decompression bomb is refused without allocating it.
        if width * height > max_pixels:
            raise InvalidImage(f"{width}x{height} is {width * height:,} pixels, over the {max_pixels:,}-pixel cap "
                               "(CAPQ_MAX_IMAGE_PIXELS); resize it")
        if fmt == "JPEG":
            _check_jpeg_complete(data)
        else:
            _check_decodes(img)
    return ImageInfo(fmt, width, height, len(data))


def _check_jpeg_complete(data: bytes) -> None:
    """A JPEG whose last scan is not closed by an end-of-image marker was cut off (an interrupted download
    or copy: the usual damage). Inside compressed data a 0xFF byte is always followed by 0x00 or a restart
    marker, so the two markers cannot appear by accident there. Damage inside the compressed data is left
    to the worker's full decode, which records the image as failed with the reason: decoding every JPEG
    here as well doubled the producer's CPU per image (docs/benchmarks.md)."""
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise InvalidImage("truncated JPEG: the image data ends before its end-of-image marker; "
                           "the file was cut off (copy or download it again)")


def _check_decodes(img: Image.Image) -> None:
    """Read the whole stream, so damage is found at submission rather than on a worker."""
    try:
        img.load()
    except Exception as exc:  # PIL raises many types on damaged data
        raise InvalidImage(f"cannot decode image (damaged or truncated?): {exc}") from None


def decode_rgb(data: bytes, max_pixels: int, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Fully decode to an upright RGB image (EXIF orientation applied); InvalidImage on any damage.

    `min_size` (width, height): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft, done inside the
    JPEG decoder), the smallest that keeps both sides at least this big. A 12 MP photo meant for a 384 px model
    then decodes at 1/4 scale, for a fraction of the full decode's time and memory.
    """
    if not data:
        raise InvalidImage("file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            raise InvalidImage(f"{img.width}x{img.height} is over the {max_pixels:,}-pixel cap (CAPQ_MAX_IMAGE_PIXELS)")
        if min_size and img.format == "JPEG":
            img.draft("RGB", min_size)
        # load() forces the whole decode: a truncated JPEG fails here, not later inside the model.
        img.load()
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")
    except InvalidImage:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"cannot decode image: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"cannot decode image (damaged or truncated?): {exc}") from None
