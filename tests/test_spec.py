"""Malformed specs: each error names the field path, the constraint and the bad value."""

from __future__ import annotations

import copy

import pytest

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
    (spec_with("resources.gpus_per_run", -1), "resources.gpus_per_run: must be >= 0; got -1"),
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
    with pytest.raises(Exception):
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
