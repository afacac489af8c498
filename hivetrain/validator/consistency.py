"""Is what a miner published what it sent? The swarm's outer step against the published updates.

A miner's update for epoch ``e`` is checked on its own (contribution.py): it must lower the loss
on its assigned data. Nothing there ties it to what the miner put into the all-reduce, so a
miner could publish an honest update and send something else (a sign-flipped change, another
vector) into the average. The swarm's own state closes that gap:

1. The outer step is SGD with Nesterov momentum ``mu`` and rate ``lr`` on the averaged change
   ``D``: ``m' = mu m + D`` and ``G' = G - lr (D + mu m')``. From the validator's copies of
   epochs ``e`` and ``e + 1`` (parameters and momentum) ``D`` follows twice, from the parameters
   and from the momentum; the two must agree, or the step between the copies was not one outer
   step on one average (a skipped step, copies from two split groups) and nothing is judged.
2. Every member of the group that averaged names it in its update envelope. The group that
   more than half of its own members name is the one checked; a peer named into a group by a
   minority cannot be framed by it. It must also be the group that produced the validator's copy
   of ``e + 1``: most of its members published that copy's sketch for ``e + 1``. A swarm split
   under load averages in several groups per epoch; measured in a loaded fresh-clone run of
   tests/test_proof_of_training.py, the honest miner's pair (with one adversary) was fitted to
   the majority's step, explained 0.06-0.08 of it (residual 0.64-0.83) and was flagged.
3. ``D`` is fitted as a combination of the group's published updates (least squares). An
   honest member's fitted coefficient is its share of the group's claimed samples (the
   reducers weight by them). A member whose coefficient is outside :data:`SHARE_BAND` of that
   share, while at least half of the members' are inside it, sent something other than what it
   published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import torch

# Fitted share / claimed share outside this band is inconsistent. Measured on processes
# (docs/validation.md): honest members of honest groups 1.000 (residual <= 0.001); beside a
# sign-flipping member, whose contribution the robust reducers partly clip, honest 0.444-2.135
# and the flipper -1.0 to -0.07; beside a member that averages noise instead of its update,
# honest 0.98-1.004 and the noise sender within 0.001 of 0; an honest miner among members that
# trained little (lazy, freeloader), whose larger update the reducers clip toward the median
# norm, down to 0.41.
# Clipping only shrinks a share, so the floor sits well under the honest and above a liar's.
SHARE_BAND = (0.1, 4.0)
# The two derivations of D (from G, from the momentum) differ by float rounding when the copies
# are one outer step apart: 0.0006 to 0.0012 of |D| with fp16 momentum downloads, 0 to 0.0010
# since they are exact (G - G' is small beside G, so float32 loses digits there).
MAX_DERIVATION_GAP = 0.1
# Updates this similar are one column of the fit (a copier beside its source).
SAME_UPDATE_COSINE = 0.999
# A member that claimed 0 samples carries no weight in the average: its coefficient must be ~0.
ZERO_CLAIM_SLACK = 0.05


@dataclass(frozen=True)
class Published:
    """What one miner published for the checked epoch: its update, claimed samples and group."""

    vector: torch.Tensor  # the update's tensors, flattened (float32)
    samples: int
    group: frozenset[str]  # DHT peer ids named in its envelope


@dataclass
class Consistency:
    """The check's facts for one epoch.

    :param status: ``consistent``, ``inconsistent`` (``flagged`` names who), or ``inconclusive``
        (``reason`` says why: nothing is judged then).
    :param shares: uid -> fitted coefficient / claimed share, for the members of the group.
    """

    status: str
    reason: str = ""
    members: tuple[int, ...] = ()
    shares: dict[int, float] = field(default_factory=dict)
    residual: float = math.nan
    derivation_gap: float = math.nan
    flagged: dict[int, str] = field(default_factory=dict)


def averaged_change(before, after) -> tuple[torch.Tensor, float]:
    """``D`` between two consecutive epochs' :class:`~hivetrain.swarm.diloco.OuterState`
    (flattened) and the relative gap between its two derivations."""
    mu, lr = after.mu, after.lr
    g0, g1 = _flat(before.params), _flat(after.params)
    m0 = _flat(before.momentum) if before.momentum is not None else torch.zeros_like(g0)
    from_params = ((g0 - g1) / lr - mu * mu * m0) / (1 + mu)
    if after.momentum is None:
        return from_params, math.inf
    from_momentum = _flat(after.momentum) - mu * m0
    scale = float(from_momentum.norm())
    gap = float((from_params - from_momentum).norm()) / scale if scale > 0 else math.inf
    return from_params, gap


def check(change: torch.Tensor, gap: float, published: Mapping[int, Published],
          peers_by_uid: Mapping[int, set[str]], holders: Collection[int]) -> Consistency:
    """Judge the group that produced ``change`` (from :func:`averaged_change`) against what its
    members published; ``peers_by_uid`` are the DHT identities committed on chain, ``holders``
    the uids whose published sketch of the later epoch matches the validator's copy."""
    if not gap <= MAX_DERIVATION_GAP:
        return Consistency("inconclusive", f"the copies are not one outer step apart "
                                           f"(derivations differ by {gap:.3f})", derivation_gap=gap)
    uid_of = {peer: uid for uid, peers in peers_by_uid.items() for peer in peers}
    best = None
    for members in _confirmed_groups(published, uid_of):
        if any(uid not in published for uid in members):
            continue  # a member's update was not fetched: its share cannot be fitted
        if sum(uid in holders for uid in members) * 2 <= len(members):
            continue  # it averaged apart: the validator's copy is another group's step
        fit = _fit(change, [published[uid] for uid in members])
        if fit is not None and (best is None or fit[2] < best[3]):
            best = (members, *fit)
    if best is None:
        return Consistency("inconclusive", "no group named by most of its members, and holding "
                                           "the validator's copy, has every member's update "
                                           "fetched", derivation_gap=gap)
    members, shares, ambiguous, residual = best
    result = Consistency("consistent", members=members, shares=dict(zip(members, shares)),
                         residual=residual, derivation_gap=gap)
    low, high = SHARE_BAND
    off = {uid: share for i, (uid, share) in enumerate(result.shares.items())
           if i not in ambiguous and not low <= share <= high}
    if not off:
        return result
    judged = len(members) - len(ambiguous)
    if len(off) * 2 > judged:  # most shares off: not this group's average after all
        result.status, result.reason = "inconclusive", (
            f"{len(off)} of {judged} members' shares outside {low}-{high}")
        return result
    result.status = "inconsistent"
    result.flagged = {uid: (f"inconsistent with the swarm's outer step: its update explains "
                            f"{share:.2f} of its claimed share of the group's average "
                            f"(band {low}-{high})") for uid, share in off.items()}
    return result


