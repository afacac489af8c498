"""The rotating sample of update checks (hivetrain/validator/rotation.py): pure, no network."""

import pytest

from hivetrain.config import ValidatorConfig
from hivetrain.validator import rotation

HOTKEY = "5Validator"


@pytest.mark.parametrize("miners,capacity", [(7, 7), (7, 3), (10, 1), (256, 13), (5, 100)])
def test_every_miner_is_checked_once_per_cycle_within_the_budget(miners, capacity):
    uids = list(range(miners))
    cycle = rotation.plan(uids, 0, HOTKEY, capacity).cycle
    assert cycle == -(-miners // min(capacity, miners))
    for start in (0, 5, 1234):  # any window of `cycle` consecutive epochs covers everyone once
        seen = []
        for epoch in range(start, start + cycle):
            chosen = rotation.plan(uids, epoch, HOTKEY, capacity)
            assert len(chosen.selected) <= capacity
            seen += chosen.selected
        assert sorted(seen) == uids


def test_the_plan_is_deterministic_and_validators_differ():
    uids = list(range(40))
    first = rotation.plan(uids, 17, HOTKEY, 8)
    assert first == rotation.plan(list(reversed(uids)), 17, HOTKEY, 8)
    other = rotation.plan(uids, 17, "5Another", 8)
    assert first.cycle == other.cycle and first.selected != other.selected


def test_no_miners_and_everyone_fits():
    assert rotation.plan([], 3, HOTKEY, 4).selected == []
    everyone = rotation.plan([4, 9, 2], 3, HOTKEY, 4)
    assert sorted(everyone.selected) == [2, 4, 9] and everyone.cycle == 1


def test_budget_sizes_checks_from_measured_cost():
    budget = rotation.CheckBudget(10.0)
    assert budget.capacity(100) == rotation.FIRST_CHECK_MINERS  # nothing measured yet
    budget.record(miners=8, seconds=16.0)  # 2 s per miner
    assert budget.capacity(100) == 5 and budget.capacity(3) == 3
    budget.record(miners=5, seconds=50.0)  # 10 s per miner now: EMA 0.7 * 2 + 0.3 * 10 = 4.4
    assert budget.per_miner == pytest.approx(4.4)
    assert budget.capacity(100) == 2
    budget.record(miners=0, seconds=0.0)  # an empty check teaches nothing
    assert budget.per_miner == pytest.approx(4.4)
    assert rotation.CheckBudget(10.0).capacity(0) == 0
    slow = rotation.CheckBudget(1.0)
    slow.record(miners=1, seconds=30.0)
    assert slow.capacity(100) == 1  # always at least one miner


def test_zero_budget_checks_everyone():
    assert rotation.CheckBudget(0.0).capacity(500) == 500


def test_unchecked_verdicts_stand_for_two_rotations():
    verdicts = {1: (1.0, "ok", {"checked_epoch": 10}), 2: (0.3, "no", {"checked_epoch": 13}),
                3: (1.0, "ok", {"checked_epoch": 14})}
    kept = rotation.keep_verdicts(verdicts, checked_epoch=16, cycle=3)  # stand 6 epochs
    assert set(kept) == {1, 2, 3}
    assert set(rotation.keep_verdicts(verdicts, checked_epoch=17, cycle=3)) == {2, 3}
    assert set(rotation.keep_verdicts(verdicts, checked_epoch=16, cycle=1)) == {3}


def test_the_budget_flag_has_one_default():
    assert ValidatorConfig().update_budget == 60.0
