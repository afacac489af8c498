"""The scoring rule branch by branch, the EMA with its floor and hotkey resets, and persistence."""

import json
import math
import os

import pytest

from hivetrain.validator import state as state_io
from hivetrain.validator.scoring import (FLOOR, SCORE_ACCEPTABLE, SCORE_NO_RESPONSE,
                                         SCORE_UNACCEPTABLE, ProbeOutcome, ScoreState, Tolerances,
                                         classify, normalise, update_ema)

TOL = Tolerances()


def answer(**changes) -> ProbeOutcome:
    """An honest answer, with ``changes`` applied."""
    fields = dict(responded=True, reported_epoch=10, reference_epoch=10, reported_loss=4.0,
                  reference_loss=4.0, coords_match=True, grad_cosine=0.999)
    return ProbeOutcome(**{**fields, **changes})


def test_defaults_are_documented_values():
    assert (TOL.max_epoch_lag, TOL.loss_rel_tol, TOL.min_cosine) == (1, 0.05, 0.8)


def test_no_response_scores_floor_whatever_else_is_set():
    assert classify(ProbeOutcome(responded=False), TOL) == (SCORE_NO_RESPONSE, "no response")
    assert classify(ProbeOutcome(responded=False, reported_loss=math.nan), TOL)[0] == 0.1


def test_honest_answer_is_acceptable():
    assert classify(answer(), TOL) == (SCORE_ACCEPTABLE, "ok")
    assert classify(answer()) == (1.0, "ok")  # default tolerances


@pytest.mark.parametrize("reported", [9, 11])
def test_epoch_lag_within_tolerance_either_way(reported):
    assert classify(answer(reported_epoch=reported), TOL)[0] == SCORE_ACCEPTABLE


@pytest.mark.parametrize("reported", [8, 12, 0])
def test_epoch_lag_beyond_tolerance(reported):
    score, reason = classify(answer(reported_epoch=reported), TOL)
    assert score == SCORE_UNACCEPTABLE and "epoch" in reason


def test_zero_lag_tolerance_demands_the_same_epoch():
    assert classify(answer(reported_epoch=9), Tolerances(max_epoch_lag=0))[0] == SCORE_UNACCEPTABLE


@pytest.mark.parametrize("loss", [4.0 * 1.049, 4.0 * 0.951])
def test_loss_within_relative_tolerance(loss):
    assert classify(answer(reported_loss=loss), TOL)[0] == SCORE_ACCEPTABLE


@pytest.mark.parametrize("loss", [4.0 * 1.051, 4.0 * 0.949, 10.8, 0.0])
def test_loss_beyond_relative_tolerance(loss):
    score, reason = classify(answer(reported_loss=loss), TOL)
    assert score == SCORE_UNACCEPTABLE and "loss" in reason


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_is_unacceptable(loss):
    score, reason = classify(answer(reported_loss=loss), TOL)
    assert score == SCORE_UNACCEPTABLE and "loss is" in reason


def test_wrong_coordinates_are_unacceptable():
    score, reason = classify(answer(coords_match=False), TOL)
    assert score == SCORE_UNACCEPTABLE and "coordinates" in reason


@pytest.mark.parametrize("cos", [0.79, 0.0, -1.0, math.nan])
def test_low_or_nan_cosine_is_unacceptable(cos):
    score, reason = classify(answer(grad_cosine=cos), TOL)
    assert score == SCORE_UNACCEPTABLE and "cosine" in reason


def test_cosine_at_threshold_is_acceptable():
    assert classify(answer(grad_cosine=0.8), TOL)[0] == SCORE_ACCEPTABLE


def test_a_response_needs_every_field():
    with pytest.raises(ValueError, match="grad_cosine"):
        ProbeOutcome(responded=True, reported_epoch=1, reference_epoch=1, reported_loss=1.0,
                     reference_loss=1.0, coords_match=True)


@pytest.mark.parametrize("reference", [math.nan, math.inf, -math.inf])
def test_a_non_finite_reference_scores_nobody_and_raises_nothing(reference):
    """The validator's own copy went bad (a poisoned swarm): skip the miner, keep its EMA."""
    score, reason = classify(answer(reference_loss=reference), TOL)
    assert score is None and "reference loss" in reason
    state = update_ema(ScoreState(), {0: "a"}, {0: 1.0}, alpha=0.5)
    assert update_ema(state, {0: "a"}, {0: score}, alpha=0.5).scores == state.scores


def test_ema_starts_new_uids_at_floor_and_moves_by_alpha():
    state = update_ema(ScoreState(), {0: "a", 1: "b", 2: "c"}, {0: 1.0, 1: 0.1}, alpha=0.05)
    assert state.scores[0] == pytest.approx(0.95 * FLOOR + 0.05 * 1.0)
    assert state.scores[1] == pytest.approx(FLOOR)
    assert state.scores[2] == FLOOR  # registered but not probed: still the floor
    assert state.hotkeys == {0: "a", 1: "b", 2: "c"} and state.rounds == 1


