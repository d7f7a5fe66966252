"""Unit tests for static-cache decoding (the CUDA-graph path's caches, run eagerly on the CPU): the same token ids."""

from __future__ import annotations

import shutil

import pytest
import torch

from capq.presets import get_preset
from workers.adapters.static_cache import bucket, max_cache_len
from workers.models import MODELS, load_captioner

STATIC = ["blip", "blip2", "git", "vit-gpt2"]
# Weights drawn this wide make each image's captions its own (the tiny checkpoints' hardly depend on the image).
INIT_RANGE = {"blip": 0.5, "blip2": 1.0, "git": 0.5, "vit-gpt2": 0.5}


@pytest.fixture(scope="module")
def image_bound(tiny_models, tmp_path_factory):
    """{name: captioner} over tiny models whose captions differ per image, so a mix-up of rows would show."""
    from transformers import AutoConfig

    out = {}
    for name in STATIC:
        config = AutoConfig.from_pretrained(tiny_models[name])
        for part in (
            config,
            *(
                getattr(config, sub, None)
                for sub in ("vision_config", "qformer_config", "text_config", "encoder", "decoder")
            ),
        ):
            if part is not None:
                part.initializer_range = INIT_RANGE[name]
                if hasattr(part, "init_std"):
                    part.init_std = INIT_RANGE[name]
        folder = tmp_path_factory.mktemp(f"{name}-image-bound")
        torch.manual_seed(0)
        model_cls = type(load_captioner(name, tiny_models[name]).model)
        model_cls(config).save_pretrained(folder)
        for file in tiny_models[name].iterdir():
            if file.suffix != ".safetensors" and file.name != "config.json":
                shutil.copy(file, folder / file.name)
        out[name] = load_captioner(name, folder, max_batch_size=4)
    return out


def _preset(name: str, preset_name: str) -> dict:
    preset = get_preset(name, "default" if preset_name == "greedy" else preset_name)
    if preset_name == "greedy":
        preset["generate"] = {k: v for k, v in preset["generate"].items() if k != "num_beams"}
    return preset


class Recorder:
    """Wraps the generate a captioner calls, keeping its token ids and batch sizes, and counts static-cache writes."""

    def __init__(self, captioner, monkeypatch):
        from transformers.cache_utils import StaticLayer

        target = captioner.model.text_decoder if captioner.name == "blip" else captioner.model
        self.ids, self.static_writes = [], 0
        original, update = target.generate, StaticLayer.update

        def generate(*args, **kwargs):
            out = original(*args, **kwargs)
            self.ids.append(out.clone())
            return out

        def counting_update(layer, *args, **kwargs):
            self.static_writes += 1
            return update(layer, *args, **kwargs)

        monkeypatch.setattr(target, "generate", generate)
        monkeypatch.setattr(StaticLayer, "update", counting_update)


@pytest.mark.parametrize("name", STATIC)
@pytest.mark.parametrize("preset_name", ["greedy", "default", "seed"])
def test_static_cache_gives_the_token_ids_of_the_dynamic_cache(
    name, preset_name, image_bound, seed_images, monkeypatch
):
    # Given a captioner whose captions differ per image, and 4 seed images (one chunk: max_batch_size is 4)
    cap = image_bound[name]
    inputs = [cap.preprocess(image) for image in seed_images[:4]]
    preset = _preset(name, preset_name)
    recorder = Recorder(cap, monkeypatch)
    # If they are captioned with the eager dynamic cache and then with the static one
    cap.static_cache = False
    eager = cap.generate(inputs, preset)
    assert recorder.static_writes == 0
    cap.static_cache = True
    try:
        static = cap.generate(inputs, preset)
    finally:
        cap.static_cache = False
    # I expect the very same token ids and captions, and the static cache to have been written
    assert recorder.static_writes > 0
    assert len(recorder.ids) == 2 and torch.equal(recorder.ids[0], recorder.ids[1])
    assert static == eager
    assert len(set(eager)) == len(eager), eager  # distinct captions: a mix-up of rows would show


@pytest.mark.parametrize("name", STATIC)
@pytest.mark.parametrize("preset_name", ["greedy", "default"])
def test_the_static_decode_step_compiles_into_one_graph(name, preset_name, image_bound, seed_images):
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    # Given a captioner and a preset that makes generate compile its decode step with fullgraph=True, which raises at
    # any graph break (a break means host work, and a read-back from the GPU, between CUDA graphs at every step).
    # Traced on the CPU with dynamo's eager backend: no kernels are compiled, the graph is checked. Greedy steps are
    # compiled by transformers' generate, beam steps (the default presets but GIT's) by the captioner.
    cap = image_bound[name]
    inputs = [cap.preprocess(image) for image in seed_images[:2]]
    preset = _preset(name, preset_name)
    eager = cap.generate(inputs, preset)
    compiled = CompileConfig(fullgraph=True, backend="eager", mode=None)
    compiled._compile_all_devices = True  # transformers compiles on GPUs only unless told so
    preset["generate"]["compile_config"] = compiled
    torch._dynamo.reset()
    counters.clear()
    cap.static_cache = True
    try:
        # If it decodes with the static cache
        static = cap.generate(inputs, preset)
        # I expect the static path to have held (a compile failure would have made it fall back to eager)
        assert cap.static_cache is True
    finally:
        cap.static_cache = False
        torch._dynamo.reset()
    # and the decode step traced into graphs with no break, giving the eager captions
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    assert static == eager


