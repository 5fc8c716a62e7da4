"""TERC with MI ordering (MIPP Alg. 2) on a known-answer layer pair.

The upstream "layer" holds a teacher's hidden units: one kept single, the others copied
several times, plus dead units that feed nothing downstream. The right answer keeps the
singleton and exactly one copy of each copied unit, and removes every dead unit.
"""

from dataclasses import replace

import pytest
import torch

from infoprune.estimators.predictive import CrossFitSplit
from infoprune.estimators.terc import (
    ENGINES,
    TercConfig,
    confidence_loss_increased,
    linear_loss_increase,
    look_thresholds,
    refit_looks,
    terc_prepare,
    terc_select,
    terc_test,
)

FAST = TercConfig(confidence=0.9, hidden_size=64, fit_iterations=400, refit_iterations=120, ordering_iterations=10)
SMALL = {engine: replace(FAST, engine=engine) for engine in ENGINES}


def teacher_layer(samples=600, copies=3, dead=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, 6, generator=g)
    teacher = torch.relu(z @ torch.randn(6, 3, generator=g))
    readout = torch.randn(3, 4, generator=g)
    readout[0] *= 3  # the singleton matters downstream
    columns = [teacher[:, :1]] + [teacher[:, j : j + 1].repeat(1, copies) for j in (1, 2)]
    columns.append(torch.relu(z @ torch.randn(6, dead, generator=g)))
    return torch.cat(columns, 1), teacher @ readout


@pytest.fixture(scope="module", params=ENGINES)
def teacher_result(request):
    x, y = teacher_layer()
    return request.param, terc_select(x, y, SMALL[request.param], torch.Generator().manual_seed(0))


def test_keeps_singleton_one_copy_each_and_no_dead_unit(teacher_result):
    keep = teacher_result[1].keep
    assert keep[0], "the singleton carries unique information and must stay"
    assert keep[1:4].sum() == 1 and keep[4:7].sum() == 1, "exactly one copy of each copied unit"
    assert not keep[7:].any(), "dead units transfer no entropy"


def test_dead_units_are_tested_first(teacher_result):
    # dead units carry the least information about y, so they are tested first
    assert set(teacher_result[1].order[:3]) == {7, 8, 9}


def test_decisions_are_reproducible_under_a_seed(teacher_result):
    engine, result = teacher_result
    x, y = teacher_layer()
    again = terc_select(x, y, SMALL[engine], torch.Generator().manual_seed(0))
    assert torch.equal(again.keep, result.keep)
    assert again.confidence_worse == result.confidence_worse


def test_fast_engine_runs_fewer_iterations_for_the_same_decisions(teacher_result):
    engine, result = teacher_result
    if engine == "gaussian":  # closed form: no optimiser step (which copy stays may differ: copies are symmetric)
        assert result.iterations == 0 and set(result.stopped_at.values()) == {0}
        return
    reference = terc_select(*teacher_layer(), SMALL["reference"], torch.Generator().manual_seed(0))
    assert torch.equal(result.keep, reference.keep)
    if engine == "fast":
        assert result.iterations < 0.9 * reference.iterations
        assert min(result.stopped_at.values()) == 0 and max(result.stopped_at.values()) <= 120


def test_look_schedule_and_error_spending():
    assert refit_looks(replace(FAST, engine="reference", refit_iterations=150)) == (150,)
    fast = replace(FAST, engine="fast", refit_iterations=150, confidence=0.9)
    assert refit_looks(fast) == (40, 80, 150)
    early, last = look_thresholds(fast)
    # the early looks spend 10 % of 1 − x together, the last look the rest: ≤ 1 − x in all
    assert early == pytest.approx(1 - 0.01 / 2) and last == pytest.approx(1 - 0.09)
    assert look_thresholds(replace(fast, engine="reference")) == (0.9, 0.9)


def test_never_collapses_when_nothing_is_informative():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 5, generator=g), torch.randn(300, 2, generator=g)
    for config in SMALL.values():
        assert terc_select(x, y, config, torch.Generator().manual_seed(0)).keep.sum() >= 1


