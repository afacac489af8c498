"""Which run a swarm trains, for the tools that are not part of it (``status``, ``export``).

The run_id is a fingerprint of the training flags (model, data, optimizer recipe), so a tool
that had to derive it from its own flags needed the miners' exact ones: without
``--train.inner_steps 20`` status printed "0 peers reporting" with no warning (issue 14). Every
neuron now commits the run_id it trains with its DHT addresses on chain, and every miner serves
the flags that rebuild its recipe in its public ``/v1/status``. A tool takes the run_id most
registered neurons committed, and, when it must build the model (export), the recipe flags the
miners of that run serve, checked by rebuilding the recipe: flags whose run_id differs from the
committed one are rejected, so a lying miner cannot make a tool export another model.
"""

from __future__ import annotations

import argparse
import copy
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from hivetrain.config import Config, ConfigError, validate

# The flags that decide the model, the data and the averaging recipe: what the run_id
# fingerprints, plus what an observer needs to talk to the swarm (compression, mode).
RECIPE_FLAGS = (
    "neuron.seed", "model.preset", "model.trainable", "model.pretrained",
    "data.dataset", "data.files", "data.text_column", "data.image_column",
    "data.caption_column", "data.tokenizer", "data.seq_len", "data.heldout_fraction",
    "train.mode", "train.target_batch_size", "train.inner_steps", "train.outer_lr",
    "train.outer_momentum", "train.overlap", "train.lr", "train.weight_decay",
    "train.warmup_epochs", "train.optimizer", "train.grad_compression", "train.state_compression",
)


def recipe_flags(cfg: Config) -> dict:
    """``flag -> value`` of this neuron's recipe, as its miner API serves them."""
    return {flag: getattr(getattr(cfg, flag.split(".")[0]), flag.split(".")[1])
            for flag in RECIPE_FLAGS}


def given_recipe_flags(args: argparse.Namespace) -> list[str]:
    """The recipe flags the operator typed (the parser leaves the others out of ``args``)."""
    return [flag for flag in RECIPE_FLAGS if flag in vars(args)]


def with_recipe_flags(cfg: Config, flags: dict) -> Config:
    """A copy of ``cfg`` with a miner's recipe ``flags``; ConfigError for anything malformed."""
    out = copy.deepcopy(cfg)
    for flag in RECIPE_FLAGS:
        if flag not in flags:
            raise ConfigError(f"the recipe served lacks {flag}")
        section, name = flag.split(".")
        default = getattr(getattr(Config(), section), name)
        value = flags[flag]
        kind = str if default is None else type(default)  # the optional recipe flags are strings
        if value is not None and type(value) is not kind \
                and not (kind is float and type(value) is int):
            raise ConfigError(f"the recipe served has {flag}={value!r}, not a {kind.__name__}")
        setattr(getattr(out, section), name, value)
    validate(out)
    return out


def swarm_run_id(committed: dict[str, str]) -> tuple[str | None, str | None]:
    """``(run_id, note)``: the run most registered neurons committed (``hotkey -> run_id``) and,
    when they disagree, a line that says so (None otherwise)."""
    counts = Counter(committed.values())
    if not counts:
        return None, None
    run_id, votes = counts.most_common(1)[0]
    note = None
    if len(counts) > 1:
        note = (f"the subnet's neurons commit {len(counts)} different run_ids; taking {run_id}, "
                f"committed by {votes} of {len(committed)}")
    return run_id, note


def endpoint_statuses(axons: list[str], timeout: float = 3.0) -> list[dict | None]:
    """``GET /v1/status`` of every endpoint at once (None where none answers), so a subnet of
    dead endpoints costs one timeout, not one per endpoint."""
    import httpx

    def ask(axon: str) -> dict | None:
        try:
            response = httpx.get(f"http://{axon}/v1/status", timeout=timeout, trust_env=False)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    if not axons:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(axons))) as pool:
        return list(pool.map(lambda axon: ask(axon) if axon else None, axons))


def served_recipes(statuses: list[dict | None], run_id: str) -> list[dict]:
    """The recipe flags served by endpoints of ``run_id``, the most often served first."""
    served = [s["recipe"] for s in statuses
              if s and s.get("run_id") == run_id and isinstance(s.get("recipe"), dict)]
    counts = Counter(repr(sorted(r.items(), key=str)) for r in served)
    unique = {repr(sorted(r.items(), key=str)): r for r in served}
    return [unique[key] for key, _ in counts.most_common()]


def swarm_recipe(cfg: Config, given: list[str], run_id: str | None, axons: list[str],
                 warn) -> tuple[Config, object]:
    """``(cfg, recipe)`` that rebuild the swarm's model: from the flags given when they make
    ``run_id`` (or when no run is committed), else from the recipe flags its miners serve.

    :param axons: the endpoints of the neurons that committed ``run_id``.
    :param warn: called with one line when the flags given are not the swarm's.
    """
    from hivetrain.recipe import build_recipe  # torch and the data: only paid when used

    if run_id is None or given:
        recipe = build_recipe(cfg)
        if run_id is None or recipe.run_id == run_id:
            return cfg, recipe
        warn(f"the flags given ({' '.join('--' + f for f in given)}) make run_id "
             f"{recipe.run_id}, but the swarm trains {run_id}; using the flags its miners serve")
    problem = "none served a recipe"
    for flags in served_recipes(endpoint_statuses(axons), run_id):
        try:
            candidate = with_recipe_flags(cfg, flags)
            recipe = build_recipe(candidate)
        except (ConfigError, OSError, ValueError, KeyError) as error:  # e.g. files only it has
            problem = f"the last one failed: {str(error).splitlines()[0] if str(error) else error!r}"
            continue
        if recipe.run_id == run_id:  # what a miner serves is only taken once it rebuilds the run
            return candidate, recipe
        problem = f"the last one makes run_id {recipe.run_id}"
    raise ConfigError(f"the swarm trains run_id {run_id}, but none of the {len(axons)} endpoints "
                      f"of that run served flags that rebuild it ({problem}); pass the miners' "
                      f"own --model, --data and --train flags")
