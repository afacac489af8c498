"""Robust all-reduce: one peer's NaN, inf, x1e4 update or inflated sample count cannot break the run.

hivemind's butterfly all-reduce splits the averaged vector into parts; each peer *reduces* one
part (collects every sender's copy of it, returns the average) and *receives* the others.
hivemind's reducer adds each part into a running sum as it streams in, weighted by the weight the
sender wrote into its own message, so a single sender decides the result (``TensorPartReducer``
in ``hivemind/averaging/partition.py``). Measured on a local subnet: NaN from one peer turned
every peer's parameters to NaN, an update x1e4 sent held-out loss to ~785,600, a weight of 1e6
to 47.

Here the two roles defend themselves, by subclassing hivemind (its files are never patched):

* :class:`RobustPartReducer` holds every sender's copy of a part before combining them
  (:func:`robust_mean`): non-finite copies and banned senders are dropped, each sender's weight
  is capped at ``WEIGHT_SPREAD`` x the group's median weight, each copy's norm is clipped to
  ``CLIP_FACTOR`` x the median norm (median-norm clipping, as Templar's gauntlet does centrally).
  The median is floored by the size of the swarm's last applied average over the part.
  A copy far outside the bounds (``BAN_FACTOR``) is dropped and its sender banned; within reach
  of honest peers it is bounded. Bans for size compare with the senders that moved (the lower
  median of the larger half of the norms) and only where those moved at least as far as the
  floor: in a group whose majority sent (next to) nothing, the large copy is the peer that
  trained, so it is bounded there, never banned. With three or more senders, a sender whose copies point against
  the coordinate-wise median over the whole round (a sign-flipped update keeps its norm, not its
  direction) is banned when the round ends.
* :class:`RobustAllReduceRunner` checks every averaged part a *remote* reducer returns before it
  is applied: finite, and its norm within ``RECEIVE_FACTOR`` x this peer's own copy (or its whole
  change's per-element size over the part, where its own copy is small).
  A bad part is replaced by this peer's own copy, and the reducer gets a verdict; the DiLoCo
  optimizer then skips the outer step of that round (every honest peer that saw the same bad part
  skips the same way, so they stay in agreement).

Medians are lower medians. With fewer than three senders there is no majority, so only
non-finite copies are dropped (and receivers still check what comes back). The constants come from the measured honest spread (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from hivemind.averaging.allreduce import AllReduceRunner
from hivemind.averaging.partition import (DEFAULT_PART_SIZE_BYTES, AllreduceException,
                                          BannedException, TensorPartReducer)
from hivemind.compression import CompressionBase, CompressionInfo

logger = logging.getLogger(__name__)

# Bounds need a majority of senders to tell the outlier: with fewer (two peers), a faster honest
# peer and a liar look alike, and capping would only cut the honest peer's contribution.
MAJORITY = 3
# A sender's weight (its claimed samples) may be at most this many times the group's median:
# honest peers with 2x the compute fit, a claim of 1e6 samples does not.
WEIGHT_SPREAD = 4.0
# Copies longer than this many median norms are scaled down to it. Honest DiLoCo changes of one
# round measured within 1.6x of each other per part (docs/security.md).
CLIP_FACTOR = 2.0
# Far outside the honest range: the sender is banned (drops are logged but forgiven).
BAN_FACTOR = 16.0
# With 3+ senders, a sender whose copies point against the coordinate-wise median over a whole
# round (cosine below this) is banned; a sign flip of an honest update sits near -1.
BAN_COSINE = -0.5
# An averaged part may be at most this many times the larger of this peer's own copy and its
# whole change's per-element size over the part. An honest average measured up to 4.6 x the
# receiver's own copy in one part (docs/security.md); a x1e3 bad reducer is far beyond.
RECEIVE_FACTOR = 16.0
# The same bound before this peer has averaged once (no swarm average to compare with): measured
# on a loaded machine, a peer whose round ended after 1 step received an honest average 61 x its
# own change from a peer that took many more; a x1e3 bad reducer is still far beyond.
FIRST_RECEIVE_FACTOR = 256.0
NORM_FLOOR = 1e-12


@dataclass
class Verdicts:
    """What one round's reduction and receiving found out about the other peers.

    :ivar offenders: peer -> reasons it should be banned (sent or reduced something far outside
        every honest bound).
    :ivar notes: peer -> reasons a part of it was dropped or clipped (within reach of honest
        peers on an unlucky round: logged, not banned).
    :ivar bad_reducers: peers whose returned averages this peer refused to apply.
    """

    offenders: dict[str, set[str]] = field(default_factory=dict)
    notes: dict[str, set[str]] = field(default_factory=dict)
    bad_reducers: set[str] = field(default_factory=set)
    directions: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def offend(self, peer: str, reason: str) -> None:
        self.offenders.setdefault(peer, set()).add(reason)

    def note(self, peer: str, reason: str) -> None:
        self.notes.setdefault(peer, set()).add(reason)

    def add_direction(self, peer: str, copy: torch.Tensor, center: torch.Tensor) -> None:
        """Accumulate how ``copy`` points relative to the coordinate-wise median of its part."""
        dot, copy_sq, center_sq = self.directions.get(peer, (0.0, 0.0, 0.0))
        self.directions[peer] = (dot + (copy.flatten() @ center.flatten()).item(),
                                 copy_sq + copy.norm().item() ** 2,
                                 center_sq + center.norm().item() ** 2)

    def judge_directions(self) -> None:
        """Offend senders whose copies, over every part this peer reduced, point against the
        median: a sign-flipped update keeps its norm, but not its direction. Single parts of
        honest updates were measured as low as -0.7 against the median (docs/security.md), so
        the rule looks at the whole round, and only bounds (never drops) single parts."""
        for peer, (dot, copy_sq, center_sq) in self.directions.items():
            norms = math.sqrt(copy_sq * center_sq)
            if norms > 0 and dot / norms < BAN_COSINE:
                self.offend(peer, f"cosine {dot / norms:.2f} with the median over the round")

    def as_dict(self) -> dict:
        """Plain data, for hivemind's MPFuture to carry from the averager process to the host."""
        return {"offenders": {p: sorted(r) for p, r in self.offenders.items()},
                "notes": {p: sorted(r) for p, r in self.notes.items()},
                "bad_reducers": sorted(self.bad_reducers)}


