"""tiny_marian: a tiny random-weight Marian translation model, built offline (sentencepiece trained in-process)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

from tooling.tiny import MARKER, SEED, corpus

TINY_MARIAN_VERSION = "1"
HIDDEN = 32


def _spm(lines: list[str]) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=120,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        pad_id=-1,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        num_threads=1,
    )
    return model.getvalue()


def _build(out: Path) -> None:
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    lines = corpus()
    model_bytes = _spm(lines)
    (out / "source.spm").write_bytes(model_bytes)
    (out / "target.spm").write_bytes(model_bytes)
    proc = spm.SentencePieceProcessor(model_proto=model_bytes)
    pieces = [proc.id_to_piece(i) for i in range(proc.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=HIDDEN,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * HIDDEN,
        decoder_ffn_dim=2 * HIDDEN,
        max_position_embeddings=256,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
    )
    torch.manual_seed(SEED)
    MarianMTModel(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)


def is_complete(folder: Path) -> bool:
    marker = Path(folder) / MARKER
    return marker.is_file() and marker.read_text().strip() == TINY_MARIAN_VERSION


def make_tiny_marian(target: Path) -> Path:
    """Build into `target` unless a complete build is there; loads with MarianMTModel.from_pretrained(target)."""
    target = Path(target)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build(work)
        (work / MARKER).write_text(TINY_MARIAN_VERSION + "\n")
        work.chmod(0o755)
        if not is_complete(target):
            shutil.rmtree(target, ignore_errors=True)
            work.replace(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
