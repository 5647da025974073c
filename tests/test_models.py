"""Loading Qwen3.5 for text experiments (tiny names, local dirs, VL checkpoints, the hub cache) and the warm cache."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen3_5Config, Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

from experiments.qwen35 import kernels, models
from experiments.qwen35.data import encode_prompts
from experiments.qwen35.models import (
    BaseModelCache,
    fingerprint,
    load_model_and_tokenizer,
    resolve_dtype,
)
from experiments.qwen35.tiny import build_tiny_model, build_tokenizer

# A vision tower as small as Qwen3_5VisionConfig allows, so the VL checkpoint really holds model.visual.* weights.
TINY_VISION = {
    "depth": 1,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "patch_size": 4,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "out_hidden_size": 64,
    "num_position_embeddings": 16,
}
HUB_ID = "Qwen/Qwen3.5-0.8B"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXT = "What is 3 + 4?\n#### 7"
PROMPT_IDS = torch.tensor([[40, 50, 60, 70, 80, 90, 45, 55]])


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every parameter: Qwen3.5 initialises its RMSNorm weights to zero, and all-zero weights
    would look equal under any mix-up of names."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=generator))
    return model.eval()


def _qwen_tokenizer() -> Qwen3_5Tokenizer:
    """A byte-level Qwen3.5 tokenizer with no merges: the real class and pipeline, a vocabulary of 257."""
    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    return Qwen3_5Tokenizer(vocab=vocab, merges=[])


def _save_vl_checkpoint(directory: Path, tie: bool) -> Qwen3_5ForConditionalGeneration:
    """A tiny checkpoint laid out like the released ones: ConditionalGeneration config, safetensors, tokenizer."""
    tokenizer = _qwen_tokenizer()
    text_config = build_tiny_model("tiny", vocab_size=len(tokenizer)).config.to_dict()
    config = Qwen3_5Config(text_config=text_config, vision_config=TINY_VISION, tie_word_embeddings=tie)
    vl_model = _perturb(Qwen3_5ForConditionalGeneration(config), seed=1)
    vl_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return vl_model


@pytest.fixture(scope="module")
def vl_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vl")
    return directory, _save_vl_checkpoint(directory, tie=False)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def _assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and actual[name].shape == tensor.shape, name
        assert torch.equal(_bits(actual[name]), _bits(tensor)), name


def _language_model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's text weights under Qwen3_5ForCausalLM's names; lm_head is the embedding when tied."""
    weights = load_file(checkpoint / "model.safetensors")
    assert any(name.startswith("model.visual.") for name in weights)  # it really is a VL checkpoint
    prefix = "model.language_model."
    text = {"model." + name[len(prefix) :]: value for name, value in weights.items() if name.startswith(prefix)}
    text["lm_head.weight"] = weights.get("lm_head.weight", text["model.embed_tokens.weight"])
    return text


def _assert_language_model_of(loaded, checkpoint: Path, vl_model: Qwen3_5ForConditionalGeneration) -> None:
    model = loaded.model
    assert type(model) is Qwen3_5ForCausalLM
    assert not [name for name, module in model.named_modules() if "visual" in name or "Vision" in type(module).__name__]
    _assert_same_weights(model.state_dict(), _language_model_weights(checkpoint))
    with torch.no_grad():
        assert torch.equal(model(PROMPT_IDS).logits, vl_model(input_ids=PROMPT_IDS).logits)
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    assert torch.equal(model.generate(PROMPT_IDS, **greedy), vl_model.generate(PROMPT_IDS, **greedy))
    assert type(loaded.tokenizer) is Qwen3_5Tokenizer
    assert loaded.tokenizer(TEXT)["input_ids"] == _qwen_tokenizer()(TEXT)["input_ids"]
    assert loaded.info.from_vl_checkpoint


