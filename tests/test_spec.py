"""Malformed specs: each error names the field path, the constraint and the bad value."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from orchestrator.errors import SpecError
from orchestrator.spec import load_spec, parse_spec

GOOD = {
    "study": "s1",
    "experiment": "experiments.synthetic:run",
    "fixed": {"max_steps": 10},
    "factors": {
        "learning_rate": {"levels": [1e-4, 1e-3], "scale": "log"},
        "batch_size": {"levels": [8, 16, 32]},
        "optimizer": {"levels": ["adamw", "sgd"]},
    },
    "response": {"metric": "eval_loss", "goal": "minimize"},
}


def spec_with(path: str, value, *, delete: bool = False) -> dict:
    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    if delete:
        del node[last]
    else:
        node[last] = value
    return spec


MALFORMED = [
    (spec_with("study", None, delete=True), "study: is required"),
    (spec_with("experiment", None, delete=True), "experiment: is required"),
    (spec_with("study", "has space"), "study: must be 1-100 letters, digits, '_', '.', '-', starting with a letter or digit; got 'has space'"),
    (spec_with("colour", "red"), "colour: unknown key; valid keys here: artifacts, description, experiment, factors, fixed, replicates, resources, response, seeds, strategy, study; got 'red'"),
    (spec_with("factors.batch_size.lavels", [1, 2]), "factors.batch_size.lavels: unknown key; valid keys here: levels, scale, type; got [1, 2]"),
    (spec_with("factors.learning_rate.levels", [1e-4, -0.001]), "factors.learning_rate.levels[1]: must be > 0 for scale log; got -0.001"),
    (spec_with("factors.learning_rate.levels", [1e-4, 0]), "factors.learning_rate.levels[1]: must be > 0 for scale log; got 0"),
    (spec_with("factors.batch_size.levels", []), "factors.batch_size.levels: must have at least 2 levels (a single value belongs under 'fixed'); got []"),
    (spec_with("factors.batch_size.levels", [8, 16, 8]), "factors.batch_size.levels[2]: must be unique within the factor; got 8"),
    (spec_with("factors.batch_size.levels", [8, 8.0]), "factors.batch_size.levels[1]: must be unique within the factor; got 8.0"),
    (spec_with("factors.batch_size.levels", 16), "factors.batch_size.levels: must be a list; got 16"),
    (spec_with("factors.batch_size.type", "numeric") | {"factors": {**GOOD["factors"], "batch_size": {"levels": [8, "big"], "type": "numeric"}}},
     "factors.batch_size.levels[1]: must be a number for type numeric; got 'big'"),
    (spec_with("factors.optimizer.scale", "log"), "factors.optimizer.levels[0]: must be > 0 for scale log; got 'adamw'"),
    (spec_with("factors.optimizer.scale", "exp"), "factors.optimizer.scale: must be one of 'linear' or 'log'; got 'exp'"),
    (spec_with("factors", {}), "factors: must name at least one factor; got {}"),
    (spec_with("fixed.max_steps", None, delete=True) | {"fixed": {"batch_size": 4}}, "factors.batch_size: is also under 'fixed'; a param is either fixed or a factor"),
    (spec_with("fixed.seed", 3), "fixed.seed: is set by the orchestrator; use the top-level 'seeds' list"),
    (spec_with("response.goal", "min"), "response.goal: must be one of 'minimize' or 'maximize'; got 'min'"),
    (spec_with("response.metric", None, delete=True), "response.metric: is required"),
    (spec_with("response.metric", 3), "response.metric: must be a string; got 3"),
    (spec_with("strategy.mode", "bayes"), "strategy.mode: must be one of 'auto', 'grid', 'waves' or 'greedy'; got 'bayes'"),
    (spec_with("strategy.runs_per_wave", 0), "strategy.runs_per_wave: must be > 0; got 0"),
    (spec_with("strategy.max_waves", "two"), "strategy.max_waves: must be an integer; got 'two'"),
    (spec_with("resources.gpus_per_run", -1), "resources.gpus_per_run: must be a number >= 0 or 'auto'; got -1"),
    (spec_with("resources.cpus_per_run", 0), "resources.cpus_per_run: must be > 0; got 0"),
    (spec_with("seeds", [0, 1, 0]), "seeds[2]: must be unique; got 0"),
    (spec_with("seeds", [0, 1]) | {"replicates": 2}, "replicates: give either 'seeds' or 'replicates', not both; got 2"),
    (spec_with("experiment", "experiments.synthetic.run"), "experiment: must be 'module:function', e.g. 'experiments.qwen35.finetune:run'; got 'experiments.synthetic.run'"),
    (spec_with("experiment", "no_such_module:run"), "experiment: module 'no_such_module' cannot be imported (ModuleNotFoundError: No module named 'no_such_module'); got 'no_such_module:run'"),
    (spec_with("experiment", "experiments.synthetic:nope"), "experiment: module 'experiments.synthetic' has no function 'nope'; got 'experiments.synthetic:nope'"),
]


@pytest.mark.parametrize(("spec", "message"), MALFORMED, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(MALFORMED)])
def test_malformed_spec_names_field_constraint_and_value(spec, message):
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert message in str(info.value).splitlines()


def test_all_problems_reported_at_once():
    spec = spec_with("factors.learning_rate.levels", [-1, -2])
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert [p[0] for p in info.value.problems] == ["factors.learning_rate.levels[0]", "factors.learning_rate.levels[1]"]


def test_good_spec_is_frozen_and_typed():
    spec = parse_spec(GOOD)
    assert spec.factors["learning_rate"].kind == "numeric"
    assert spec.factors["optimizer"].kind == "categorical"
    assert spec.run_seeds == (0,)
    assert spec.strategy.mode == "auto"
    with pytest.raises(ValidationError, match="frozen"):
        spec.study = "other"  # type: ignore[misc]


def test_yaml_reads_exponent_floats_without_a_dot(tmp_path):
    # PyYAML alone reads 1e-4 as the string '1e-4'; a learning rate must come out as a float.
    path = tmp_path / "s.yaml"
    path.write_text("study: s\nexperiment: experiments.synthetic:run\nfactors:\n  lr: {levels: [1e-4, 3E-3], scale: log}\n"
                    "response: {metric: loss}\nreplicates: 2\n")
    spec = load_spec(path)
    assert spec.factors["lr"].levels == (1e-4, 3e-3)
    assert spec.run_seeds == (0, 1)


@pytest.mark.parametrize(("text", "message"), [
    ("study: [unclosed", "spec: is not valid YAML"),
    ("- a\n- b\n", "spec: must be a mapping of top-level keys"),
])
def test_unreadable_files(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        load_spec(path)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="spec: file not found"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("path", "value", "message"), [
    ("resources.gpus_per_run", "abc", "resources.gpus_per_run: must be a number >= 0 or 'auto'; got 'abc'"),
    ("resources.gpus_per_run", float("inf"), "resources.gpus_per_run: must be a number >= 0 or 'auto'; got inf"),
    ("strategy.wave_deadline", [30], ("strategy.wave_deadline: must be seconds (> 0) or a multiple of the median run "
                                     "time like '3x' (> 1); got [30]")),
])
def test_a_value_no_member_of_a_union_takes_is_one_problem(path, value, message):
    # pydantic reports one error per union member (....float, ....literal['auto']); the researcher needs one line.
    with pytest.raises(SpecError) as info:
        parse_spec(spec_with(path, value))
    assert str(info.value) == message


def test_union_errors_are_grouped_per_field_and_keep_their_order():
    spec = spec_with("resources.gpus_per_run", "abc")
    spec["resources"]["cpus_per_run"] = 0
    spec["strategy"] = {"wave_deadline": {"s": 3}, "runs_per_wave": 0}
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert [p[0] for p in info.value.problems] == ["strategy.runs_per_wave", "strategy.wave_deadline",
                                                   "resources.gpus_per_run", "resources.cpus_per_run"]


def auto(factors: dict | None = None, fixed: dict | None = None, **resources) -> dict:
    spec = copy.deepcopy(GOOD)
    spec["resources"] = {"gpus_per_run": "auto", **resources}
    spec["factors"].update(factors or {})
    spec["fixed"].update(fixed or {})
    return spec


SIZES = ["Qwen/Qwen3.5-0.8B", "Qwen/Qwen3.5-9B"]
AUTO_MALFORMED = [
    (auto(), ("resources.gpus_per_run: auto needs a 'model' param whose name gives its size (like Qwen/Qwen3.5-0.8B) "
              "or resources.memory_gb_per_run; got 'auto'")),
    (auto({"model": {"levels": [*SIZES, "tiny"]}}),
     ("factors.model.levels[2]: gives no parameter count in its name (like '0.8B' or '9B') for "
      "resources.gpus_per_run: auto; rename it or set resources.memory_gb_per_run; got 'tiny'")),
    (auto(fixed={"model": "tiny"}),
     ("fixed.model: gives no parameter count in its name (like '0.8B' or '9B') for resources.gpus_per_run: auto; "
      "rename it or set resources.memory_gb_per_run; got 'tiny'")),
    (auto(fixed={"model": 9}),
     ("fixed.model: gives no parameter count in its name (like '0.8B' or '9B') for resources.gpus_per_run: auto; "
      "rename it or set resources.memory_gb_per_run; got 9")),
    (auto({"model": {"levels": SIZES}}, memory_method="full"),
     ("factors.model.levels[1]: a full run needs ~173.8 GB, more than a 80 GB GPU holds (90% usable; "
      "resources.gpu_memory_gb); shard it or use a larger GPU; got 'Qwen/Qwen3.5-9B'")),
    (auto(fixed={"model": "Qwen/Qwen3.5-4B", "method": "full"}),
     ("fixed.model: a full run needs ~77.8 GB, more than a 80 GB GPU holds (90% usable; resources.gpu_memory_gb); "
      "shard it or use a larger GPU; got 'Qwen/Qwen3.5-4B'")),
    (auto(fixed={"model": "Qwen/Qwen3.5-9B"}, gpu_memory_gb=24),
     ("fixed.model: a lora run needs ~22.6 GB, more than a 24 GB GPU holds (90% usable; resources.gpu_memory_gb); "
      "shard it or use a larger GPU; got 'Qwen/Qwen3.5-9B'")),
    (auto({"method": {"levels": ["lora", "qlora"]}}, fixed={"model": SIZES[0]}),
     ("factors.method.levels[1]: must be one of 'lora', 'full' or 'inference' for resources.gpus_per_run: auto; "
      "got 'qlora'")),
    (auto(fixed={"model": SIZES[0], "method": "dpo"}),
     "fixed.method: must be one of 'lora', 'full' or 'inference' for resources.gpus_per_run: auto; got 'dpo'"),
    (auto(memory_gb_per_run=100),
     ("resources.memory_gb_per_run: a run needs ~100.0 GB, more than a 80 GB GPU holds (90% usable; "
      "resources.gpu_memory_gb); shard it or use a larger GPU; got 100.0")),
    (auto(fixed={"model": SIZES[0]}, memory_method="qlora"),
     "resources.memory_method: must be one of 'lora', 'full' or 'inference'; got 'qlora'"),
]


@pytest.mark.parametrize(("spec", "message"), AUTO_MALFORMED,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(AUTO_MALFORMED)])
def test_auto_refuses_runs_it_cannot_size(spec, message):
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert str(info.value) == message


@pytest.mark.parametrize("spec", [
    auto({"model": {"levels": SIZES}}),
    auto({"model": {"levels": SIZES}, "method": {"levels": ["lora", "inference"]}}),
    auto(fixed={"model": "Qwen/Qwen3.5-4B", "method": "full"}, gpu_memory_gb=141),
    auto({"model": {"levels": ["tiny", "local/checkpoint"]}}, memory_gb_per_run=12),  # the override wins
    spec_with("fixed.method", "dpo"),  # without auto, 'method' is the experiment's own business
])
def test_auto_accepts_runs_it_can_size(spec):
    assert parse_spec(spec).study == "s1"
