"""Image checks at submission: real content, caps, and whole files, each refused with its own message."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from capq.imaging import InvalidImage, decode_rgb, inspect_image

CAPS = (10_000_000, 100_000_000)


def _jpeg(progressive: bool = False, exif_thumbnail: bool = False) -> bytes:
    rng = random.Random(5)
    img = Image.frombytes("RGB", (96, 64), bytes(rng.getrandbits(8) for _ in range(96 * 64 * 3)))
    extra = {}
    if exif_thumbnail:
        # A JPEG inside the EXIF block brings its own end-of-image marker before the main image's scans.
        thumb = io.BytesIO()
        img.resize((16, 16)).save(thumb, "JPEG")
        extra["exif"] = b"Exif\x00\x00" + thumb.getvalue()
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, progressive=progressive, **extra)
    return buf.getvalue()


@pytest.mark.parametrize("kind", [{}, {"progressive": True}, {"exif_thumbnail": True}])
def test_whole_jpegs_pass_and_cut_ones_are_refused_as_truncated(kind):
    data = _jpeg(**kind)
    info = inspect_image(data, *CAPS)
    assert (info.format, info.width, info.height) == ("JPEG", 96, 64)
    for cut in (len(data) - 2, len(data) * 2 // 3):
        with pytest.raises(InvalidImage, match="truncated JPEG"):
            inspect_image(data[:cut], *CAPS)


def test_bytes_after_the_end_of_image_marker_are_accepted():
    # Some cameras append a trailer after the image; the image itself is whole.
    assert inspect_image(_jpeg() + b"camera trailer \x00\x01", *CAPS).format == "JPEG"


def test_other_formats_are_decoded_so_a_cut_png_is_refused():
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(buf, "PNG")
    data = buf.getvalue()
    assert inspect_image(data, *CAPS).format == "PNG"
    with pytest.raises(InvalidImage, match="cannot decode image"):
        inspect_image(data[: len(data) // 2], *CAPS)


def test_damage_inside_jpeg_data_passes_submission_and_is_left_to_the_worker():
    # The documented limit of the cheap check (tests/e2e/test_workers.py covers the worker's side).
    data = bytearray(_jpeg())
    start = len(data) // 2
    data[start : start + 200] = bytes(200)  # zeros: no 0xFF, so no marker is made or broken
    assert inspect_image(bytes(data), *CAPS).format == "JPEG"


def damaged_jpeg(data: bytes) -> bytes:
    """`data` with a start-of-image marker spliced into the middle of its last scan's compressed data, as when
    blocks of two files get interleaved: still ends with its end-of-image marker, so submission's cheap check
    passes it, but the decoder stops on the stray marker."""
    start = data.rfind(b"\xff\xda")
    middle = (start + len(data)) // 2
    return data[:middle] + b"\xff\xd8" + data[middle + 2 :]


def test_a_stray_marker_inside_jpeg_data_passes_submission_and_fails_the_workers_decode():
    data = damaged_jpeg(_jpeg())
    assert inspect_image(data, *CAPS).format == "JPEG"
    with pytest.raises(InvalidImage, match="cannot decode image"):
        decode_rgb(data, CAPS[1])
    assert decode_rgb(_jpeg(), CAPS[1]).size == (96, 64)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", r"empty \(0 bytes\)"),
        (b"plain text, named .jpg", "not an image"),
        (b"\xff\xd8\xff\xe0 this is not really a jpeg", "cannot read image header"),
    ],
)
def test_non_images_get_their_own_message(data, message):
    with pytest.raises(InvalidImage, match=message):
        inspect_image(data, *CAPS)
