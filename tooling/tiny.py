"""tiny: tiny random-weight caption models of the four architectures, and a tiny CLIP, built offline for tests,
benches and the demo."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

# Bump when a builder changes, so that folders from an older build are rebuilt.
TINY_VERSION = "4"
MARKER = ".capq-tiny-complete"
SEED = 1234
IMAGE_SIZE = 32
HIDDEN = 32
MAX_POSITIONS = 256  # the seed presets ask for up to 200 tokens
# Weights drawn this wide make captions depend on the image, as a trained model's do. At the configs' own
# ranges (BLIP's vision weights start at 1e-10) every image got one and the same caption, so a test could
# not tell an image-caption mix-up from the right order.
INIT_RANGE = 0.5

# Captions in the style of COCO's, written for this file, so tiny tokenizers decode to real words.
CORPUS = """\
a man riding a bike down a busy city street
two cats sleeping on a red couch next to a remote control
a kitchen with white cabinets and a bowl of fruit on the table
a plate of food with broccoli rice and grilled chicken
a group of people standing around a table with pizza
a woman holding an umbrella while walking in the rain
a dog catching a frisbee in a grassy park
a train stopped at a station next to a platform
a large clock tower in the middle of a town square
a young boy swinging a baseball bat on a field
a bathroom with a sink a mirror and a toilet
a giraffe standing next to a tree in a zoo
a person on skis going down a snowy hill
an airplane flying high in a clear blue sky
a bus parked on the side of a road near buildings
a bowl of soup with bread on a wooden table
a cat sitting on top of a laptop computer on a desk
a man in an apron making pizza in a restaurant kitchen
a stop sign on a corner of an empty street
two zebras grazing on grass in an open field
a surfer riding a wave on a sunny day at the beach
a bedroom with a large bed and a lamp beside it
a horse pulling a cart down a dirt road
a little girl eating a slice of cake at a party
a living room with a couch a television and a rug
a boat floating on a calm lake under a cloudy sky
an elephant walking through tall grass with its baby
a traffic light hanging over an intersection at night
a sandwich and a cup of coffee on a white plate
people walking with shopping bags past a store window
a photo of a picture hanging on a wall
"""


def corpus() -> list[str]:
    """CORPUS's captions, one a line."""
    return [line for line in CORPUS.splitlines() if line]


def bert_tokenizer(bos: str | None = None, size: int | None = None):
    """A lowercase WordPiece tokenizer over CORPUS's words, as transformers' BertTokenizer.

    `size` pads the vocabulary with BERT-style [unusedN] tokens, for full-size models whose embedding and
    output layers must cost what the real checkpoint's do.
    """
    from transformers import BertTokenizer

    # Built, not trained: tokenizers' WordPiece trainer breaks count ties differently from run to run,
    # so two builds got different vocabularies. Whole words first, then characters for anything else.
    words = sorted({word for line in corpus() for word in line.split()})
    chars = sorted({char for word in words for char in word})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + [f"##{c}" for c in chars]
    tokens = list(dict.fromkeys(tokens))
    tokens += [f"[unused{i}]" for i in range((size or 0) - len(tokens))]
    vocab = {token: i for i, token in enumerate(tokens)}
    # transformers 5 takes the vocabulary as a dict; vocab_file= would build a one-token tokenizer.
    tokenizer = BertTokenizer(vocab=vocab)
    if bos:
        # BLIP's text decoder starts from a [DEC] token that is not in BERT's vocabulary.
        tokenizer.add_special_tokens({"bos_token": bos})
    return tokenizer