def test_constant_units_are_removed_without_test():
    x, y = teacher_layer()
    x = torch.cat([x, torch.zeros(x.shape[0], 1)], 1)
    result = terc_select(x, y, FAST, torch.Generator().manual_seed(0))
    assert result.constant == [10] and not result.keep[10] and 10 not in result.confidence_worse


def test_t_test_confidence():
    assert confidence_loss_increased(torch.tensor([0.0, 0.0, 0.0])) == 0.0
    assert confidence_loss_increased(torch.tensor([1.0, 1.0, 1.0])) == 1.0
    symmetric = confidence_loss_increased(torch.tensor([-1.0, 1.0, -2.0, 2.0]))
    assert abs(symmetric - 0.5) < 1e-9
    # mean 1, sd 1, n = 5: t = sqrt(5) = 2.236 with 4 df -> 0.9556 (Student's t, one-sided)
    assert abs(confidence_loss_increased(torch.tensor([1.0, 0.0, 2.0, 0.0, 2.0]) - 0.0) - 0.95557) < 1e-3


def noisy_layer(samples=600, informative=2, dead=12, seed=1):
    """``informative`` units that drive y, then ``dead`` units of pure noise."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.relu(torch.randn(samples, informative, generator=g))
    y = signal @ torch.randn(informative, 3, generator=g) * 3
    return torch.cat([signal, torch.randn(samples, dead, generator=g)], 1), y


def test_fast_engine_removes_dead_units_in_blocks():
    x, y = noisy_layer()
    config = replace(SMALL["fast"], confidence=0.99)
    start = terc_prepare(x, y, config, torch.Generator().manual_seed(0))
    result = terc_test(start, config)
    assert result.keep[:2].all() and not result.keep[2:].any()
    dead = [result.confidence_worse[u] for u in range(2, 14)]
    # a block shares one test: fewer distinct confidences than dead units, and fewer re-fit
    # iterations than one arm per tested unit would cost
    assert len(set(dead)) < len(dead)
    refits = result.iterations - start.iterations
    assert refits < len(result.confidence_worse) * config.repeats * config.refit_iterations


def test_fast_engine_resumes_exactly_from_any_snapshot():
    """The cached "with" arm is rebuilt on resume: same decisions and the same iteration count."""
    x, y = teacher_layer()
    config = SMALL["fast"]
    start = terc_prepare(x, y, config, torch.Generator().manual_seed(0))
    snapshots = []
    whole = terc_test(start, config, snapshot=snapshots.append, snapshot_seconds=0.0)
    assert len(snapshots) >= 3
    for progress in snapshots:
        again = terc_test(start, config, resume=progress)
        assert torch.equal(again.keep, whole.keep)
        assert again.confidence_worse == whole.confidence_worse and again.stopped_at == whole.stopped_at
        assert again.iterations == whole.iterations


def test_a_shared_with_arm_equals_a_fresh_one_and_is_charged_once():
    """What lets consecutive tests share the "with" arm: evaluating it lazily, look by look,
    gives the losses a fresh arm run straight to that look gives, and a look asked twice is
    run (and counted) once."""
    from infoprune.estimators.terc_fast import _Arm

    x, y = teacher_layer()
    config = SMALL["fast"]
    start = terc_prepare(x, y, config, torch.Generator().manual_seed(0))
    shared = _Arm(start.members, start, start.keep, config, int(start.keep.sum()))
    assert shared.losses_at(40)[1] == 40 * config.repeats
    losses, charged = shared.losses_at(80)
    fresh, fresh_charged = _Arm(start.members, start, start.keep, config, int(start.keep.sum())).losses_at(80)
    assert torch.equal(losses, fresh) and charged == 40 * config.repeats and fresh_charged == 80 * config.repeats
    assert shared.losses_at(80)[1] == 0 and shared.losses_at(40)[1] == 0


@pytest.mark.parametrize("width", [1, 3])
def test_linear_screen_equals_refitting_without_each_feature(width: int) -> None:
    """The screen's closed form is exactly the held-out loss of a ridge fit re-solved without the
    feature's columns (one column, or a group of ``width`` columns as a spatial conv filter)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 12, generator=generator)
    y = x[:, :3] + 0.5 * torch.randn(120, 3, generator=generator)
    split = CrossFitSplit.make(120, 4, generator)
    kept = torch.ones(12 // width, dtype=torch.bool)
    kept[1] = False

    def heldout_loss(units: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor) -> torch.Tensor:
        xk, yk = x[:, units.repeat_interleave(width)].double(), y.double()
        gram = xk[train].T @ xk[train] + 1e-3 * len(train) * torch.eye(xk.shape[1], dtype=torch.float64)
        error = yk[heldout] - xk[heldout] @ torch.linalg.solve(gram, xk[train].T @ yk[train])
        return error.pow(2).mean()

    expected = torch.zeros(len(kept), dtype=torch.float64)
    for train, heldout in zip(split.train, split.heldout):
        for unit in kept.nonzero().flatten():
            without = kept.clone()
            without[unit] = False
            expected[unit] += (heldout_loss(without, train, heldout) - heldout_loss(kept, train, heldout)) / split.folds
    assert torch.allclose(linear_loss_increase(x, y, split, kept, width=width), expected, atol=1e-12)
    assert expected[0] > 10 * expected[-1].abs()  # the informative feature loses more than a noise one


def test_an_early_keep_needs_two_consecutive_looks_above_the_early_threshold():
    """One look above the early threshold is not enough (the t statistic of 5 repeats swings
    between looks); two in a row keep at the second, and the last look decides otherwise."""
    from infoprune.estimators.terc_protocol import sequential_decision

    fast = replace(FAST, engine="fast", refit_iterations=150, confidence=0.9)
    early, last = look_thresholds(fast)

    def run(confidences: dict[int, float]):
        asked = []

        def confidence_at(look: int) -> float:
            asked.append(look)
            return confidences[look]

        return sequential_decision(confidence_at, fast), asked

    high, middle = (early + 1) / 2, (last + early) / 2  # above the early threshold; between the two
    assert run({40: high, 80: middle, 150: 0.5}) == ((0.5, 150, False), [40, 80, 150])
    assert run({40: high, 80: high, 150: 0.0}) == ((high, 80, True), [40, 80])
    assert run({40: middle, 80: high, 150: middle}) == ((middle, 150, True), [40, 80, 150])
    assert run({40: high, 80: 0.1, 150: 1.0}) == ((0.1, 80, False), [40, 80])  # futility from look 2


def test_every_look_runs_the_full_length_test_and_records_each_look():
    """Inside ``every_look()`` no test stops early: every look is evaluated, the last decides,
    and the confidences of each test are recorded in order; outside it, decisions are as before."""
    from infoprune.estimators.terc_protocol import every_look, sequential_decision

    fast = replace(FAST, engine="fast", refit_iterations=150, confidence=0.9)
    early, last = look_thresholds(fast)
    high = (early + 1) / 2
    confidences = {40: high, 80: high, 150: 0.0}  # an early keep at look 2 when deciding as usual
    with every_look() as looks:
        assert sequential_decision(confidences.__getitem__, fast) == (0.0, 150, False)
        assert sequential_decision({40: 0.1, 80: 0.2, 150: 1.0}.__getitem__, fast) == (1.0, 150, True)
    assert looks == [[high, high, 0.0], [0.1, 0.2, 1.0]]
    assert sequential_decision(confidences.__getitem__, fast) == (high, 80, True)


def test_each_kept_set_has_its_own_batch_stream():
    """Arms tested against one kept set draw the same mini-batches (paired, shareable); another
    kept set draws others; the stream depends only on the layer's start, so a resume redraws it."""
    from infoprune.estimators.terc_fast import _batch_stream

    start = terc_prepare(*teacher_layer(), SMALL["fast"], torch.Generator().manual_seed(0))
    draw = lambda kept: torch.randint(1000, (64,), generator=_batch_stream(start, kept))  # noqa: E731
    assert torch.equal(draw(9), draw(9))
    assert not torch.equal(draw(9), draw(8))