def test_ema_converges_to_the_round_score_and_never_drops_below_floor():
    state = ScoreState()
    for _ in range(300):
        state = update_ema(state, {0: "a", 1: "b"}, {0: 1.0, 1: 0.1})
    assert state.scores[0] == pytest.approx(1.0, abs=1e-6)
    assert state.scores[1] == pytest.approx(FLOOR)
    for _ in range(300):
        state = update_ema(state, {0: "a", 1: "b"}, {0: 0.3})
    assert state.scores[0] == pytest.approx(0.3, abs=1e-6) and state.scores[1] == FLOOR


def test_hotkey_change_resets_to_floor_before_the_update():
    state = ScoreState(scores={0: 0.9, 1: 0.9}, hotkeys={0: "a", 1: "b"})
    new = update_ema(state, {0: "a", 1: "NEW"}, {0: 1.0, 1: 1.0}, alpha=0.5)
    assert new.scores[0] == pytest.approx(0.95)
    assert new.scores[1] == pytest.approx(0.5 * FLOOR + 0.5 * 1.0)
    assert new.hotkeys[1] == "NEW"
    assert state.scores == {0: 0.9, 1: 0.9}  # the input is not mutated


def test_hotkey_change_without_a_probe_still_resets():
    state = ScoreState(scores={3: 0.9}, hotkeys={3: "a"})
    assert update_ema(state, {3: "b"}, {}).scores == {3: FLOOR}


def test_deregistered_uids_are_dropped_and_unknown_round_scores_ignored():
    state = ScoreState(scores={0: 0.5, 7: 0.9}, hotkeys={0: "a", 7: "g"})
    new = update_ema(state, {0: "a"}, {0: 0.1, 99: 1.0}, alpha=1.0)
    assert new.scores == {0: 0.1} and new.hotkeys == {0: "a"}


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError):
        update_ema(ScoreState(), {0: "a"}, {0: 1.0}, alpha=alpha)


def test_normalise_sums_to_one_and_keeps_proportions():
    weights = normalise({0: 1.0, 1: 0.3, 2: 0.1})
    assert math.fsum(weights.values()) == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(1.0 / 0.3)


def test_normalise_edge_cases():
    assert normalise({}) == {}
    assert normalise({0: 0.0, 1: 0.0}) == {0: 0.5, 1: 0.5}
    assert normalise({0: 1.0, 1: math.nan, 2: -3.0}) == {0: 1.0, 1: 0.0, 2: 0.0}


def test_state_json_round_trip():
    state = ScoreState(scores={0: 0.1, 12: 0.734}, hotkeys={0: "a", 12: "l"}, rounds=5,
                       contribution={0: 0.0, 12: 41.5})
    text = state.to_json()
    assert json.loads(text)["version"] == 2
    assert ScoreState.from_json(text) == state
    version1 = '{"version": 1, "rounds": 5, "scores": {"0": 0.1}, "hotkeys": {"0": "a"}}'
    assert ScoreState.from_json(version1).contribution == {}


@pytest.mark.parametrize("text", ["[]", '{"version": 2}', '{"version": 1, "scores": {}}',
                                  '{"version": 1, "scores": {"x": 1}, "hotkeys": {}, "rounds": 0}'])
def test_state_from_json_rejects_other_documents(text):
    with pytest.raises(ValueError):
        ScoreState.from_json(text)


def test_save_atomic_and_load(tmp_path):
    path = tmp_path / "sub" / "scores.json"
    assert state_io.load(path) == ScoreState()  # first start: nothing saved yet
    first = ScoreState(scores={1: 0.5}, hotkeys={1: "a"}, rounds=1)
    state_io.save_atomic(path, first)
    second = ScoreState(scores={1: 0.6, 2: 0.1}, hotkeys={1: "a", 2: "b"}, rounds=2)
    state_io.save_atomic(path, second)
    assert state_io.load(path) == second
    assert os.listdir(path.parent) == ["scores.json"]  # no temp files left behind


def test_failed_save_keeps_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "scores.json"
    state_io.save_atomic(path, ScoreState(scores={1: 0.5}, hotkeys={1: "a"}, rounds=1))

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(state_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        state_io.save_atomic(path, ScoreState(scores={1: 0.9}, hotkeys={1: "a"}, rounds=2))
    assert state_io.load(path).rounds == 1
    assert os.listdir(tmp_path) == ["scores.json"]


def test_load_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text("{not json")
    with pytest.raises(state_io.StateError, match="scores.json"):
        state_io.load(path)