def test_resolve_dtype():
    assert resolve_dtype(None, "cpu") == resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert resolve_dtype("bf16", "cpu") == resolve_dtype("bfloat16", "cuda") == torch.bfloat16
    assert resolve_dtype("fp16", "cpu") == resolve_dtype("float16", "cpu") == torch.float16
    assert resolve_dtype("FP32", "cuda") == resolve_dtype("float32", "cuda") == torch.float32
    with pytest.raises(ValueError, match=r"param 'dtype' must be one of auto, bfloat16, bf16, .*; got 'int8'"):
        resolve_dtype("int8", "cpu")
    with pytest.raises(ValueError, match="'dtype'"):
        load_model_and_tokenizer("tiny", dtype="half")


def test_tiny_name_builds_the_seeded_model_in_eval_mode():
    loaded = load_model_and_tokenizer("tiny", seed=3, dtype="bf16")
    assert loaded.info == models.LoadInfo(
        source="tiny", path=None, dtype="bfloat16", device="cpu", load_s=loaded.info.load_s,
        fast_kernels=0, from_vl_checkpoint=False,
    )
    assert not loaded.model.training
    expected = {name: value.to(torch.bfloat16) for name, value in build_tiny_model("tiny", seed=3).state_dict().items()}
    _assert_same_weights(loaded.model.state_dict(), expected)
    assert loaded.tokenizer(TEXT)["input_ids"] == build_tokenizer()(TEXT)["input_ids"]


def test_local_causal_lm_directory_round_trips(tmp_path):
    original = _perturb(build_tiny_model("tiny", seed=2), seed=2)
    original.save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)

    loaded = load_model_and_tokenizer(str(tmp_path))

    assert type(loaded.model) is Qwen3_5ForCausalLM
    _assert_same_weights(loaded.model.state_dict(), original.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded.model(PROMPT_IDS).logits, original(PROMPT_IDS).logits)
    assert loaded.tokenizer(TEXT)["input_ids"] == build_tokenizer()(TEXT)["input_ids"]
    assert loaded.tokenizer.padding_side == "right"  # as saved: left padding is the caller's per-call choice
    assert (loaded.info.source, loaded.info.path, loaded.info.from_vl_checkpoint) == ("local", str(tmp_path), False)
    assert loaded.info.dtype == "float32" and not loaded.model.training


def test_vl_checkpoint_loads_the_language_model_only(vl_checkpoint):
    directory, vl_model = vl_checkpoint
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"] and "vision_config" in config

    loaded = load_model_and_tokenizer(str(directory))

    _assert_language_model_of(loaded, directory, vl_model)
    assert loaded.model.lm_head.weight.data_ptr() != loaded.model.model.embed_tokens.weight.data_ptr()


def test_vl_checkpoint_with_tied_embeddings_ties_lm_head(tmp_path):
    # Tied at the top level only, as the VL model reads it: the checkpoint has no lm_head.weight.
    vl_model = _save_vl_checkpoint(tmp_path, tie=True)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")

    loaded = load_model_and_tokenizer(str(tmp_path))

    _assert_language_model_of(loaded, tmp_path, vl_model)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight


@pytest.fixture
def offline_hub(monkeypatch, tmp_path, vl_checkpoint):
    """A Hugging Face cache holding the tiny VL checkpoint as Qwen/Qwen3.5-0.8B, offline, found through HF_HOME.

    huggingface_hub froze its cache path and offline flag at import; the loader reads the environment per call.
    """
    repo = tmp_path / "hf" / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(vl_checkpoint[0], repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo


def test_hub_id_loads_from_the_cache_offline(offline_hub, vl_checkpoint):
    loaded = load_model_and_tokenizer(HUB_ID)

    _assert_language_model_of(loaded, vl_checkpoint[0], vl_checkpoint[1])
    assert (loaded.info.source, loaded.info.path) == ("hub", str(offline_hub / "snapshots" / COMMIT))


def test_hub_id_missing_from_the_cache_offline_says_how_to_get_it(offline_hub):
    with pytest.raises(FileNotFoundError) as raised:
        load_model_and_tokenizer("Qwen/Qwen3.5-9B")
    message = str(raised.value)
    for part in ("'Qwen/Qwen3.5-9B'", str(offline_hub.parent), "HF_HUB_OFFLINE", "hf download Qwen/Qwen3.5-9B",
                 "huggingface-cli download Qwen/Qwen3.5-9B", "local directory"):
        assert part in message


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="'./no/such/checkpoint' is not a directory"):
        load_model_and_tokenizer("./no/such/checkpoint")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama' is not Qwen3.5"):
        load_model_and_tokenizer(str(tmp_path))