def gpt2_tokenizer(bos: str, eos: str, pad: str | None, unk: str, specials: list[str]):
    """A byte-level BPE tokenizer trained on CORPUS, wrapped as transformers' GPT2Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Tokenizer

    raw = Tokenizer(models.BPE(unk_token=unk))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    # No full byte alphabet: random weights would then emit stray bytes that decode to '\ufffd'.
    raw.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False))
    state = json.loads(raw.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return GPT2Tokenizer(
        vocab=state["vocab"], merges=merges, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk
    )


def _vision(**extra) -> dict:
    return dict(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        initializer_range=INIT_RANGE,
        **extra,
    )


def _build_blip(out: Path) -> None:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    tokenizer = bert_tokenizer(bos="[DEC]")
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            encoder_hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=MAX_POSITIONS,
            projection_dim=HIDDEN,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
            initializer_range=INIT_RANGE,
        ),
        vision_config=_vision(projection_dim=HIDDEN),
        projection_dim=HIDDEN,
        image_text_hidden_size=HIDDEN,
    )
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    save_model(out, BlipForConditionalGeneration, config, BlipProcessor(image_processor, tokenizer))


def _build_blip2(out: Path) -> None:
    from tokenizers import AddedToken
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
        OPTConfig,
    )

    # OPT's conventions: </s> is both bos and eos, <pad> pads.
    tokenizer = gpt2_tokenizer("</s>", "</s>", "<pad>", "<unk>", ["<pad>", "</s>", "<unk>"])
    tokenizer.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    n_query = 4
    text = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        word_embed_proj_dim=HIDDEN,
        num_hidden_layers=1,
        ffn_dim=2 * HIDDEN,
        num_attention_heads=2,
        max_position_embeddings=MAX_POSITIONS + n_query,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        init_std=INIT_RANGE,
    )
    config = Blip2Config(
        vision_config=_vision(),
        qformer_config=dict(
            vocab_size=64,
            hidden_size=HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * HIDDEN,
            encoder_hidden_size=HIDDEN,
            initializer_range=INIT_RANGE,
        ),
        text_config=text.to_dict(),
        num_query_tokens=n_query,
        image_text_hidden_size=HIDDEN,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        initializer_range=INIT_RANGE,
    )
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # The processor must agree with the model on how many <image> placeholders to insert.
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=n_query)
    save_model(out, Blip2ForConditionalGeneration, config, processor)


def _build_git(out: Path) -> None:
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = bert_tokenizer()
    config = GitConfig(
        vision_config=_vision(),
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    save_model(out, GitForCausalLM, config, GitProcessor(image_processor, tokenizer))


def _build_vit_gpt2(out: Path) -> None:
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    eot = "<|endoftext|>"
    tokenizer = gpt2_tokenizer(eot, eot, None, eot, [eot])
    eos = tokenizer.eos_token_id
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=HIDDEN,
        n_layer=1,
        n_head=2,
        n_positions=MAX_POSITIONS,
        bos_token_id=eos,
        eos_token_id=eos,
        initializer_range=INIT_RANGE,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(**_vision()), decoder)
    # generate() needs a start token and a pad token; GPT-2 has neither, so both are eos (as in nlpconnect's).
    config.decoder_start_token_id = eos
    config.pad_token_id = eos
    config.eos_token_id = eos
    image_processor = ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # Like the real checkpoint: an image processor and a tokenizer side by side, no joint processor.
    save_model(out, VisionEncoderDecoderModel, config, image_processor, tokenizer)


def save_model(out: Path, model_cls, config, *parts) -> None:
    """model_cls(config) with seeded random weights, and its processor parts, saved into out."""
    import torch

    torch.manual_seed(SEED)  # same seed, same weights: two builds give identical folders
    model = model_cls(config).eval()
    model.save_pretrained(out)
    for part in parts:
        part.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "blip": _build_blip,
    "blip2": _build_blip2,
    "git": _build_git,
    "vit-gpt2": _build_vit_gpt2,
}


def is_complete(folder: Path) -> bool:
    """Whether folder holds a finished build of this TINY_VERSION."""
    marker = Path(folder) / MARKER
    return marker.is_file() and marker.read_text().strip() == TINY_VERSION


def make_tiny(root: Path, models: Iterable[str] | None = None) -> dict[str, Path]:
    """Build tiny random models into root/<model>; skip those already complete. Returns {model: folder}.

    Each folder loads with workers.models.load_captioner(model, checkpoint=folder), like a real one.
    Folders are built beside their target and renamed into place, so a reader never sees half a model.
    """
    root = Path(root)
    names = list(BUILDERS) if models is None else list(models)
    unknown = sorted(set(names) - set(BUILDERS))
    if unknown:
        raise ValueError(f"no tiny builder for {unknown}; known: {sorted(BUILDERS)}")
    root.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    # save_pretrained draws a progress bar per model: noise for a build that takes milliseconds.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        for name in names:
            if not is_complete(root / name):
                _build_into(root / name, BUILDERS[name])
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return {name: root / name for name in names}


def _build_into(target: Path, builder: Callable[[Path], None]) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        builder(work)
        (work / MARKER).write_text(TINY_VERSION + "\n")  # written last: its presence means complete
        work.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        if is_complete(target):
            return  # another process finished the same build meanwhile
        if target.exists():
            shutil.rmtree(target)  # an incomplete or outdated build
        os.replace(work, target)
    except OSError:
        # Another process may have renamed its own complete build into place first.
        if not is_complete(target):
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


CLIP_MARKER = ".capq-tiny-clip-complete"


def make_tiny_clip(out: Path) -> Path:
    """Build (once) a CLIP whose text and vision towers are one 32-wide layer each, saved with save_pretrained."""
    out = Path(out)
    if (out / CLIP_MARKER).exists():
        return out
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    # CLIP's BPE marks word ends with "</w>"; trained on the tiny models' caption corpus.
    raw = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|startoftext|>", "<|endoftext|>"],
            end_of_word_suffix="</w>",
            show_progress=False,
        ),
    )
    state = json.loads(raw.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = CLIPTokenizer(vocab=state["vocab"], merges=merges)
    torch.manual_seed(SEED)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    processor = CLIPProcessor(
        CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer
    )
    out.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(out)
    processor.save_pretrained(out)
    (out / CLIP_MARKER).write_text("ok\n")
    return out
