"""LoRA presets on real (tiny) Qwen3.5 models: which modules get wrapped, training, seeding, warm reuse, errors."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM

from experiments.qwen35.lora import PRESETS, apply_lora, count_wrapped, remove_lora, target_modules
from experiments.qwen35.tiny import VOCAB, build_tiny_model

RANK = 4
LORA = {"rank": RANK, "alpha": 8.0, "dropout": 0.0, "seed": 0}
SPECS = ["attention", "deltanet", "mlp", "all", "attention+deltanet", "attention+deltanet+mlp"]


def _expected_names(layer_types: list[str], spec: str, prefix: str = "model.layers") -> set[str]:
    """Written out from the Qwen3.5 layer pattern, independently of the module under test."""
    kinds = {"all": {"attention", "deltanet", "mlp"}}.get(spec, set(spec.split("+")))
    names = set()
    for index, layer_type in enumerate(layer_types):
        layer = f"{prefix}.{index}"
        if "attention" in kinds and layer_type == "full_attention":
            names |= {f"{layer}.self_attn.{leaf}" for leaf in ("q_proj", "k_proj", "v_proj", "o_proj")}
        if "deltanet" in kinds and layer_type == "linear_attention":
            leaves = ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj")
            names |= {f"{layer}.linear_attn.{leaf}" for leaf in leaves}
        if "mlp" in kinds:
            names |= {f"{layer}.mlp.{leaf}" for leaf in ("gate_proj", "up_proj", "down_proj")}
    return names


def _wrapped(peft_model) -> dict[str, LoraLayer]:
    modules = peft_model.get_base_model().named_modules()
    return {name: module for name, module in modules if isinstance(module, LoraLayer)}


def _fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """A hash of each parameter's bytes: equal fingerprints mean bit-identical weights."""
    return {
        name: hashlib.sha256(param.detach().cpu().contiguous().flatten().view(torch.uint8).numpy()).hexdigest()
        for name, param in model.named_parameters()
    }


def _adapters(peft_model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in peft_model.named_parameters() if "lora_" in name}