def test_checkpoint_that_does_not_match_its_config_is_refused_not_left_random(tmp_path):
    build_tiny_model("tiny").save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["model.layers.1.mlp.up_projection.weight"] = weights.pop("model.layers.1.mlp.up_proj.weight")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match=r"1 missing \(e.g. model.layers.1.mlp.up_proj.weight\); "
                                           r"1 unexpected \(e.g. model.layers.1.mlp.up_projection.weight\)"):
        load_model_and_tokenizer(str(tmp_path))


def test_slow_kernel_warning_is_given_once_and_only_for_cuda(monkeypatch):
    monkeypatch.setattr(kernels, "_importable", lambda package, internal, name: package == "fla")
    models._warn_slow_kernels.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # so that only the loader's own once-per-process rule is tested
            assert models._check_kernels("cpu") == 0
            assert not caught
            assert models._check_kernels("cuda") == 2  # fla's two: the delta rule, chunked and recurrent
            models._check_kernels("cuda:0")
        assert [str(warning.message) for warning in caught] == [models.SLOW_KERNELS_WARNING.format(
            device="cuda", missing="causal_conv1d_fn, causal_conv1d_update")]
        assert "reference PyTorch implementation of causal_conv1d_fn" in str(caught[0].message)
    finally:
        models._warn_slow_kernels.cache_clear()


def test_fingerprint_sees_one_changed_element():
    model = build_tiny_model("tiny")
    before = fingerprint(model)
    assert fingerprint(model) == before == fingerprint(build_tiny_model("tiny"))
    weight = model.model.layers[2].linear_attn.A_log
    with torch.no_grad():
        weight[1] = torch.nextafter(weight[1], torch.tensor(float("inf")))  # the smallest possible change
    assert fingerprint(model) != before


def test_warm_cache_reuses_only_what_was_checked_unchanged():
    cache = BaseModelCache()
    first = cache.get("tiny", seed=0)
    # Not yet checked back in (the run might have crashed mid-way): a fresh load.
    second = cache.get("tiny", seed=0)
    assert second is not first
    cache.check_unchanged(second)
    assert cache.get("tiny", seed=0, dtype="fp32") is second  # "fp32" resolves to the same key
    cache.check_unchanged(second)
    assert cache.get("tiny", seed=1) is not second  # the seed is part of a tiny model's key


def test_changed_base_weights_raise_and_are_not_reused():
    cache = BaseModelCache()
    loaded = cache.get("tiny")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.up_proj.weight[3, 5] += 1e-3
    with pytest.raises(RuntimeError, match=r"changed while cached: 1 parameter\(s\) changed "
                                           r"\(e.g. model.layers.0.mlp.up_proj.weight\)"):
        cache.check_unchanged(loaded)
    assert cache.get("tiny") is not loaded


def test_lora_run_that_unloads_leaves_the_base_reusable():
    from peft import LoraConfig, get_peft_model

    cache = BaseModelCache()
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "in_proj_qkv", "out_proj"], init_lora_weights=False)
    inputs = {"input_ids": PROMPT_IDS, "labels": PROMPT_IDS}

    loaded = cache.get("tiny")
    peft_model = get_peft_model(loaded.model, lora)
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        peft_model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.unload()
    cache.check_unchanged(loaded)

    again = cache.get("tiny")
    assert again is loaded
    # Handed back as loaded, although PEFT froze the base parameters and left train mode on.
    assert not again.model.training and all(param.requires_grad for param in again.model.parameters())

    # A run that leaves its adapter in place does not get its model reused.
    get_peft_model(again.model, lora)
    with pytest.raises(RuntimeError, match=r"parameter\(s\) added \(e.g. .*lora_A"):
        cache.check_unchanged(again)
    assert cache.get("tiny") is not again


