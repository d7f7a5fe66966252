"""base: the Captioner contract every model adapter follows, and guarded checkpoint loading."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from capq.errors import InputError, SetupError
from capq.presets import POSTPROCESSORS, apply_postprocess
from workers.adapters.static_cache import StaticCaches, bucket
from workers.preprocess import DeviceStager, PixelRecipe, is_resized_uint8, stack_and_normalize, uint8_chw

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
_GENERATION_KEYS = ("prompt", "generate", "postprocess")
log = logging.getLogger("capq.worker")


class CheckpointError(InputError):
    """A checkpoint (hub id or local folder) is missing or unreadable: permanent, never retried."""

    def __init__(self, model: str, checkpoint: str, reason: str, hint: str):
        self.model = model
        self.checkpoint = checkpoint
        super().__init__(f"cannot load {model} checkpoint {checkpoint!r}: {reason}; {hint}")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(checkpoint: str) -> bool:
    # A hub id is "name" or "org/name"; anything else that names a place on disk is a folder.
    return (
        os.path.isabs(checkpoint)
        or checkpoint.startswith((".", "~"))
        or checkpoint.count("/") > 1
        or "\\" in checkpoint
    )


def load_pretrained(model: str, checkpoint: str, loader: Callable[..., Any], **kwargs: Any) -> Any:
    """Call `loader(checkpoint, **kwargs)` (a `from_pretrained`) for a hub id or a local folder.

    A local folder is always read with `local_files_only=True`, so it never touches the network.
    A hub id goes through the Hugging Face cache, and the network unless HF_HUB_OFFLINE is set.
    Every failure is raised as `CheckpointError`, whose message names the model and checkpoint.
    """
    path = Path(checkpoint).expanduser()
    local = path.exists() or _looks_like_path(checkpoint)
    if local:
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "no such folder"
            raise CheckpointError(model, checkpoint, what, _local_hint())
        source, kwargs = str(path), {**kwargs, "local_files_only": True}
    else:
        source = checkpoint
    try:
        return loader(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError... alike
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        hint = _local_hint() if local else _hub_hint(checkpoint)
        raise CheckpointError(model, checkpoint, reason, hint) from exc


def _local_hint() -> str:
    return (
        "point --checkpoint at a folder written by save_pretrained (config.json, weights, tokenizer "
        "and preprocessor files), or build tiny test models with `capq models make-tiny DIR`"
    )


def _hub_hint(checkpoint: str) -> str:
    if _hub_offline():
        return (
            "HF_HUB_OFFLINE is set and the id is not in the Hugging Face cache: download it where there "
            f"is network (`hf download {checkpoint}`), or pass a local folder"
        )
    return "check the hub id and the network, or pass a local folder that holds the checkpoint"


def check_model_type(model: str, checkpoint: str, config: Any, expected: Sequence[str]) -> None:
    """Refuse a checkpoint of another architecture, which from_pretrained would load with random weights."""
    kind = getattr(config, "model_type", None)
    if kind not in expected:
        raise CheckpointError(
            model,
            checkpoint,
            f"it holds a {kind!r} model, not {' or '.join(map(repr, expected))}",
            "pick the model that matches the checkpoint (capq models list)",
        )


class Captioner(ABC):
    """One captioning model, loaded once per worker process.

    Lifecycle: `__init__` only checks arguments; `load()` reads the model and processor; then
    `preprocess(image)` per image and `generate(batch, generation)` per batch.

    :param checkpoint: hub id ("Salesforce/blip-image-captioning-large") or local folder.
    :param device: "cpu", "cuda" or "cuda:N".
    :param dtype: "fp32", "fp16" or "bf16"; weights and pixel values are cast to it.
    :param max_batch_size: `generate` runs the model on at most this many inputs at a time.
    """

    name: ClassVar[str] = "captioner"
    # False where the architecture has no text prefix to condition on (ViT-GPT2's decoder).
    supports_prompt: ClassVar[bool] = True
    # True where the decoder runs with a static cache (workers.adapters.static_cache), the graph path on a GPU.
    supports_static_cache: ClassVar[bool] = False

    def __init__(self, checkpoint: str, device: str = "cpu", dtype: str = "fp32", max_batch_size: int = 8):
        if not isinstance(checkpoint, (str, os.PathLike)) or not str(checkpoint).strip():
            raise SetupError(f"checkpoint must be a hub id or a folder, got {checkpoint!r}")
        if not isinstance(device, str) or not _DEVICE.fullmatch(device):
            raise SetupError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if dtype not in DTYPES:
            raise SetupError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size <= 0:
            raise SetupError(f"max_batch_size must be an integer greater than 0, got {max_batch_size!r}")
        self.checkpoint = str(checkpoint)
        self.device = device
        self.dtype = dtype
        self.torch_dtype = DTYPES[dtype]
        self.max_batch_size = max_batch_size
        self.model: Any = None
        # Static caches (CUDA graphs) on a GPU; the eager dynamic-cache path on a CPU and as the fallback.
        self.static_cache = self.supports_static_cache and device.startswith("cuda")
        self.static_caches = StaticCaches()
        # Set by load() from the image processor (workers.preprocess); None: the processor itself runs.
        self.recipe: PixelRecipe | None = None
        self.stager: DeviceStager | None = None

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> Captioner:
        """Load weights and processors onto `device`; call once per process. Returns self."""
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SetupError(f"device {self.device!r} asked for, but torch sees no CUDA GPU; use device='cpu'")
        self._load()
        self.model.to(self.device).eval()
        self._use_tensor_preprocess()
        return self

    def _use_tensor_preprocess(self) -> None:
        """Resize and normalise with torch (workers.preprocess) wherever the image processor allows it."""
        self.recipe = self.stager = None
        processor = getattr(self, "image_processor", None)
        if processor is None:
            return
        try:
            self.recipe = PixelRecipe.from_processor(processor)
        except (ValueError, AttributeError, TypeError):
            return  # a processor setting the tensor path does not do: the processor itself stays in charge
        if self.device.startswith("cuda"):
            self.stager = DeviceStager(self.recipe, self.device)

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """(width, height) a JPEG may be decoded down to for this model (capq.imaging.decode_rgb), or None."""
        return self.recipe.draft_size if self.recipe else None

    def load_pretrained(self, loader: Callable[..., Any], **kwargs: Any) -> Any:
        return load_pretrained(self.name, self.checkpoint, loader, **kwargs)

    @abstractmethod
    def _load(self) -> None:
        """Set `self.model` and whatever processors `preprocess` and `_generate` need."""

    def preprocess(self, image: Image.Image) -> Any:
        """Turn one RGB image into one model input for `pixels` (runs in the fetch threads).

        With a tensor recipe: a resized uint8 [3, h, w] tensor, or on a GPU one already copied and resized there
        on a side stream; otherwise the image processor's normalised pixel tensor.
        """
        if self.recipe is None:
            return self.image_processor(images=image, return_tensors="pt").pixel_values[0]
        pixels = uint8_chw(image)
        return self.stager.stage(pixels) if self.stager else self.recipe.resize(pixels)

    @abstractmethod
    def _generate(self, batch: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        """Caption up to max_batch_size preprocessed inputs; one raw caption each, prompt removed."""

    def generate(self, batch: list[Any], generation: dict | None = None) -> list[str]:
        """One caption per input, in input order: stripped, post-processed strings.

        :param batch: outputs of `preprocess`, any length (run in chunks of max_batch_size).
        :param generation: a preset {"prompt": str|None, "generate": {...}, "postprocess": name|None};
            see capq.presets.get_preset. None means the model's built-in generation config.
        """
        if not self.loaded:
            raise RuntimeError(f"{type(self).__name__}.generate called before load()")
        prompt, kwargs, postprocess = _split_generation(generation)
        if prompt and not self.supports_prompt:
            raise ValueError(f"{self.name} takes no prompt; drop 'prompt' from the preset")
        captions: list[str] = []
        for start in range(0, len(batch), self.max_batch_size):
            chunk = list(batch[start : start + self.max_batch_size])
            outputs = self._generate_chunk(chunk, prompt or None, kwargs)
            if len(outputs) != len(chunk):
                raise RuntimeError(
                    f"{type(self).__name__}._generate returned {len(outputs)} outputs, but expected {len(chunk)}"
                )
            captions.extend(apply_postprocess(postprocess, str(text).strip()).strip() for text in outputs)
        return captions

    def _generate_chunk(self, chunk: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        if self.static_cache:
            # Padded to a bucket so that the few captured graphs serve every batch; the copies are dropped.
            padded = chunk + [chunk[-1]] * (bucket(len(chunk)) - len(chunk))
            try:
                return self._seeded_generate(padded, prompt, kwargs)[: len(chunk)]
            except Exception as exc:  # noqa: BLE001 - torch.compile and CUDA graphs fail in many ways
                self.static_cache = False
                # Eager decoding failing too means the request itself is at fault: it raises, and the static
                # path stays on for the next one.
                try:
                    outputs = self._seeded_generate(chunk, prompt, kwargs)
                except Exception:
                    self.static_cache = True
                    raise
                log.warning(
                    "%s: static-cache decoding failed (%s: %s); decoding eagerly from now on",
                    self.name,
                    type(exc).__name__,
                    str(exc)[:300],
                )
                return outputs
        return self._seeded_generate(chunk, prompt, kwargs)

    def _seeded_generate(self, chunk: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        # Seeding per call keeps sampling presets reproducible whatever else ran before.
        torch.manual_seed(0)
        with torch.inference_mode(), self._compiled_beam_steps(kwargs):
            return self._generate(chunk, prompt, dict(kwargs))

    def _search_module(self) -> torch.nn.Module:
        """The module whose `generate` runs the search (its forward is the decode step)."""
        return self.model

    def _compiled_beam_steps(self, kwargs: dict[str, Any]) -> contextlib.AbstractContextManager:
        """Beam search's decode steps compiled (CUDA graphs), on the static path on a GPU; otherwise nothing.

        transformers compiles greedy and sampling steps itself. A `compile_config` in the preset is used here too;
        one that sets `_compile_all_devices` compiles on the CPU as well (the tests trace the graphs that way).
        """
        from transformers import CompileConfig

        compile_config = kwargs.get("compile_config")
        on_device = self.device.startswith("cuda") or getattr(compile_config, "_compile_all_devices", False)
        if not (self.static_cache and on_device):
            return contextlib.nullcontext()
        module = self._search_module()
        if (kwargs.get("num_beams") or module.generation_config.num_beams or 1) <= 1:
            return contextlib.nullcontext()
        return self.static_caches.compiled_steps(module, compile_config or CompileConfig())

    def pixels(self, batch: list[Any]) -> torch.Tensor:
        """Stack preprocessed inputs into one tensor on the model's device and dtype."""
        if batch and is_resized_uint8(batch[0]):
            return stack_and_normalize(self.recipe, batch, self.device, self.torch_dtype)
        return torch.stack(batch).to(self.device, self.torch_dtype)


def _split_generation(generation: dict | None) -> tuple[str | None, dict[str, Any], str | None]:
    if generation is None:
        return None, {}, None
    unknown = sorted(set(generation) - set(_GENERATION_KEYS))
    if unknown:
        raise ValueError(
            f"unknown generation key(s) {unknown}; a preset has {list(_GENERATION_KEYS)} "
            "(generate() keyword arguments go under 'generate')"
        )
    kwargs, postprocess = generation.get("generate") or {}, generation.get("postprocess")
    if not isinstance(kwargs, dict):
        raise ValueError(f"'generate' must be a dict of generate() keyword arguments, got {kwargs!r}")
    # Checked before the model runs, not after minutes of beam search.
    if postprocess is not None and postprocess not in POSTPROCESSORS:
        raise ValueError(f"unknown postprocess {postprocess!r}; known: {sorted(POSTPROCESSORS)}")
    return generation.get("prompt"), dict(kwargs), postprocess