def _random_batch(batch: int = 4, length: int = 12) -> dict[str, torch.Tensor]:
    ids = torch.randint(len(VOCAB), (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


@pytest.mark.parametrize("size", ["tiny", "tiny-8"])
@pytest.mark.parametrize("spec", SPECS)
def test_presets_wrap_exactly_their_modules(size, spec):
    model = build_tiny_model(size)
    layer_types = model.config.layer_types
    n_linear, n_full = layer_types.count("linear_attention"), layer_types.count("full_attention")
    kinds = {"all": ["attention", "deltanet", "mlp"]}.get(spec, spec.split("+"))
    per_kind = {"attention": 4 * n_full, "deltanet": 5 * n_linear, "mlp": 3 * len(layer_types)}

    peft_model = apply_lora(model, targets=spec, **LORA)

    assert count_wrapped(peft_model) == {kind: per_kind[kind] if kind in kinds else 0 for kind in per_kind}
    wrapped = _wrapped(peft_model)
    assert set(wrapped) == _expected_names(layer_types, spec)  # exactly these, nothing else
    trainable = {name: param for name, param in peft_model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert sum(param.numel() for param in trainable.values()) == sum(
        RANK * (module.in_features + module.out_features) for module in wrapped.values()
    )


def test_combined_presets_ignore_order_spaces_and_repeats():
    model = build_tiny_model("tiny")
    assert target_modules(model, " mlp + deltanet+attention ") == target_modules(model, "all")
    assert target_modules(model, "all+mlp") == target_modules(model, "all")


def test_training_moves_every_adapter_and_no_base_weight_then_remove_lora_restores_the_base():
    model = build_tiny_model("tiny")
    base = _fingerprint(model)
    peft_model = apply_lora(model, targets="all", **{**LORA, "dropout": 0.1})
    initial = _adapters(peft_model)
    optimizer = torch.optim.AdamW([param for param in peft_model.parameters() if param.requires_grad], lr=1e-2)
    batch = _random_batch()

    peft_model.train()
    # lora_B starts at zero, so lora_A gets no gradient on the first step: train for more than one.
    for _ in range(3):
        loss = peft_model(**batch).loss
        assert math.isfinite(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    trained = _adapters(peft_model)
    assert any(".lora_A." in name for name in trained) and any(".lora_B." in name for name in trained)
    unchanged = [name for name in initial if (trained[name] == initial[name]).any()]
    assert not unchanged, f"adapter entries that training did not move: {unchanged}"

    restored = remove_lora(peft_model)
    assert restored is model  # warm reuse keeps the loaded model object
    assert _fingerprint(restored) == base
    assert not any(isinstance(module, LoraLayer) for module in restored.modules())
    assert not any("lora_" in name for name, _ in restored.named_parameters())
    assert all(param.requires_grad for param in restored.parameters())  # as before apply_lora


def test_same_seed_same_adapters_also_on_a_warm_reused_model():
    def adapters_on(model, seed):
        peft_model = apply_lora(model, targets="all", **{**LORA, "seed": seed})
        return _adapters(peft_model), remove_lora(peft_model)

    cold, _ = adapters_on(build_tiny_model("tiny"), seed=7)
    torch.rand(1000)  # whatever ran before must not matter
    warm_model = remove_lora(apply_lora(build_tiny_model("tiny"), targets="mlp", **LORA))
    warm, warm_model = adapters_on(warm_model, seed=7)
    other, _ = adapters_on(warm_model, seed=8)

    assert cold.keys() == warm.keys() == other.keys()
    assert all(torch.equal(cold[name], warm[name]) for name in cold)
    assert any(not torch.equal(cold[name], other[name]) for name in cold if ".lora_A." in name)


def test_nothing_in_the_vision_tower_is_wrapped_even_under_matching_names():
    model = _tiny_image_text_model()
    visual = model.model.visual
    # The real tower shares the parent name `mlp` with the decoder layers (its leaves are qkv, proj, linear_fc1/2);
    # plant every preset's module path in a vision block too, names that a leaf-name target list would match.
    assert any(name.endswith(".mlp") for name, _ in visual.named_modules())
    block = visual.blocks[0]
    for path in PRESETS["all"]:
        parent, leaf = path.split(".")
        if not hasattr(block, parent):
            block.add_module(parent, torch.nn.Module())
        getattr(block, parent).add_module(leaf, torch.nn.Linear(4, 4))
    decoys = {f"model.visual.blocks.0.{path}" for path in PRESETS["all"]}
    assert decoys <= {name for name, _ in model.named_modules()}

    layer_types = model.config.text_config.layer_types
    assert set(target_modules(model, "all")) == _expected_names(layer_types, "all", "model.language_model.layers")

    peft_model = apply_lora(model, targets="all", **LORA)
    wrapped = _wrapped(peft_model)
    assert not any("visual" in name for name in wrapped)
    assert count_wrapped(peft_model) == {"attention": 4, "deltanet": 15, "mlp": 12}


def _tiny_image_text_model() -> Qwen3_5ForConditionalGeneration:
    text_config = build_tiny_model("tiny").config.to_dict()
    vision_config = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 4,
        "out_hidden_size": text_config["hidden_size"], "num_position_embeddings": 16,
    }
    return Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text_config, vision_config=vision_config))


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("attention+ffn", ["lora_targets", "'ffn'", "attention, deltanet, mlp, all"]),
        ("", ["lora_targets", "''"]),
        ("Attention", ["lora_targets", "'Attention'"]),
        (["attention"], ["lora_targets", "['attention']"]),
    ],
)
def test_unknown_presets_are_rejected(spec, fragments):
    model = build_tiny_model("tiny")
    with pytest.raises(ValueError) as error:
        apply_lora(model, targets=spec, **LORA)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not any(isinstance(module, LoraLayer) for module in model.modules())


def test_a_preset_matching_nothing_names_the_preset_and_the_model_class():
    # Qwen3 has full attention only: no Gated DeltaNet layers to adapt.
    qwen3 = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        )
    )
    assert len(target_modules(qwen3, "attention")) == 8  # same module names as Qwen3.5's full attention
    with pytest.raises(ValueError, match=r"'deltanet'.*Qwen3ForCausalLM"):
        target_modules(qwen3, "deltanet")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rank": 0}, "'lora_rank' must be an integer >= 1, got 0"),
        ({"rank": 2.5}, "'lora_rank' must be an integer >= 1, got 2.5"),
        ({"rank": True}, "'lora_rank' must be an integer >= 1, got True"),
        ({"alpha": 0.0}, "'lora_alpha' must be a finite number > 0, got 0.0"),
        ({"alpha": -1.0}, "'lora_alpha' must be a finite number > 0, got -1.0"),
        ({"alpha": math.nan}, "'lora_alpha' must be a finite number > 0, got nan"),
        ({"alpha": math.inf}, "'lora_alpha' must be a finite number > 0, got inf"),
        ({"dropout": -0.1}, "'lora_dropout' must be in [0, 1), got -0.1"),
        ({"dropout": 1.0}, "'lora_dropout' must be in [0, 1), got 1.0"),
    ],
)
def test_bad_params_are_rejected(override, message):
    model = build_tiny_model("tiny")
    with pytest.raises(ValueError) as error:
        apply_lora(model, targets="all", **{**LORA, **override})
    assert message in str(error.value)
    assert not any(isinstance(module, LoraLayer) for module in model.modules())
