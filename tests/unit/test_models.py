"""Unit tests for the model layer: adapters, presets, registry and tiny models, on tiny random weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from capq.presets import PRESETS, apply_postprocess, config_hash, get_preset, preset_names
from tooling.tiny import MARKER, make_tiny
from workers.adapters.base import Captioner, CheckpointError
from workers.models import MODELS, describe_models, load_captioner

REPO = Path(__file__).resolve().parents[2]
NAMES = ["blip", "blip2", "git", "vit-gpt2"]


def _check_captions(captions, count):
    assert isinstance(captions, list) and len(captions) == count
    for caption in captions:
        # Random weights may well give empty captions: type and shape are what can be asserted.
        assert isinstance(caption, str) and caption == caption.strip()


# Captioning the seed images with each tiny model


@pytest.mark.parametrize("name", NAMES)
def test_batches_of_4_match_one_by_one_in_input_order(name, captioners, seed_images):
    # Given a tiny model loaded with max_batch_size=4 and the 10 seed images
    captioner = captioners[name]
    inputs = [captioner.preprocess(image) for image in seed_images]
    preset = get_preset(name, "default")
    # If I caption them together (run as batches of 4, 4, 2) and then one at a time
    batched = captioner.generate(inputs, preset)
    single = [captioner.generate([x], preset)[0] for x in inputs]
    # I expect one stripped string per image, the same captions both ways, so in input order
    _check_captions(batched, len(seed_images))
    assert batched == single
    # and captions that differ per image: were they all equal, a mix-up of images would pass unseen
    assert len(set(batched)) == len(seed_images), batched


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("preset_name", ["default", "seed"])
def test_every_preset_runs_and_is_deterministic(name, preset_name, captioners, seed_images):
    # Two images keep it quick: the seed presets beam-search 8 wide up to 200 tokens.
    captioner = captioners[name]
    inputs = [captioner.preprocess(image) for image in seed_images[:2]]
    preset = get_preset(name, preset_name)
    first = captioner.generate(inputs, preset)
    _check_captions(first, 2)
    assert captioner.generate(inputs, preset) == first


def test_seed_vit_gpt2_postprocess_shapes_captions(captioners, seed_images):
    captioner = captioners["vit-gpt2"]
    captions = captioner.generate([captioner.preprocess(seed_images[0])], get_preset("vit-gpt2", "seed"))
    assert all(c.endswith(".") and "_" not in c and "  " not in c for c in captions if c)
    assert apply_postprocess("seed_vit_gpt2", " a  dog__ on grass!") == "a dog on grass."
    assert apply_postprocess("seed_vit_gpt2", "") == ""


@pytest.mark.parametrize("name", ["blip", "blip2"])
def test_prompt_is_not_part_of_the_caption(name, captioners, seed_images):
    captioner = captioners[name]
    prompt = get_preset(name, "default")["prompt"]
    caption = captioner.generate([captioner.preprocess(seed_images[0])], get_preset(name, "default"))[0]
    assert not caption.lower().startswith(prompt.strip())


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_no_preset_uses_the_models_own_generation_config(captioners, seed_images):
    captioner = captioners["git"]
    _check_captions(captioner.generate([captioner.preprocess(seed_images[0])]), 1)
    assert captioner.generate([]) == []


def test_vit_gpt2_refuses_a_prompt(captioners, seed_images):
    captioner = captioners["vit-gpt2"]
    with pytest.raises(ValueError, match="takes no prompt"):
        captioner.generate([captioner.preprocess(seed_images[0])], {"prompt": "a photo of"})


def test_malformed_generation_configs_are_rejected_before_running(captioners):
    with pytest.raises(ValueError, match="go under 'generate'"):
        captioners["git"].generate([], {"max_length": 20})
    with pytest.raises(ValueError, match="unknown postprocess 'shout'"):
        captioners["git"].generate([], {"postprocess": "shout"})


# The Captioner contract, on a fake as small as LitServe's


class Echo(Captioner):
    name = "echo"

    def __init__(self, drop: int = 0, **kwargs):
        super().__init__("echo-checkpoint", **kwargs)
        self.drop, self.calls = drop, []

    def _load(self):
        import torch

        self.model = torch.nn.Identity()

    def preprocess(self, image):
        return image

    def _generate(self, batch, prompt, kwargs):
        self.calls.append(len(batch))
        return [f"  caption {x}  " for x in batch][self.drop :]


def test_generate_keeps_order_chunks_and_strips():
    echo = Echo(max_batch_size=4).load()
    assert echo.generate(list(range(10))) == [f"caption {i}" for i in range(10)]
    assert echo.calls == [4, 4, 2]


def test_length_contract_is_checked_like_litserve():
    echo = Echo(drop=1).load()
    with pytest.raises(RuntimeError, match="returned 1 outputs, but expected 2"):
        echo.generate([1, 2])


def test_generate_before_load_is_refused():
    with pytest.raises(RuntimeError, match="before load"):
        Echo().generate([1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"device": "gpu"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"device": "cuda:x"}, "device must be"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer greater than 0"),
        ({"max_batch_size": True}, "max_batch_size"),
    ],
)
def test_constructor_checks_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Echo(**kwargs)


def test_constructor_accepts_cuda_devices_without_loading():
    assert Echo(device="cuda:1", dtype="bf16").device == "cuda:1"  # no GPU needed until load()


# Registry, presets and errors that name what to fix


def test_registry_names_and_description():
    assert list(MODELS) == NAMES
    rows = describe_models()
    assert [row["model"] for row in rows] == NAMES
    blip = rows[0]
    assert blip["default_checkpoint"] == "Salesforce/blip-image-captioning-large"
    assert "Salesforce/blip-image-captioning-base" in blip["other_checkpoints"]
    assert all(row["presets"][:1] == ["default"] and "seed" in row["presets"] for row in rows)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'clip'.*'blip', 'blip2', 'git', 'vit-gpt2'"):
        load_captioner("clip")


def test_unknown_preset_lists_available_presets():
    with pytest.raises(ValueError, match=r"unknown preset 'fast'.*\['default', 'seed'\]"):
        get_preset("blip", "fast")
    assert preset_names("git") == ["default", "seed"]


def test_every_model_has_default_and_seed_presets_of_the_same_shape():
    assert sorted(PRESETS) == sorted(NAMES)
    for name in NAMES:
        for preset in (get_preset(name, "default"), get_preset(name, "seed")):
            assert set(preset) == {"prompt", "generate", "postprocess"}


def test_get_preset_returns_a_copy():
    get_preset("blip", "default")["generate"]["num_beams"] = 99
    assert get_preset("blip", "default")["generate"]["num_beams"] == 3


def test_config_hash_depends_on_content_not_name():
    default = get_preset("git", "default")
    same = {"generate": {"max_length": 50}, "prompt": None, "postprocess": None}
    assert config_hash("git", default) == config_hash("git", same)
    assert config_hash("git", default) == config_hash("git", {"generate": {"max_length": 50}})
    assert len(config_hash("git", default)) == 16 and int(config_hash("git", default), 16) >= 0
    assert config_hash("git", default) != config_hash("git", get_preset("git", "seed"))
    assert config_hash("git", default) != config_hash("blip", default)
    assert config_hash("git", default) != config_hash("git", default, checkpoint="microsoft/git-large-coco")


def test_missing_checkpoint_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    expected = rf"cannot load blip checkpoint '{re.escape(str(missing))}': no such folder"
    with pytest.raises(CheckpointError, match=expected):
        load_captioner("blip", missing)


def test_broken_checkpoint_folder_is_named(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    with pytest.raises(CheckpointError, match=rf"cannot load git checkpoint '{re.escape(str(broken))}'"):
        load_captioner("git", broken)


def test_weights_missing_from_a_folder_is_named(tmp_path, tiny_models):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_models["git"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match=rf"cannot load git checkpoint '{re.escape(str(partial))}'"):
        load_captioner("git", partial)


def test_checkpoint_of_another_architecture_is_refused(tiny_models):
    with pytest.raises(CheckpointError, match=r"holds a 'git' model, not 'blip'"):
        load_captioner("blip", tiny_models["git"])


# Offline behaviour: local folders never touch the network; hub ids fail with their name


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, socket, sys

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call {args!r}")

    socket.socket.connect = refuse
    socket.create_connection = refuse

    from PIL import Image
    from workers.adapters.base import CheckpointError
    from workers.models import load_captioner

    result = {}
    for name, folder in json.loads(sys.argv[1]).items():
        captioner = load_captioner(name, folder)
        result[name] = captioner.generate([captioner.preprocess(Image.new("RGB", (40, 30), "red"))])
    try:
        load_captioner("git", "microsoft/git-base-coco")
    except CheckpointError as exc:
        result["hub_error"] = str(exc)
    print(json.dumps(result))
""")


