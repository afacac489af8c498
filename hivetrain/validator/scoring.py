"""The subnet's scoring rule, as pure functions: no I/O, no clock, no chain.

One probe round gives each miner one of three scores:

* **1.0** it responded and its answer is acceptable: it is at (or within ``max_epoch_lag`` of)
  the validator's epoch, its loss matches the validator's reference loss on the same batch, and
  its gradient entries point the same way as the reference's;
* **0.3** it responded but the answer is unacceptable: it is working, but not on the swarm's
  model (stale, diverged, or made up);
* **0.1** it did not respond (timeout, refusal, malformed or badly signed answer).

Round scores feed a per-uid exponential moving average, which is normalised into the weights
the validator sets. 0.1 doubles as the floor: a uid nobody has scored yet, or whose hotkey
changed (a new miner took the slot), starts there rather than inheriting anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

SCORE_ACCEPTABLE = 1.0
SCORE_UNACCEPTABLE = 0.3
SCORE_NO_RESPONSE = 0.1
FLOOR = SCORE_NO_RESPONSE
DEFAULT_ALPHA = 0.05  # a round's weight in the EMA: half-life of ~13.5 rounds
STATE_VERSION = 1


@dataclass(frozen=True)
class Tolerances:
    """How close a miner's answer must be to the validator's reference to count as acceptable.

    :param max_epoch_lag: epochs the miner may be away from the reference, either way. 1 covers
        the moment an epoch turns over between the validator's reference and the miner's answer,
        or a miner still applying the step every peer just averaged.
    :param loss_rel_tol: allowed ``|loss - ref| / |ref|``. 5% absorbs device and kernel
        differences (float32 on CUDA vs CPU is expected to agree far below 1%; not yet measured
        on a GPU) and the loss change of the one lagged epoch
        the epoch rule already allows, yet rejects a miner whose weights are not the swarm's (an
        untrained model sits near ln(vocab), far above a trained one).
    :param min_cosine: minimum cosine between the miner's and the reference gradient entries.
        Honest answers at the same epoch score ~1.0 and stay far above 0.8 across one step;
        guessed values are ~0 ± 1/sqrt(n_coords) (±0.125 for 64), so 0.8 is 6 sigma away.
    """

    max_epoch_lag: int = 1
    loss_rel_tol: float = 0.05
    min_cosine: float = 0.8


@dataclass(frozen=True)
class ProbeOutcome:
    """Everything the rule looks at for one miner in one round.

    When ``responded`` is true every other field is required; the validator fills the reference
    side from its own run of ``probe_loss_and_grad`` on the same batch and seed.

    :param coords_match: whether the miner's coordinates are the ones the seed selects.
    :param grad_cosine: ``cosine(miner grad_values, reference grad_values)``.
    """

    responded: bool
    reported_epoch: Optional[int] = None
    reference_epoch: Optional[int] = None
    reported_loss: Optional[float] = None
    reference_loss: Optional[float] = None
    coords_match: Optional[bool] = None
    grad_cosine: Optional[float] = None

    def __post_init__(self):
        if self.responded:
            missing = [name for name, value in vars(self).items() if value is None]
            if missing:
                raise ValueError(f"a response needs {', '.join(missing)}")
            if not math.isfinite(self.reference_loss):
                raise ValueError("the reference loss must be finite to judge anyone against it")


def classify(outcome: ProbeOutcome, tol: Tolerances = Tolerances()) -> tuple[float, str]:
    """``(score, reason)`` for one miner; the reason is one short line for the validator's log."""
    if not outcome.responded:
        return SCORE_NO_RESPONSE, "no response"
    lag = abs(outcome.reported_epoch - outcome.reference_epoch)
    if lag > tol.max_epoch_lag:
        return SCORE_UNACCEPTABLE, (f"epoch {outcome.reported_epoch} is {lag} away from "
                                    f"{outcome.reference_epoch} (max {tol.max_epoch_lag})")
    if not math.isfinite(outcome.reported_loss):
        return SCORE_UNACCEPTABLE, f"loss is {outcome.reported_loss}"
    relative = abs(outcome.reported_loss - outcome.reference_loss) / max(
        abs(outcome.reference_loss), 1e-12)
    if relative > tol.loss_rel_tol:
        return SCORE_UNACCEPTABLE, (f"loss {outcome.reported_loss:.4f} vs reference "
                                    f"{outcome.reference_loss:.4f} ({relative:.1%} > "
                                    f"{tol.loss_rel_tol:.1%})")
    if not outcome.coords_match:
        return SCORE_UNACCEPTABLE, "gradient coordinates are not the ones the seed selects"
    # Written so that a NaN cosine fails too.
    if not outcome.grad_cosine >= tol.min_cosine:
        return SCORE_UNACCEPTABLE, (f"gradient cosine {outcome.grad_cosine:.3f} < "
                                    f"{tol.min_cosine}")
    return SCORE_ACCEPTABLE, "ok"


@dataclass
class ScoreState:
    """Per-uid EMA scores and the hotkey each score belongs to; what the validator persists."""

    scores: dict[int, float] = field(default_factory=dict)
    hotkeys: dict[int, str] = field(default_factory=dict)
    rounds: int = 0

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "rounds": self.rounds,
                           "scores": {str(uid): s for uid, s in sorted(self.scores.items())},
                           "hotkeys": {str(uid): h for uid, h in sorted(self.hotkeys.items())}},
                          indent=1)

    @classmethod
    def from_json(cls, text: str) -> ScoreState:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"not a version-{STATE_VERSION} score state")
        try:
            return cls(scores={int(uid): float(s) for uid, s in data["scores"].items()},
                       hotkeys={int(uid): str(h) for uid, h in data["hotkeys"].items()},
                       rounds=int(data["rounds"]))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed score state: {error!r}") from None


def update_ema(state: ScoreState, hotkeys: Mapping[int, str], round_scores: Mapping[int, float],
               alpha: float = DEFAULT_ALPHA) -> ScoreState:
    """Fold one round into the EMA and return the new state (``state`` is left untouched).

    :param hotkeys: the metagraph's current ``uid -> hotkey``. Uids missing from it are dropped;
        a uid new to the state, or whose hotkey differs from the one its score was earned by,
        is reset to :data:`FLOOR` before this round is applied.
    :param round_scores: this round's ``classify`` score per probed uid. Uids not probed this
        round keep their score; uids not in ``hotkeys`` are ignored (the slot is gone).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    scores = {uid: state.scores.get(uid, FLOOR) if state.hotkeys.get(uid) == hotkey else FLOOR
              for uid, hotkey in hotkeys.items()}
    for uid, score in round_scores.items():
        if uid in scores:
            scores[uid] = (1.0 - alpha) * scores[uid] + alpha * score
    return ScoreState(scores=scores, hotkeys=dict(hotkeys), rounds=state.rounds + 1)


def normalise(scores: Mapping[int, float]) -> dict[int, float]:
    """Weights proportional to the scores, summing to 1 (uniform when all are zero).

    Negative or non-finite scores count as zero, so one corrupt entry cannot poison the rest.
    """
    clean = {uid: s if math.isfinite(s) and s > 0 else 0.0 for uid, s in scores.items()}
    total = math.fsum(clean.values())
    if not clean:
        return {}
    if total == 0.0:
        return {uid: 1.0 / len(clean) for uid in clean}
    return {uid: s / total for uid, s in clean.items()}
