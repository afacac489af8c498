"""Finding the swarm's run without its training flags: the pure parts (hivetrain.swarm_run).

The process tests (tests/test_swarm.py, tests/test_status.py) run status and export against
real miners; here the majority rule, the served recipe's checks and the flags typed.
"""

import pytest

from hivetrain.cli import build_parser
from hivetrain.config import Config, ConfigError
from hivetrain.swarm_run import (RECIPE_FLAGS, given_recipe_flags, recipe_flags, served_recipes,
                                 swarm_run_id, with_recipe_flags)


def test_the_run_most_neurons_commit_is_the_swarms():
    assert swarm_run_id({}) == (None, None)
    assert swarm_run_id({"a": "r1", "b": "r1"}) == ("r1", None)
    run_id, note = swarm_run_id({"a": "r1", "b": "r2", "c": "r1"})
    assert run_id == "r1" and "2 different run_ids" in note and "2 of 3" in note


def test_a_served_recipe_round_trips_and_bad_ones_are_refused():
    cfg = Config()
    cfg.model.preset, cfg.train.inner_steps, cfg.train.lr = "gpt2", 20, 3e-4
    flags = recipe_flags(cfg)
    assert set(flags) == set(RECIPE_FLAGS)
    rebuilt = with_recipe_flags(Config(), flags)
    assert recipe_flags(rebuilt) == flags and rebuilt.run_dir == Config().run_dir
    with pytest.raises(ConfigError, match="lacks train.lr"):
        with_recipe_flags(Config(), {k: v for k, v in flags.items() if k != "train.lr"})
    with pytest.raises(ConfigError, match="train.inner_steps='20', not a int"):
        with_recipe_flags(Config(), {**flags, "train.inner_steps": "20"})
    with pytest.raises(ConfigError, match="--train.inner_steps must be positive"):
        with_recipe_flags(Config(), {**flags, "train.inner_steps": 0})
    assert with_recipe_flags(Config(), {**flags, "train.lr": 1}).train.lr == 1  # JSON's 1.0


def test_served_recipes_of_the_run_most_served_first():
    one, other = recipe_flags(Config()), {**recipe_flags(Config()), "train.inner_steps": 7}
    statuses = [None, {"run_id": "r", "recipe": other}, {"run_id": "r", "recipe": one},
                {"run_id": "r", "recipe": one}, {"run_id": "x", "recipe": other},
                {"run_id": "r", "recipe": "junk"}, {"run_id": "r"}]
    assert served_recipes(statuses, "r") == [one, other]


def test_only_typed_recipe_flags_count_as_given():
    args = build_parser().parse_args(["status", "--netuid", "3", "--train.inner_steps", "20",
                                      "--train.device", "cpu"])
    assert given_recipe_flags(args) == ["train.inner_steps"]


def test_no_served_recipe_that_rebuilds_the_run_is_one_clear_error(monkeypatch):
    from hivetrain import swarm_run

    monkeypatch.setattr(swarm_run, "endpoint_statuses", lambda axons: [
        {"run_id": "hivetrain-tiny-0000000000000000", "recipe": recipe_flags(Config())}])
    with pytest.raises(ConfigError, match=r"none of the 1 endpoints of that run served flags that "
                                          r"rebuild it \(the last one makes run_id hivetrain-tiny-"):
        swarm_run.swarm_recipe(Config(), [], "hivetrain-tiny-0000000000000000", ["1.2.3.4:1"],
                               warn=print)