def test_local_folders_load_with_hf_hub_offline_and_no_network(tiny_models, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(REPO)}
    folders = json.dumps({name: str(folder) for name, folder in tiny_models.items()})
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, folders], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in NAMES:
        _check_captions(result[name], 1)
    assert result["hub_error"].startswith("cannot load git checkpoint 'microsoft/git-base-coco': ")
    assert "HF_HUB_OFFLINE" in result["hub_error"]


# Building tiny models


def test_make_tiny_skips_complete_folders_and_rebuilds_incomplete_ones(tiny_models, tmp_path):
    # Given a complete build, a second call leaves it untouched
    weights = tiny_models["git"] / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert make_tiny(tiny_models["git"].parent, ["git"]) == {"git": tiny_models["git"]}
    assert weights.stat().st_mtime_ns == stamp
    # If a folder lacks its marker (a build that died), it is rebuilt, to the same bytes
    copy = make_tiny(tmp_path, ["git"])["git"]
    (copy / MARKER).unlink()
    make_tiny(tmp_path, ["git"])
    assert (copy / MARKER).is_file()
    assert (copy / "model.safetensors").read_bytes() == weights.read_bytes()
    assert (copy / "tokenizer.json").read_bytes() == (tiny_models["git"] / "tokenizer.json").read_bytes()