def _confirmed_groups(published: Mapping[int, Published], uid_of: Mapping[str, int]):
    """The groups (as sorted uid tuples) that more than half of their own members name."""
    named: dict[tuple[int, ...], int] = {}
    for uid, update in published.items():
        members = tuple(sorted({uid_of[p] for p in update.group if p in uid_of}))
        if uid in members and len(members) >= 2:
            named[members] = named.get(members, 0) + 1
    return [members for members, votes in named.items() if votes * 2 > len(members)]


def _fit(change: torch.Tensor, updates: Sequence[Published]):
    """(fitted / claimed share per member, members that cannot be told apart, relative
    residual), or None when no member claimed samples or an update is not finite.

    Members whose updates are equal (a copier beside its source) or zero (a freeloader) cannot
    be told apart by any fit: equal ones share one column, whose share of their summed claims is
    each one's, and a zero update explains nothing either way. Those members are never flagged
    here (the copy and gain checks judge them)."""
    total = sum(u.samples for u in updates)
    vectors = torch.stack([u.vector for u in updates])  # float32: n x numel (0.5 GB each on gpt2)
    if total <= 0 or not torch.isfinite(vectors).all():
        return None
    gram = (vectors @ vectors.T).double()
    columns, zero = _distinct_columns(gram)
    shares = [math.nan] * len(updates)
    explained = torch.zeros_like(change)
    if columns:
        index = [column[0] for column in columns]
        coefficients = torch.linalg.lstsq(gram[index][:, index],
                                          (vectors[index] @ change).double()).solution
        explained = coefficients.to(torch.float32) @ vectors[index]
        for column, coefficient in zip(columns, coefficients):
            claimed = sum(updates[i].samples for i in column) / total
            for i in column:
                shares[i] = _share(float(coefficient), claimed)
    residual = float((change - explained).norm() / change.norm().clamp_min(1e-30))
    ambiguous = set(zero) | {i for column in columns if len(column) > 1 for i in column}
    return shares, ambiguous, residual


def _distinct_columns(gram: torch.Tensor):
    """Members grouped by equal update (cosine above :data:`SAME_UPDATE_COSINE`), and the
    members whose update is zero."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    zero = [i for i in range(len(norms)) if norms[i] <= 1e-6 * float(norms.max())]
    columns: list[list[int]] = []
    for i in range(len(norms)):
        if i in zero:
            continue
        for column in columns:
            j = column[0]
            if float(gram[i, j] / (norms[i] * norms[j])) > SAME_UPDATE_COSINE:
                column.append(i)
                break
        else:
            columns.append([i])
    return columns, zero


def _share(coefficient: float, claimed: float) -> float:
    """Fitted coefficient over claimed share; a member that claimed nothing is in the band
    while its coefficient is near 0 and far out of it otherwise."""
    if claimed > 0:
        return coefficient / claimed
    return 1.0 if abs(coefficient) < ZERO_CLAIM_SLACK else math.inf


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
