"""gpu_bench: generate throughput of the full-size caption architectures (random weights) by batch size and dtype.

Run: `python -m bench.gpu_bench [--device cuda] [--models blip-base,git-base] [--batches 1,8,32] [--decode
eager,static]`.
`--device cpu --tiny` runs the same command line on tooling.tiny's small models instead: a smoke check of every path
(its rates say nothing about the real models).
It needs only torch, transformers and Pillow (no stack, no download), so it runs on a bare GPU machine.
Each model is built at its real size straight on the device with random weights and driven through
capq's own adapter and default preset, so the figures include capq's generate settings and decoding.
Random weights never emit end-of-sequence: every caption runs to the preset's length limit, the worst case.
Prints markdown rows for docs/benchmarks.md; every ratio compares runs of this same process.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from capq.presets import get_preset
from tooling import tiny
from workers.models import MODELS


def _blip(large: bool) -> tuple[Any, Any, Any]:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    tokenizer = tiny.bert_tokenizer(bos="[DEC]", size=30522)
    vision = (
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16) if large else {}
    )
    config = BlipConfig(
        vision_config=vision,
        text_config=dict(
            encoder_hidden_size=1024 if large else 768,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
    )
    return BlipForConditionalGeneration, config, (tokenizer, BlipImageProcessorPil(size={"height": 384, "width": 384}))


def _blip2() -> tuple[Any, Any, Any]:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessorPil, OPTConfig

    tokenizer = tiny.gpt2_tokenizer("</s>", "</s>", "<pad>", "<unk>", ["<pad>", "</s>", "<unk>"])
    # Salesforce/blip2-opt-2.7b: ViT-g/14 (the config default), Q-Former with 32 queries, OPT-2.7b.
    text = OPTConfig(
        hidden_size=2560,
        word_embed_proj_dim=2560,
        num_hidden_layers=32,
        num_attention_heads=32,
        ffn_dim=10240,
        vocab_size=50304,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
    )
    config = Blip2Config(text_config=text.to_dict(), image_token_index=50265)
    return Blip2ForConditionalGeneration, config, (tokenizer, BlipImageProcessorPil(size={"height": 224, "width": 224}))


def _git() -> tuple[Any, Any, Any]:
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM

    tokenizer = tiny.bert_tokenizer(size=30522)
    # microsoft/git-base-coco: CLIP ViT-B/16 at 224 px and a 6-layer decoder (the config defaults).
    config = GitConfig(
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return GitForCausalLM, config, (tokenizer, processor)


def _vit_gpt2() -> tuple[Any, Any, Any]:
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    eot = "<|endoftext|>"
    tokenizer = tiny.gpt2_tokenizer(eot, eot, None, eot, [eot])
    # nlpconnect/vit-gpt2-image-captioning: ViT-B/16 at 224 px and GPT-2 small (the config defaults).
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), GPT2Config())
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = 50256
    tokenizer.pad_token = tokenizer.eos_token
    return VisionEncoderDecoderModel, config, (tokenizer, ViTImageProcessorPil(size={"height": 224, "width": 224}))


# label -> (capq model name, builder)
ARCHITECTURES: dict[str, tuple[str, Callable[[], tuple[Any, Any, Any]]]] = {
    "vit-gpt2": ("vit-gpt2", _vit_gpt2),
    "git-base": ("git", _git),
    "blip-base": ("blip", lambda: _blip(large=False)),
    "blip-large": ("blip", lambda: _blip(large=True)),
    "blip2-opt-2.7b": ("blip2", _blip2),
}


def random_captioner(label: str, device: str, dtype: str, tiny_root: Path | None = None):
    """capq's adapter for `label`, holding a full-size model with random weights built on `device`.

    With `tiny_root`: the architecture's tiny checkpoint (tooling.tiny, built there once), loaded by load_captioner.
    """
    name, build = ARCHITECTURES[label]
    if tiny_root is not None:
        from workers.models import load_captioner

        return load_captioner(name, tiny.make_tiny(tiny_root, [name])[name], device=device, dtype=dtype)
    model_cls, config, (tokenizer, processor) = build()
    adapter = MODELS[name].adapter(f"random {label}", device=device, dtype=dtype)
    torch.manual_seed(0)
    with torch.device(device):  # built in place: a 3.8B-parameter model never passes through host memory
        adapter.model = model_cls._from_config(config, dtype=adapter.torch_dtype).eval()
    adapter.tokenizer, adapter.image_processor = tokenizer, processor
    adapter._use_tensor_preprocess()  # what load() does after reading a checkpoint
    return adapter


def jpegs(n: int, seed: int = 5) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def images_per_s(adapter, inputs: list[Any], batch: int, preset: dict) -> float:
    adapter.max_batch_size = batch
    adapter.generate(inputs[:batch], preset)  # warm-up: kernels picked and memory pooled for this shape
    if adapter.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    captions = adapter.generate(inputs, preset)
    assert len(captions) == len(inputs)
    return len(inputs) / (time.perf_counter() - t0)


def run_model(
    label: str,
    device: str,
    dtype: str,
    batches: list[int],
    images: list[bytes],
    per_batch: int,
    decode: str = "eager",
    tiny_root: Path | None = None,
) -> None:
    adapter = random_captioner(label, device, dtype, tiny_root)
    # "static": static caches, which transformers' generate compiles into CUDA graphs on a GPU (issue 17).
    adapter.static_cache = decode == "static" and adapter.supports_static_cache
    if decode == "static" and not adapter.static_cache:
        print(f"| {label} | - | {dtype} | static decoding not supported: eager rows only |", flush=True)
        return
    t0 = time.perf_counter()
    pixels = [adapter.preprocess(Image.open(io.BytesIO(data)).convert("RGB")) for data in images]
    prep = len(images) / (time.perf_counter() - t0)
    preset = get_preset(ARCHITECTURES[label][0])
    params = sum(p.numel() for p in adapter.model.parameters()) / 1e9
    base = None
    for batch in batches:
        n = max(per_batch, 2 * batch) if batch > 1 else max(4, per_batch // 4)
        inputs = (pixels * (n // len(pixels) + 1))[:n]
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rate = images_per_s(adapter, inputs, batch, preset)
        base = base or rate
        mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.startswith("cuda") else "-"
        # The static path drops to eager for good when it fails (logged): such rows must not pass for graph figures.
        path = "static, fell back to eager" if decode == "static" and not adapter.static_cache else decode
        print(
            f"| {label} | {path} | {params:.2f} | {dtype} | {batch} | {n} | {rate:.1f} | {rate / base:.1f}x | {mem} | "
            f"{prep:.0f} |",
            flush=True,
        )
    del adapter
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="fp16", help="comma-separated: fp16,bf16,fp32")
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--images", type=int, default=64, help="images per run at batch > 1 (at least 2 batches)")
    parser.add_argument(
        "--decode",
        default="eager",
        help="comma-separated: eager (dynamic cache), static (static cache: CUDA graphs on a GPU)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tooling.tiny's small models instead of the full-size ones: a smoke check, e.g. on a CPU",
    )
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}")
    import transformers

    if args.tiny:
        print(
            f"transformers {transformers.__version__}; default presets; TINY models (tooling.tiny): a smoke check, "
            "not figures\n"
        )
    else:
        print(
            f"transformers {transformers.__version__}; default presets; random weights, so every caption runs to "
            "its length limit\n"
        )
    print(
        "| architecture | decode | params (B) | dtype | batch | images | images/s | vs batch 1 | peak GPU GiB | "
        "preprocess images/s (1 CPU thread) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    images = jpegs(16)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="capq-tiny-") as root:
        tiny_root = Path(root) if args.tiny else None
        for label in args.models.split(","):
            for dtype in args.dtype.split(","):
                for decode in args.decode.split(","):
                    run_model(label, args.device, dtype, batches, images, args.images, decode, tiny_root)


if __name__ == "__main__":
    main()
