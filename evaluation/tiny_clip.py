"""tiny_clip: a tiny random-weight CLIP (model, BPE tokenizer, PIL image processor) built offline, for tests and demos."""
from __future__ import annotations

import json
from pathlib import Path

from workers.tiny import SEED, _corpus

MARKER = ".capq-tiny-clip-complete"


def make_tiny_clip(out: Path) -> Path:
    """Build (once) a CLIP whose text and vision towers are one 32-wide layer each, saved with save_pretrained."""
    out = Path(out)
    if (out / MARKER).exists():
        return out
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    # CLIP's BPE marks word ends with "</w>"; trained on the tiny models' caption corpus.
    raw = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>",
        show_progress=False))
    state = json.loads(raw.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = CLIPTokenizer(vocab=state["vocab"], merges=merges)
    torch.manual_seed(SEED)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    processor = CLIPProcessor(CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                              tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(out)
    processor.save_pretrained(out)
    (out / MARKER).write_text("ok\n")
    return out