def test_make_tiny_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="no tiny builder"):
        make_tiny(tmp_path, ["clip"])


def test_tiny_models_are_small(tiny_models):
    assert all(sum(f.stat().st_size for f in d.iterdir()) < 1_000_000 for d in tiny_models.values())


def test_an_rgb_image_of_any_size_is_accepted(captioners):
    captioner = captioners["blip"]
    inputs = [captioner.preprocess(Image.new("RGB", size, "blue")) for size in [(7, 300), (640, 480)]]
    _check_captions(captioner.generate(inputs, get_preset("blip", "default")), 2)


# Beam search with cross-attention entries left in place


@pytest.mark.parametrize("name", ["blip", "vit-gpt2"])
def test_fixed_cross_attention_cache_gives_the_same_beams(name, captioners, seed_images):
    import torch

    from workers.adapters.beam_cache import FixedCrossAttentionCache, fixed_cross_attention_cache

    seen = []

    class Spy(FixedCrossAttentionCache):
        def reorder_cache(self, beam_idx):
            seen.append(beam_idx.clone())
            super().reorder_cache(beam_idx)

    cap = captioners[name]
    model = cap.model
    decoder = model.text_decoder if name == "blip" else model.decoder
    pixels = cap.pixels([cap.preprocess(image) for image in seed_images[:4]])
    beams = 5
    kwargs = {"max_length": 24, "min_length": 12, "num_beams": beams}
    if name == "vit-gpt2":  # BLIP's generate sets its own
        kwargs |= {"pad_token_id": cap.tokenizer.pad_token_id, "eos_token_id": cap.tokenizer.eos_token_id}
    with torch.inference_mode():
        stock = model.generate(pixel_values=pixels, **kwargs)
        empty = fixed_cross_attention_cache(decoder.config)
        fixed = model.generate(
            pixel_values=pixels, cache=Spy(empty.self_attention_cache, empty.cross_attention_cache), **kwargs
        )
    assert torch.equal(stock, fixed)
    # What makes leaving cross-attention entries in place exact: every reorder picks, for each row, a beam
    # of the same image (rows i*beams .. i*beams+beams-1 belong to image i).
    assert seen, "beam search reordered nothing: the check below would prove nothing"
    rows = torch.arange(len(seen[0]))
    assert all(torch.equal(idx // beams, rows // beams) for idx in seen)


# BLIP's generate, rebuilt with cross-attention projected once per image and a fused vision attention


@pytest.fixture(scope="module")
def image_bound_blip(tiny_models, tmp_path_factory):
    """A tiny BLIP whose captions depend on the image, as a trained one's do (BLIP's own config initialises
    vision weights at 1e-10), drawn here from its own seed so these parity checks do not move with the tiny
    builder's weights."""
    import shutil

    import torch
    from transformers import AutoConfig, BlipForConditionalGeneration

    config = AutoConfig.from_pretrained(tiny_models["blip"])
    config.vision_config.initializer_range = config.text_config.initializer_range = 0.5
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("blip-image-bound")
    BlipForConditionalGeneration(config).save_pretrained(folder)
    for part in tiny_models["blip"].iterdir():
        if part.suffix != ".safetensors" and part.name != "config.json":
            shutil.copy(part, folder / part.name)
    return load_captioner("blip", folder, max_batch_size=4)


@pytest.mark.parametrize("preset_name", ["default", "seed", "greedy"])
def test_blip_captions_equal_stock_generate(preset_name, image_bound_blip, seed_images):
    """The adapter's own generate path gives the very captions of BlipForConditionalGeneration.generate."""
    import torch

    cap = image_bound_blip
    preset = get_preset("blip", "default" if preset_name == "greedy" else preset_name)
    if preset_name == "greedy":
        preset["generate"] = {"max_length": 12}
    inputs = [cap.preprocess(image) for image in seed_images[:4]]
    prompt, kwargs = preset["prompt"], dict(preset["generate"])
    with torch.inference_mode():
        torch.manual_seed(0)
        if prompt:
            input_ids = cap.tokenizer([prompt] * len(inputs), return_tensors="pt").input_ids
            stock = cap.model.generate(pixel_values=cap.pixels(inputs), input_ids=input_ids, **kwargs)
            start = input_ids.shape[1] - 1
        else:
            stock = cap.model.generate(pixel_values=cap.pixels(inputs), **kwargs)
            start = 1
    expected = [text.strip() for text in cap.tokenizer.batch_decode(stock[:, start:], skip_special_tokens=True)]
    # Without distinct captions a mix-up of images (or of their beams' cache rows) would go unseen.
    assert len(set(expected)) == len(expected), expected
    assert cap.generate(inputs, preset) == expected


def test_fused_vision_attention_matches_transformers(image_bound_blip, tiny_models, seed_images):
    import torch
    from transformers import BlipForConditionalGeneration

    fused = image_bound_blip.model.vision_model
    stock = BlipForConditionalGeneration.from_pretrained(image_bound_blip.checkpoint).vision_model.eval()
    pixels = image_bound_blip.pixels([image_bound_blip.preprocess(image) for image in seed_images[:3]])
    with torch.inference_mode():
        want, got = stock(pixel_values=pixels).pooler_output, fused(pixel_values=pixels).pooler_output
        attention_map = stock.encoder.layers[0].self_attn(stock.embeddings(pixels))[1]
        fused_map = fused.encoder.layers[0].self_attn(fused.embeddings(pixels))[1]
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The module really runs the fused path: the stock one returns its attention map, the fused one none.
    assert attention_map is not None and fused_map is None
