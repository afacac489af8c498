"""The rotating sample of update checks (hivetrain/validator/rotation.py): pure, no network."""

import pytest

from hivetrain.config import ValidatorConfig
from hivetrain.data.tokens import derive_seed
from hivetrain.validator import rotation

HOTKEY = "5Validator"


@pytest.mark.parametrize("miners,capacity", [(7, 7), (7, 3), (10, 1), (256, 13), (5, 100)])
def test_the_groups_cover_every_miner_once_within_the_budget(miners, capacity):
    uids = list(range(miners))
    cycle = rotation.plan(uids, 0, HOTKEY, capacity).cycle
    assert cycle == -(-miners // min(capacity, miners))
    seen = []
    for draw in range(cycle):  # the draw picks one of `cycle` disjoint groups
        chosen = rotation.plan(uids, draw, HOTKEY, capacity)
        assert len(chosen.selected) <= capacity and chosen.phase == draw
        seen += chosen.selected
    assert sorted(seen) == uids


def test_the_plan_is_deterministic_and_validators_differ():
    uids = list(range(40))
    first = rotation.plan(uids, 17, HOTKEY, 8)
    assert first == rotation.plan(list(reversed(uids)), 17, HOTKEY, 8)
    other = rotation.plan(uids, 17, "5Another", 8)
    assert first.cycle == other.cycle and first.selected != other.selected


@pytest.mark.parametrize("cycle", [2, 3, 5])
def test_a_miner_that_trains_only_the_epochs_it_expects_to_be_checked_is_caught(cycle):
    """The dodger of docs/validation.md trains only the epochs ``e`` in which ``e mod cycle``
    would have picked its group. With the group drawn from each checking round's block hash it
    is checked in an epoch it did not train in about ``(cycle - 1) / cycle`` of its checks."""
    uids = list(range(cycle))  # capacity 1: one miner per group
    dodger = rotation.order(uids, HOTKEY)[0]  # group 0: trains the epochs e = 0 mod cycle
    checks = untrained = 0
    for epoch in range(3000):
        block_hash = f"0x{derive_seed('block', epoch):032x}"
        chosen = rotation.plan(uids, derive_seed(block_hash, HOTKEY, "rotation", epoch), HOTKEY, 1)
        if dodger in chosen.selected:
            checks += 1
            untrained += epoch % cycle != 0
    assert checks == pytest.approx(3000 / cycle, rel=0.15)
    assert untrained / checks == pytest.approx((cycle - 1) / cycle, abs=0.05)


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
