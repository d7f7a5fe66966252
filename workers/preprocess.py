"""preprocess: an image processor's resize, crop and normalisation as torch tensor operations on uint8 images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# PIL resampling filter -> torch.nn.functional.interpolate mode. PIL's filters antialias when they shrink, and so
# does interpolate with antialias=True (its kernels were written to follow PIL's).
_MODES = {Image.Resampling.BICUBIC: "bicubic", Image.Resampling.BILINEAR: "bilinear"}


def _field(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


@dataclass(frozen=True)
class PixelRecipe:
    """What a Hugging Face image processor does to one image, read from the loaded processor.

    Exactly one of `size` ((height, width): BLIP, BLIP-2, ViT) and `shortest_edge` (GIT's CLIP processor) is set;
    `crop` is the centre crop (height, width) taken after the resize, or None.
    """

    size: tuple[int, int] | None
    shortest_edge: int | None
    crop: tuple[int, int] | None
    mode: str
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, processor: Any) -> PixelRecipe:
        """The recipe of a BLIP, CLIP or ViT image processor; ValueError for a setting this module does not do."""
        if not getattr(processor, "do_resize", True):
            raise ValueError("the image processor does not resize; only resizing processors are supported")
        if getattr(processor, "do_pad", False):
            raise ValueError("the image processor pads; padding is not supported")
        resample = getattr(processor, "resample", Image.Resampling.BICUBIC)
        mode = _MODES.get(Image.Resampling(int(resample)))
        if mode is None:
            raise ValueError(f"resample {resample!r} is not supported; only bicubic and bilinear are")
        size = processor.size
        height, width, short = _field(size, "height"), _field(size, "width"), _field(size, "shortest_edge")
        if not ((height and width) or short) or _field(size, "longest_edge"):
            raise ValueError(f"size {size!r} is not supported; use {{height, width}} or {{shortest_edge}}")
        crop = None
        if getattr(processor, "do_center_crop", False):
            crop = (_field(processor.crop_size, "height"), _field(processor.crop_size, "width"))
        normalize = getattr(processor, "do_normalize", True)
        return cls(
            size=(height, width) if height and width else None,
            shortest_edge=None if height and width else short,
            crop=crop,
            mode=mode,
            rescale=float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0,
            mean=tuple(float(m) for m in processor.image_mean) if normalize else (0.0, 0.0, 0.0),
            std=tuple(float(s) for s in processor.image_std) if normalize else (1.0, 1.0, 1.0),
        )

    @property
    def draft_size(self) -> tuple[int, int]:
        """(width, height) a JPEG may be decoded down to (Pillow's draft keeps both sides at least this big).

        Square, so that an EXIF rotation applied after the decode cannot bring a side under the model's input.
        """
        side = max(self.size) if self.size else self.shortest_edge
        return side, side

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, before any crop: the image processor's own arithmetic."""
        if self.size:
            return self.size
        short, long = sorted((height, width))
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if height <= width else (new_long, self.shortest_edge)

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] on any device -> uint8 [3, h, w]: resized, centre-cropped, rounded like PIL."""
        height, width = self.output_size(*image.shape[-2:])
        # Two 1-D passes, each rounded to uint8, as Pillow does: a single 2-D pass differed from it by up to 16
        # levels where an edge's overshoot is clamped in Pillow's intermediate image. Pillow 13 picks the order of
        # its passes by a cost estimate not reproduced here: heights first when they shrink clearly more than
        # widths matched it on the seed images and on most random shapes (the rest differ by a few levels on rare
        # edge pixels: docs/benchmarks.md).
        if image.shape[-2] / height <= 1.1 * image.shape[-1] / width:
            image = self._pass(self._pass(image, image.shape[-2], width), height, width)
        else:
            image = self._pass(self._pass(image, height, image.shape[-1]), height, width)
        if self.crop:
            top, left = (height - self.crop[0]) // 2, (width - self.crop[1]) // 2
            image = image[:, max(top, 0) : max(top, 0) + self.crop[0], max(left, 0) : max(left, 0) + self.crop[1]]
        return image

    def _pass(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if (height, width) == tuple(image.shape[-2:]):
            return image
        if height == image.shape[-2] and image.device.type == "cpu":
            # torch's CPU kernel resamples along rows 2-3x slower than along columns: the same pass, transposed.
            return self._pass(image.transpose(-1, -2).contiguous(), width, height).transpose(-1, -2)
        resized = F.interpolate(
            image[None].float(), size=(height, width), mode=self.mode, align_corners=False, antialias=True
        )[0]
        return resized.round_().clamp_(0, 255).to(torch.uint8)

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 [N, 3, h, w] -> [N, 3, h, w] of `dtype`: rescaled and normalised (computed in fp32, then cast)."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return ((batch.float() * self.rescale - mean) / std).to(dtype)


def uint8_chw(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 [3, H, W] tensor (a view of one writable copy of its pixels)."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@dataclass
class Staged:
    """One image resized on the GPU on the copy stream; `ready` marks when its work there is done."""

    pixels: torch.Tensor
    ready: Any  # torch.cuda.Event


class DeviceStager:
    """Moves uint8 images to the GPU from pinned memory on a stream of its own, and resizes them there.

    Fetch threads call `stage` while the model runs the previous batch on the default stream, so copies and
    resizes overlap compute; `batch` makes the model's stream wait for them. Only built when the worker runs on
    CUDA: on a CPU the recipe runs in the fetch threads and `batch` only stacks and normalises.
    """

    def __init__(self, recipe: PixelRecipe, device: str):
        self.recipe, self.device = recipe, torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)

    def stage(self, image: torch.Tensor) -> Staged:
        # Pinned host memory is what lets the copy run asynchronously and overlap the model's kernels.
        host = image.contiguous().pin_memory()
        with torch.cuda.stream(self.stream):
            pixels = self.recipe.resize(host.to(self.device, non_blocking=True))
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return Staged(pixels, ready)


def is_resized_uint8(item: Any) -> bool:
    """Whether `item` is what PixelRecipe.resize (or DeviceStager.stage) made, rather than normalised pixels."""
    return isinstance(item, Staged) or (isinstance(item, torch.Tensor) and item.dtype == torch.uint8)


def stack_and_normalize(
    recipe: PixelRecipe, batch: Sequence[torch.Tensor | Staged], device: str, dtype: torch.dtype
) -> torch.Tensor:
    """Preprocessed images (uint8 tensors, or Staged ones on the GPU) -> one normalised batch on `device`."""
    if batch and isinstance(batch[0], Staged):
        current = torch.cuda.current_stream(torch.device(device))
        tensors = []
        for staged in batch:
            current.wait_event(staged.ready)
            # Made on the copy stream, used on this one: tell the caching allocator, or it may hand the memory
            # back to the copy stream while the model still reads it.
            staged.pixels.record_stream(current)
            tensors.append(staged.pixels)
        return recipe.normalize(torch.stack(tensors), dtype)
    return recipe.normalize(torch.stack(list(batch)).to(device, non_blocking=True), dtype)