def test_the_beam_cache_reorders_in_place():
    from transformers import GPT2Config

    from workers.adapters.static_cache import BeamStaticCache

    config = GPT2Config(n_layer=2, n_head=2, n_embd=8)
    cache = BeamStaticCache(config=config, max_cache_len=5)
    keys, values = torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    for layer in range(2):
        cache.update(keys, values, layer)
    addresses = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers]
    expected_keys, expected_values = cache.layers[0].keys[[2, 0, 0]].clone(), cache.layers[0].values[[2, 0, 0]].clone()
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    # The beams' keys and values moved, the tensors did not (a CUDA graph keeps reading the same addresses)
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers] == addresses
    assert torch.equal(cache.layers[1].keys, expected_keys) and torch.equal(cache.layers[1].values, expected_values)


def test_git_caches_its_image_tokens_ahead_of_the_text(image_bound, seed_images):
    cap = image_bound["git"]
    image_tokens = cap.model.git.encoder.layer[0].attention.self.image_patch_tokens
    inputs = [cap.preprocess(image) for image in seed_images[:2]]
    cap.static_cache = True
    try:
        cap.generate(inputs, {"prompt": "a photo of", "generate": {"max_new_tokens": 6, "num_beams": 2}})
        cap.generate(inputs, {"generate": {"max_length": 9}})
    finally:
        cap.static_cache = False
    # One cache per (rows, length): [CLS] + 3 prompt tokens + 6 new ones, or 9 text positions, behind the image's
    lengths = {(rows, length) for (_, rows, length) in cap.static_caches._caches}
    assert {(4, image_tokens + 10), (2, image_tokens + 9)} <= lengths


def test_static_path_pads_chunks_to_buckets_and_drops_the_copies(image_bound, seed_images, monkeypatch):
    cap = image_bound["blip"]
    inputs = [cap.preprocess(image) for image in seed_images[:7]]  # chunks of 4 and 3
    preset = _preset("blip", "greedy")
    eager = cap.generate(inputs, preset)
    recorder = Recorder(cap, monkeypatch)
    caches_before = len(cap.static_caches._caches)
    cap.static_cache = True
    try:
        static = cap.generate(inputs, preset)
        static_again = cap.generate(inputs, preset)
    finally:
        cap.static_cache = False
    # The chunk of 3 ran as a batch of 4; its padding row is not among the captions
    assert [ids.shape[0] for ids in recorder.ids] == [4, 4, 4, 4]
    assert static == static_again == eager and len(static) == 7
    # Both chunks, in both calls, reused one static cache (reset between uses): same addresses for the graphs
    assert len(cap.static_caches._caches) - caches_before <= 1


def test_a_failing_static_path_falls_back_to_eager_for_good(image_bound, seed_images, monkeypatch, caplog):
    cap = image_bound["blip"]
    inputs = [cap.preprocess(image) for image in seed_images[:2]]
    preset = _preset("blip", "default")
    eager = cap.generate(inputs, preset)

    def broken(*args, **kwargs):
        raise RuntimeError("graph capture failed")

    monkeypatch.setattr(cap.static_caches, "self_attention", broken)
    cap.static_cache = True
    try:
        assert cap.generate(inputs, preset) == eager
        assert cap.static_cache is False
        assert "falling back" not in caplog.text and "decoding eagerly from now on" in caplog.text
    finally:
        cap.static_cache = False


def test_a_bad_request_raises_and_leaves_the_static_path_on(image_bound, seed_images):
    cap = image_bound["blip"]
    inputs = [cap.preprocess(seed_images[0])]
    cap.static_cache = True
    try:
        with pytest.raises(ValueError):
            cap.generate(inputs, {"generate": {"num_beams": 2, "num_return_sequences": 3}})
        assert cap.static_cache is True
    finally:
        cap.static_cache = False


def test_static_decoding_is_chosen_on_gpus_only_and_where_supported():
    assert [name for name, spec in MODELS.items() if spec.adapter.supports_static_cache] == STATIC
    for spec in MODELS.values():
        assert spec.adapter("x", device="cpu").static_cache is False
        assert spec.adapter("x", device="cuda:0").static_cache is spec.adapter.supports_static_cache


def test_buckets_and_cache_lengths():
    from transformers import GenerationConfig

    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 64, 65, 200)] == [1, 2, 4, 8, 8, 16, 64, 128, 256]
    with pytest.raises(ValueError, match="greater than 0"):
        bucket(0)
    config = GenerationConfig(max_length=20)
    assert max_cache_len({"max_new_tokens": 30}, config, 36) == 66
    assert max_cache_len({"max_length": 200}, config, 4) == 200
    assert max_cache_len({}, config, 4) == 20


def test_pinned_buffers_keep_their_address_and_take_new_values():
    from workers.adapters.static_cache import StaticCaches

    caches = StaticCaches()
    first = caches.pin("k", torch.ones(2, 3))
    second = caches.pin("k", torch.full((2, 3), 7.0))
    assert second.data_ptr() == first.data_ptr() and torch.equal(second, torch.full((2, 3), 7.0))
    assert caches.pin("k", torch.ones(4, 3)).data_ptr() != first.data_ptr()  # another bucket, another buffer