def _lower_median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


# Up to this many copies the coordinate-wise median comes from a sorting network of elementwise
# min/max (n rounds of n/2 pairs): 5-30 x faster than ``torch.median(dim=0)`` on one CPU thread
# for 3-16 copies of a 512 KiB part (bench/defence_cost.py); beyond it the sort wins.
NETWORK_MEDIAN_MAX = 16


def coordinate_median(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The coordinate-wise lower median of equally shaped finite tensors: exactly what
    ``torch.stack(tensors).median(dim=0).values`` returns, computed faster for small groups.

    The median was 80 % of the robust reducer's time; every peer computes it for each part it
    reduces, every round (docs/benchmarks.md, the defences' cost)."""
    count = len(tensors)
    if count > NETWORK_MEDIAN_MAX:
        return torch.stack(list(tensors)).median(dim=0).values
    rows = list(tensors)
    for round_index in range(count):  # odd-even transposition sort, one pair at a time
        for i in range(round_index % 2, count - 1, 2):
            rows[i], rows[i + 1] = torch.minimum(rows[i], rows[i + 1]), \
                torch.maximum(rows[i], rows[i + 1])
    return rows[(count - 1) // 2]


def robust_mean(copies: dict[int, tuple[torch.Tensor, float]], names: Sequence[str],
                verdicts: Verdicts, banned: Callable[[str], bool] = lambda peer: False,
                reference_rms: float = 0.0) -> torch.Tensor:
    """The bounded weighted mean of every sender's copy of one part.

    :param copies: sender index -> (its copy of the part, the weight it claimed).
    :param names: sender index -> peer id (for verdicts).
    :param banned: whether a peer is already banned (its copy is ignored).
    :param reference_rms: per-element size of the swarm's last applied average (0 before the
        first): the floor of the median norm. Measured without it (a fresh-clone run of
        ``tests/test_proof_of_training.py``): in a group of one honest miner and five that
        trained little or not at all, the median copy was 20-30 x smaller than the honest one,
        and the honest miner was banned by 3 of 5 peers and scored 0.3 for it.
    :returns: the aggregate; zeros when no copy survives (the part is then left unchanged).
    """
    shape = next(iter(copies.values()))[0].shape
    kept: dict[int, tuple[torch.Tensor, float]] = {}
    for index, (tensor, weight) in copies.items():
        name = names[index]
        if banned(name):
            verdicts.note(name, "banned")
        elif not math.isfinite(weight) or weight < 0:
            verdicts.offend(name, f"weight {weight}")
        elif not torch.isfinite(tensor).all():
            verdicts.offend(name, "non-finite values")
        else:
            kept[index] = (tensor.float(), float(weight))
    if not kept:
        return torch.zeros(shape)
    bounds = bound_copies({index: tensor.norm().item() for index, (tensor, _) in kept.items()},
                          {index: weight for index, (_, weight) in kept.items()},
                          reference_rms * math.sqrt(shape.numel()))
    center = coordinate_median([t for t, _ in kept.values()]) if len(kept) >= MAJORITY else None
    total, weight_sum = torch.zeros(shape), 0.0
    for index, (tensor, _) in kept.items():
        name, bound = names[index], bounds[index]
        if bound.dropped:
            verdicts.offend(name, "; ".join(why for _, why in bound.problems))
            continue
        for _, why in bound.problems:
            verdicts.note(name, why)
        tensor = tensor * bound.scale if bound.scale != 1.0 else tensor
        if center is not None:
            verdicts.add_direction(name, tensor, center)
        total.add_(tensor, alpha=bound.weight)
        weight_sum += bound.weight
    return total / weight_sum if weight_sum > 0 else torch.zeros(shape)


@dataclass(frozen=True)
class Bound:
    """How :func:`robust_mean` takes one sender's copy of a part: multiplied by ``scale``
    (norm clipping), weighted by ``weight`` (the claim after the cap), or dropped."""

    scale: float
    weight: float
    problems: tuple[tuple[float, str], ...] = ()  # (how far outside the bound, why)

    @property
    def dropped(self) -> bool:
        return any(far >= BAN_FACTOR for far, _ in self.problems)


def bound_copies(norms: dict[int, float], weights: dict[int, float],
                 reference_norm: float = 0.0) -> dict[int, Bound]:
    """The reducers' bounds for finite copies of one part with these norms and claimed weights:
    the rule itself, on scalars, so a validator can ask what the swarm's average was if every
    sender sent what it published (validator/consistency.py).

    :param reference_norm: the swarm's last applied average over the part: the median's floor.
    """
    if len(norms) < MAJORITY:  # no majority to tell the liar: every copy as it came
        return {index: Bound(1.0, weights[index]) for index in norms}
    median_weight = _lower_median(list(weights.values()))
    ordered = sorted(norms.values())
    median_norm = max(_lower_median(ordered), reference_norm)
    # Bans for size are judged against the senders that moved: the lower median of the larger
    # half of the norms (one outlier never sets it), when that is at least the swarm's last
    # average. Below it the group's majority sent (next to) nothing and the large copy is the
    # peer that trained: such a group bounds it (clipping above), never bans it.
    ban_scale = _lower_median(ordered[len(ordered) // 2:])
    judges_size = ban_scale > NORM_FLOOR and ban_scale >= reference_norm
    bounds = {}
    for index, norm in norms.items():
        weight, scale, problems = weights[index], 1.0, []
        if median_weight > 0 and weight > WEIGHT_SPREAD * median_weight:
            problems.append((weight / median_weight,
                             f"weight {weight:.0f} > {WEIGHT_SPREAD:g} x median {median_weight:.0f}"))
            weight = WEIGHT_SPREAD * median_weight
        if median_norm > NORM_FLOOR and norm > CLIP_FACTOR * median_norm:
            far = norm / ban_scale if judges_size else CLIP_FACTOR
            problems.append((far, f"norm {norm:.3g} > {CLIP_FACTOR:g} x median {median_norm:.3g}"))
            scale = CLIP_FACTOR * median_norm / norm
        bounds[index] = Bound(scale, weight, tuple(problems))
    return bounds


def part_sizes(tensors: Sequence[torch.Tensor], compression: CompressionBase,
               part_size_bytes: int = DEFAULT_PART_SIZE_BYTES) -> list[int]:
    """The sizes, in order, of the parts hivemind's all-reduce cuts ``tensors`` into: each tensor
    flattened and split into pieces of ``part_size_bytes`` after compression (its
    ``TensorPartContainer``). Each part is reduced on its own, so the bounds apply per part; the
    cut does not depend on the group, so a validator can make the same one."""
    sizes = []
    for index, tensor in enumerate(tensors):
        info = CompressionInfo.from_tensor(tensor, key=index)
        per_part = int(part_size_bytes / (tensor.element_size()
                                          * compression.estimate_compression_ratio(info)))
        whole, rest = divmod(tensor.numel(), per_part)
        sizes += [per_part] * whole + ([rest] if rest else [])
    return sizes


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norms = a.norm().item() * b.norm().item()
    return (a.flatten() @ b.flatten()).item() / norms if norms > 0 else 1.0


class RobustPartReducer(TensorPartReducer):
    """A ``TensorPartReducer`` that waits for every sender's copy of a part, then combines them
    with :func:`robust_mean` instead of summing them as they stream in."""

    def __init__(self, part_shapes, num_senders: int, *, sender_names: Sequence[str],
                 verdicts: Verdicts, banned: Callable[[str], bool], reference_rms: float = 0.0):
        self.sender_names, self.verdicts, self.banned = list(sender_names), verdicts, banned
        self.reference_rms = reference_rms
        self.copies: dict[int, tuple[torch.Tensor, float]] = {}
        super().__init__(part_shapes, num_senders)

    def reset_accumulators(self):
        super().reset_accumulators()
        self.copies = {}

    async def accumulate_part(self, sender_index: int, part_index: int, tensor_part: torch.Tensor,
                              weight: float = 1.0) -> torch.Tensor:
        # The waiting and ban logic of hivemind's reducer; only the accumulation differs.
        assert 0 <= sender_index < self.num_senders, "invalid sender index"
        assert 0 <= part_index < self.num_parts, "invalid part index"
        self.num_parts_received[sender_index] += 1
        while part_index > self.current_part_index:
            await asyncio.wait({self.current_part_future, asyncio.create_task(self.finished.wait())},
                               return_when=asyncio.FIRST_COMPLETED)
            if self.finished.is_set():
                raise AllreduceException(f"attempted to aggregate part in a finalized {type(self).__name__}")
        if self.sender_failed_after[sender_index] != float("inf"):
            raise BannedException(f"sender {sender_index} was banned in background")
        assert part_index == self.current_part_index
        current_part_future = self.current_part_future
        if part_index < self.sender_failed_after[sender_index]:
            self.copies[sender_index] = (tensor_part, weight)
            self.current_part_accumulated_from += 1
            self.check_current_part_finished()
        return await current_part_future

    def check_current_part_finished(self):
        assert self.current_part_accumulated_from <= self.num_current_senders
        if self.current_part_accumulated_from == self.num_current_senders:
            shape = self.part_shapes[self.current_part_index]
            result = robust_mean(self.copies, self.sender_names, self.verdicts, self.banned,
                                 self.reference_rms) if self.copies else torch.zeros(shape)
            self.current_part_future.set_result(result)
            self.reset_accumulators()


class RobustAllReduceRunner(AllReduceRunner):
    """hivemind's ``AllReduceRunner`` with a :class:`RobustPartReducer` and a check of every
    averaged part that another peer returns (see the module docstring).

    :param banned: ``peer id -> bool``; copies from banned senders are ignored and parts reduced by
        banned peers are not applied.
    """

    def __init__(self, *, banned: Callable[[str], bool], reference_rms: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.verdicts = Verdicts()
        self.banned = banned
        self.tensor_part_reducer.finished.set()  # hivemind's own reducer, unused: no 0% warning
        self.tensor_part_reducer = RobustPartReducer(
            tuple(part.shape for part in self.parts_for_local_averaging), len(self.sender_peer_ids),
            sender_names=[str(peer) for peer in self.sender_peer_ids], verdicts=self.verdicts,
            banned=banned, reference_rms=reference_rms)
        container = self.tensor_part_container
        # This peer's own change, per element: the floor of the bound for parts where its own
        # copy happens to be small (an honest average there can be many times that copy).
        # With the swarm's last averaged change beside it: a peer that took few steps (or none:
        # it had just loaded the state) has a change far smaller than an honest average.
        # Measured, before the last average was the floor: miners with no change of their own
        # refused every average (bound 1e-12) and banned every honest reducer.
        total_sq = sum(float(t.detach().float().norm()) ** 2 for t in container.local_tensors)
        self._own_rms = max(math.sqrt(total_sq / max(1, container.total_size)), reference_rms)
        self._factor = RECEIVE_FACTOR if reference_rms > 0 else FIRST_RECEIVE_FACTOR
        self._register = container.register_processed_part
        container.register_processed_part = self._register_checked

    def _register_checked(self, peer_index: int, part_index: int, delta: torch.Tensor) -> None:
        """Apply a remote reducer's averaged part only if it is finite and of plausible size."""
        peer = self.ordered_peer_ids[peer_index]
        if peer != self.peer_id:
            own = self.tensor_part_container._input_parts_by_peer[peer_index][part_index][0]
            averaged = own.float() + delta.float()
            bound = self._factor * max(own.norm().item(), self._own_rms * math.sqrt(own.numel())) \
                + NORM_FLOOR
            problem = None
            if self.banned(str(peer)):
                problem = "a banned peer reduced it"
            elif not torch.isfinite(averaged).all():
                problem = "non-finite average"
            elif bound > 2 * NORM_FLOOR and averaged.norm().item() > bound:
                # (no scale at all: no change of its own and no average yet; it cannot judge size)
                problem = f"average norm {averaged.norm().item():.3g} > {bound:.3g}"
            if problem is not None:
                self.verdicts.bad_reducers.add(str(peer))
                if not self.banned(str(peer)):
                    self.verdicts.offend(str(peer), f"reduced a bad part ({problem})")
                delta = torch.zeros_like(delta)  # this peer's own copy, in place of the bad average
        self._register(peer_index, part_index, delta)

    def report(self) -> dict:
        self.verdicts.judge_directions()
        return self.verdicts.as_dict()

