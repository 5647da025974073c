"""The cap on stored curve points (curve_cap.py) and its spec field, resources.max_curve_points."""

from __future__ import annotations

import copy

import pytest

from orchestrator.execution.curve_cap import CurveCap
from orchestrator.errors import SpecError
from orchestrator.spec import parse_spec


class FakeStore:
    """What the store would hold: (key, name) -> [(step, value)], a thin deleting every row of its steps (as the
    store's DELETE does) before the points are written, in the order the driver sends them."""

    def __init__(self):
        self.rows: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def write(self, kept, thins):
        for key, name, steps in thins:
            rows = self.rows[key, name]
            assert set(steps) <= {step for step, _ in rows}, f"a thin of a point never written: {key} {name}"
            self.rows[key, name] = [(step, value) for step, value in rows if step not in steps]
        for key, step, metrics in kept:
            for name, value in metrics.items():
                self.rows.setdefault((key, name), []).append((step, value))

    def steps(self, key, name):
        return sorted(step for step, _ in self.rows.get((key, name), []))


def report(cap: CurveCap, store: FakeStore, points, batch: int):
    for i in range(0, len(points), batch):
        store.write(*cap.keep(points[i:i + batch]))


@pytest.mark.parametrize("batch", [1, 7, 256, 10_000])
def test_ten_thousand_points_keep_at_most_the_cap_evenly_spaced_first_and_last(batch):
    cap, store = CurveCap(100), FakeStore()
    report(cap, store, [("a", step, {"loss": 1.0 / (step + 1)}) for step in range(10_000)], batch)
    store.write(cap.last("a"), [])
    steps = store.steps("a", "loss")
    assert len(steps) <= 100 and steps[0] == 0 and steps[-1] == 9_999
    gaps = {b - a for a, b in zip(steps, steps[1:-1])}
    assert len(gaps) == 1 and 10_000 / gaps.pop() > 50  # one spacing, and more than half the cap used
    assert dict(store.rows["a", "loss"])[9_999] == 1.0 / 10_000


@pytest.mark.parametrize("reports", [1, 10, 99, 100, 101, 199, 200, 201, 1_000, 4_097])
def test_never_more_than_the_cap_even_when_the_run_ends_now_and_every_point_until_it(reports):
    cap, store = CurveCap(100), FakeStore()
    for step in range(reports):
        store.write(*cap.keep([("a", step, {"loss": float(step)})]))
        ends_now = copy.deepcopy(cap).last("a")  # what the driver would write if the run ended here
        assert len(store.steps("a", "loss")) + len(ends_now) <= 100
    store.write(cap.last("a"), [])
    steps = store.steps("a", "loss")
    assert len(steps) <= 100 and len(set(steps)) == len(steps) and steps[-1] == reports - 1
    if reports <= 100:
        assert steps == list(range(reports))  # nothing thinned before the cap is reached


def test_a_second_metric_and_a_second_run_are_independent():
    cap, store = CurveCap(10), FakeStore()
    points = []
    for step in range(1_000):  # two runs report in turn; run b stops early
        points.append(("a", step, {"loss": 1.0, **({"lr": 0.1} if step % 10 == 0 else {})}))
        if step < 5:
            points.append(("b", step, {"loss": 2.0}))
    report(cap, store, points, 64)
    for key in ("a", "b"):
        store.write(cap.last(key), [])
    assert store.steps("b", "loss") == [0, 1, 2, 3, 4]
    lr, loss = store.steps("a", "lr"), store.steps("a", "loss")
    assert len(lr) <= 10 and lr[0] == 0 and lr[-1] == 990 and len({b - a for a, b in zip(lr, lr[1:-1])}) == 1
    assert len(loss) <= 10 and loss[0] == 0 and loss[-1] == 999 and len(loss) > len(lr) // 2


def test_the_last_point_is_held_once_and_forget_starts_a_new_curve():
    cap = CurveCap(10)
    kept, _ = cap.keep([("a", step, {"loss": float(step)}) for step in range(11)])  # the 11th thins: stride 2
    assert [p[1] for p in kept] == [0, 2, 4, 6, 8, 10]  # thinned inside one call: left out, never deleted
    kept, thins = cap.keep([("a", 11, {"loss": 11.0})])
    assert kept == [] and thins == []
    assert cap.last("a") == [("a", 11, {"loss": 11.0})] and cap.last("a") == []
    cap.forget("a")  # a new attempt: every point is kept again until the cap
    kept, _ = cap.keep([("a", step, {"loss": 0.0}) for step in range(3)])
    assert [p[1] for p in kept] == [0, 1, 2]
    assert cap.last("nobody") == [] and cap.forget("nobody") is None


def test_thins_name_only_points_written_by_earlier_calls():
    cap, store = CurveCap(10), FakeStore()
    for start in range(0, 200, 3):  # FakeStore fails on a thin of a point never written
        store.write(*cap.keep([("a", step, {"x": 0.0, "y": 1.0}) for step in range(start, start + 3)]))
    assert len(store.steps("a", "x")) <= 10 and store.steps("a", "x") == store.steps("a", "y")


@pytest.mark.parametrize("step_of", [lambda i: i // 2, lambda i: 0], ids=["each step twice", "always step 0"])
def test_repeated_steps_still_keep_the_cap(step_of):
    cap, store = CurveCap(10), FakeStore()
    for i in range(1_000):
        store.write(*cap.keep([("a", step_of(i), {"loss": float(i)})]))
        assert len(store.steps("a", "loss")) <= 10
    store.write(cap.last("a"), [])
    assert len(store.steps("a", "loss")) <= 10 and max(v for _, v in store.rows["a", "loss"]) == 999.0


def test_a_cap_below_two_is_refused():
    with pytest.raises(ValueError, match="max_points must be >= 2; got 1"):
        CurveCap(1)


SPEC = {"study": "s", "experiment": "experiments.synthetic:run", "factors": {"x": {"levels": [1, 2]}},
        "response": {"metric": "loss"}}


@pytest.mark.parametrize(("value", "message"), [
    (5, "resources.max_curve_points: must be >= 10; got 5"),
    ("many", "resources.max_curve_points: must be an integer; got 'many'"),
    (100.0, "resources.max_curve_points: must be an integer; got 100.0"),
])
def test_max_curve_points_names_field_constraint_and_value(value, message):
    with pytest.raises(SpecError) as info:
        parse_spec({**SPEC, "resources": {"max_curve_points": value}}, check_experiment=False)
    assert message in str(info.value).splitlines()


def test_max_curve_points_defaults_to_2000():
    assert parse_spec(SPEC, check_experiment=False).resources.max_curve_points == 2000
    assert parse_spec({**SPEC, "resources": {"max_curve_points": 10}}, check_experiment=False).resources \
        .max_curve_points == 10