def _used_twice(cache: BaseModelCache):
    """The tiny model, handed out twice (the second time from the cache) and given back unchanged each time."""
    first = cache.get("tiny")
    cache.check_unchanged(first)
    assert cache.get("tiny") is first
    cache.check_unchanged(first)
    return first


def test_max_uses_recycles():
    cache = BaseModelCache(max_uses=2)
    first = _used_twice(cache)
    assert cache.get("tiny") is not first


def test_rss_growth_recycles():
    cache = BaseModelCache(max_rss_growth_mb=64)
    first = _used_twice(cache)
    grown = torch.ones(64 * 2**20)  # 256 MiB, written, so resident
    assert cache.get("tiny") is not first
    del grown


def test_disabled_cache_always_loads_fresh():
    cache = BaseModelCache(enabled=False)
    first = cache.get("tiny")
    cache.check_unchanged(first)  # nothing held, nothing to check
    assert cache.get("tiny") is not first
    cache.enabled = True
    held = cache.get("tiny")
    cache.check_unchanged(held)
    cache.enabled = False
    assert cache.get("tiny") is not held


def test_warm_cache_is_one_per_process():
    assert models.warm_cache() is models.warm_cache()
    assert isinstance(models.warm_cache(), BaseModelCache)


def test_an_adapter_trained_on_a_vl_checkpoint_loads_back_onto_it(vl_checkpoint, tmp_path):
    """Trained on the language model of a released-layout checkpoint, the adapter is saved under the released class's
    module names: it loads onto Qwen3_5ForConditionalGeneration with every LoRA weight, and the inference experiment
    (which builds the text-only class) still applies it, generating what the released class with it generates."""
    from peft import PeftModel

    from experiments.qwen35 import finetune, inference
    from orchestrator.context import RunContext

    directory, _ = vl_checkpoint
    trained = tmp_path / "adapter"
    ctx = RunContext(study="t", cell_key="vl", seed=0, num_cpus=1, artifact_dir=str(trained))
    finetune.run({"model": str(directory), "method": "lora", "chat": False, "max_steps": 3, "n_eval": 4,
                  "learning_rate": 1e-2, "lora_targets": "all"}, ctx)
    config = json.loads((trained / "adapter_config.json").read_text())
    assert config["target_modules"] and all(name.startswith("model.language_model.layers.")
                                            for name in config["target_modules"])

    released = Qwen3_5ForConditionalGeneration.from_pretrained(directory)
    adapted = PeftModel.from_pretrained(released, trained).eval()
    saved = load_file(trained / "adapter_model.safetensors")
    lora_b = {name: p for name, p in adapted.named_parameters() if "lora_B" in name}
    assert len(lora_b) == sum(1 for key in saved if "lora_B" in key) > 0
    assert all(p.abs().sum() > 0 for p in lora_b.values())  # trained values, not PEFT's zero initialisation

    questions = [e["question"] for e in finetune.load_examples("arithmetic", split="test", limit=4, seed=0)]
    decode = RunContext(study="t", cell_key="decode", seed=0, num_cpus=1, artifact_dir=str(tmp_path / "decode"),
                        warm_reuse=False)
    inference.run({"model": str(directory), "adapter": str(trained), "n_eval": 4, "batch_size": 4,
                   "max_new_tokens": 6, "chat": False}, decode)
    records = [json.loads(line) for line in (tmp_path / "decode" / inference.PREDICTIONS_FILE).read_text().splitlines()]
    tokenizer = load_model_and_tokenizer(str(directory)).tokenizer
    batch = encode_prompts(tokenizer, questions)
    with torch.no_grad():
        output = adapted.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    rows = output[:, batch["input_ids"].shape[1]:]
    expected = [tokenizer.decode(row, skip_special_tokens=True) for row in rows]
    assert [r["question"] for r in records] == questions
    assert [r["prediction"] for r in records] == expected
