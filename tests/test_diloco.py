"""DiLoCo's outer step, checked against its formula on two real hivemind peers on loopback.

Each peer's inner optimizer is plain SGD with learning rate 1 fed with gradients the test
chooses and records, so every round's parameter change is known exactly; the global parameters
after the outer steps must be what SGD with Nesterov momentum predicts from the sample-weighted
average of those changes.
"""

import threading

import pytest
import torch
from hivemind.compression import NoCompression

from hivetrain.config import TrainConfig
from hivetrain.swarm.dht import loopback_dhts
from hivetrain.swarm.diloco import DiLoCoOptimizer
from hivetrain.swarm.tracker import PROGRESS_EXPIRATION
from helpers.polling import wait_until

SIZE = 64
LR, MOMENTUM, INNER_STEPS = 0.7, 0.9, 2
# hivemind hands each peer ``local + (average - local)``: equal to the average up to rounding.
ROUNDING = 1e-5


@pytest.fixture
def dhts():
    first, second = loopback_dhts(2)
    yield first, second
    second.shutdown()
    first.shutdown()


def make_peer(dht, start: torch.Tensor, overlap=False):
    param = torch.nn.Parameter(start.clone())
    train = TrainConfig(inner_steps=INNER_STEPS, outer_lr=LR, outer_momentum=MOMENTUM,
                        matchmaking_time=3.0, averaging_timeout=20.0, batch_size=1,
                        overlap=overlap)
    opt = DiLoCoOptimizer(dht, "diloco-test", [param], train,
                          lambda params: torch.optim.SGD(params, lr=1.0),
                          inner_schedule=lambda step: 1.0, compression=NoCompression())
    return param, opt


def run_rounds(param, opt, grads_per_round):
    for grads in grads_per_round:
        for grad in grads:
            param.grad = grad.clone()
            opt.step()


def train_until(param, opt, epoch, seed, consumed):
    """Step with seeded gradients until ``epoch``, recording each gradient's round in ``consumed``
    (rounds counted from 0; with overlap a round's outer step comes one round later).

    How many steps each peer takes in a round depends on when the swarm's progress says the round
    is done (thousands, when steps are this cheap), so the test records what each peer did rather
    than fixing it in advance. Gradients are small multiples of 2^-10, so float32 sums of them
    are exact and only the averaging and the outer step round.
    """
    generator = torch.Generator().manual_seed(seed)
    while opt.local_epoch < epoch:
        grad = torch.randint(-2, 3, (SIZE,), generator=generator).float() * 2 ** -10
        consumed.setdefault(opt.rounds_ended, []).append(grad)
        param.grad = grad.clone()
        opt.step()


def in_parallel(*jobs):
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a peer hung in the outer step"


def nesterov(start, changes, lr=LR, momentum=MOMENTUM):
    """torch.optim.SGD(nesterov=True) applied to ``start`` with each round's averaged change."""
    params, buffer = start.clone(), None
    for change in changes:
        buffer = change.clone() if buffer is None else momentum * buffer + change
        params -= lr * (change + momentum * buffer)
    return params


def test_two_peers_end_where_the_outer_nesterov_formula_says(dhts):
    start = torch.randn(SIZE, generator=torch.Generator().manual_seed(0))
    rounds = 2
    (param_a, opt_a), (param_b, opt_b) = make_peer(dhts[0], start), make_peer(dhts[1], start)
    consumed_a, consumed_b = {}, {}
    try:
        # A peer announces its progress from its first step on; let both see each other first.
        for param, opt in ((param_a, opt_a), (param_b, opt_b)):
            run_rounds(param, opt, [[torch.zeros(SIZE)]])
        wait_until(lambda: all(o.tracker.global_progress.num_peers == 2 for o in (opt_a, opt_b)),
                   timeout=60, what="both peers to see each other's progress")
        in_parallel(lambda: train_until(param_a, opt_a, rounds, 1, consumed_a),
                    lambda: train_until(param_b, opt_b, rounds, 2, consumed_b))
        # With SGD at lr 1 a round's change (start - end) is the sum of its gradients; the
        # swarm averages the changes weighted by samples (one per step, plus the zero step).
        changes = []
        for r in range(rounds):
            steps = [len(c[r]) + (r == 0) for c in (consumed_a, consumed_b)]
            changes.append((sum(consumed_a[r]) * steps[0] + sum(consumed_b[r]) * steps[1])
                           / sum(steps))
        expected = nesterov(start, changes)
        assert opt_a.rounds_averaged == opt_b.rounds_averaged == rounds
        assert opt_a.local_epoch == opt_b.local_epoch == rounds
        for param, opt in ((param_a, opt_a), (param_b, opt_b)):
            assert torch.allclose(opt.global_parameters()[0], expected, atol=ROUNDING, rtol=0)
            assert torch.equal(param.detach(), opt.global_parameters()[0])  # next round starts at G
        # A peer averaging with no one would be off by a whole round's change from the formula.
        alone = nesterov(start, [sum(consumed_a[r]) for r in range(rounds)])
        assert (alone - expected).abs().max() > 1000 * ROUNDING
        # The vector is one part, reduced by one of the two peers: the other sends it, in fp32.
        assert opt_a.bytes_sent.total + opt_b.bytes_sent.total == rounds * SIZE * 4
    finally:
        opt_a.shutdown()
        opt_b.shutdown()


def test_a_lagging_peer_loads_the_global_state_instead_of_averaging(dhts):
    start = torch.zeros(SIZE)
    param_a, opt_a = make_peer(dhts[0], start)
    opt_b = None
    try:
        # 0.1 has no exact fp16 form, so a rounded momentum in the download would show.
        grad = torch.full((SIZE,), 0.1)

        def step_a():  # alone, a's round ends once its reports (one a second) make the target
            run_rounds(param_a, opt_a, [[grad]])
            return opt_a.local_epoch == 1

        wait_until(step_a, timeout=60, what="peer a to end its first round alone")
        assert opt_a.rounds_alone == 1
        param_b, opt_b = make_peer(dhts[1], start)
        wait_until(lambda: opt_b.tracker.global_epoch == 1, timeout=60,
                   what="the late peer to see that the swarm reached epoch 1")
        param_b.grad = torch.full((SIZE,), 5.0)
        opt_b.step()  # behind the swarm: its change is dropped and it restarts from a's state
        assert opt_b.local_epoch == 1 and opt_b.rounds_averaged == opt_b.rounds_alone == 0
        assert torch.equal(opt_b.global_parameters()[0], opt_a.global_parameters()[0])
        assert torch.equal(param_b.detach(), opt_a.global_parameters()[0])
        # The outer momentum arrives exactly too: it enters every later outer step.
        assert torch.equal(opt_b.outer_state().momentum[0], opt_a.outer_state().momentum[0])
    finally:
        opt_a.shutdown()
        if opt_b is not None:
            opt_b.shutdown()


def test_a_peer_gone_without_withdrawing_its_progress_stops_counting_at_its_expiry(dhts):
    """A killed peer leaves its last progress record behind, and until it expires the others count
    it as a trainer (tests/test_swarm.py's miners stalled 50 s on such records). Here one peer
    goes silent as a killed one does: it stops reporting and withdraws nothing."""
    start = torch.zeros(SIZE)
    peers = [make_peer(dht, start) for dht in dhts]
    try:
        for param, opt in peers:
            param.grad = torch.zeros(SIZE)
            opt.step()
        (_, opt_a), (_, opt_b) = peers
        wait_until(lambda: opt_a.tracker.global_progress.num_peers == 2, timeout=60,
                   what="peer a to count peer b")
        opt_b.tracker.shutdown_triggered.set()  # hivemind's reporter ends; no withdrawal is sent
        opt_b.tracker.should_report_progress.set()
        # b's record lasts PROGRESS_EXPIRATION from its last report; a fetches at least every
        # max_refresh_period (10 s). hivemind's own 60 s expiry would overrun this deadline.
        wait_until(lambda: opt_a.tracker.global_progress.num_peers == 1,
                   timeout=PROGRESS_EXPIRATION + opt_a.tracker.max_refresh_period + 10,
                   what="peer a to stop counting the silent peer b")
    finally:
        for _, opt in peers:
            opt.shutdown()


def test_a_peer_whose_global_parameters_diverged_reloads_the_reference_state(dhts):
    """A lost all-reduce part leaves one peer with other global parameters; the next round's
    sketches expose it and exactly one of the two reloads the other's state."""
    start = torch.zeros(SIZE)
    (param_a, opt_a), (param_b, opt_b) = make_peer(dhts[0], start), make_peer(dhts[1], start)
    try:
        for param, opt in ((param_a, opt_a), (param_b, opt_b)):
            run_rounds(param, opt, [[torch.zeros(SIZE)]])
        wait_until(lambda: all(o.tracker.global_progress.num_peers == 2 for o in (opt_a, opt_b)),
                   timeout=60, what="both peers to see each other's progress")
        with torch.no_grad():
            opt_b.global_params[0][: SIZE // 4] += 0.5  # as if a quarter of a round went missing
        in_parallel(lambda: train_until(param_a, opt_a, 1, 1, {}),
                    lambda: train_until(param_b, opt_b, 1, 2, {}))
        assert opt_a.local_epoch == opt_b.local_epoch == 1
        assert torch.equal(opt_a.global_parameters()[0], opt_b.global_parameters()[0])
    finally:
        opt_a.shutdown()
        opt_b.shutdown()


def test_overlap_applies_each_round_one_round_later_and_keeps_local_progress(dhts):
    start = torch.randn(SIZE, generator=torch.Generator().manual_seed(3))
    (param_a, opt_a), (param_b, opt_b) = (make_peer(dhts[0], start, overlap=True),
                                          make_peer(dhts[1], start, overlap=True))
    consumed_a, consumed_b = {}, {}
    try:
        for param, opt, consumed in ((param_a, opt_a, consumed_a), (param_b, opt_b, consumed_b)):
            consumed[0] = [torch.zeros(SIZE)]
            run_rounds(param, opt, [consumed[0]])
        wait_until(lambda: all(o.tracker.global_progress.num_peers == 2 for o in (opt_a, opt_b)),
                   timeout=60, what="both peers to see each other's progress")
        # Every round ends an epoch; round 0's outer step is applied when round 1 ends (epoch 2).
        in_parallel(lambda: train_until(param_a, opt_a, 2, 1, consumed_a),
                    lambda: train_until(param_b, opt_b, 2, 2, consumed_b))
        steps = [len(consumed_a[0]), len(consumed_b[0])]
        first_round = (sum(consumed_a[0]) * steps[0] + sum(consumed_b[0]) * steps[1]) / sum(steps)
        expected = nesterov(start, [first_round])
        for param, opt, consumed in ((param_a, opt_a, consumed_a), (param_b, opt_b, consumed_b)):
            assert opt.rounds_ended == opt.local_epoch == 2
            assert torch.allclose(opt.global_parameters()[0], expected, atol=ROUNDING, rtol=0)
            # The live parameters keep this peer's round-1 progress on top of the new G.
            assert torch.allclose(param.detach(), expected - sum(consumed[1]), atol=ROUNDING, rtol=0)
    finally:
        opt_a.shutdown()
        opt_b.shutdown()


@pytest.mark.parametrize("trainable", ["projection", "full"])
def test_only_trainable_parameters_are_averaged(dhts, trainable):
    """Bytes on the wire per round are those of the trainable parameters; frozen ones stay put."""
    from hivetrain.model.multimodal import build_multimodal_model

    models = [build_multimodal_model("mm-tiny", 4096, 32, seed=0, mode=trainable) for _ in dhts]
    frozen = {name: p.detach().clone() for name, p in models[0].named_parameters()
              if not p.requires_grad}
    train = TrainConfig(inner_steps=2, matchmaking_time=3.0, averaging_timeout=20.0, batch_size=1)
    opts = [DiLoCoOptimizer(dht, f"mm-{trainable}", [p for p in m.parameters() if p.requires_grad],
                            train, lambda params: torch.optim.SGD(params, lr=1.0),
                            inner_schedule=lambda step: 1.0, compression=NoCompression())
            for dht, m in zip(dhts, models)]
    try:
        for opt in opts:  # one step each announces both peers; a round takes two
            for p in opt.params:
                p.grad = torch.zeros_like(p)
            opt.step()
        wait_until(lambda: all(o.tracker.global_progress.num_peers == 2 for o in opts),
                   timeout=60, what="both peers to see each other's progress")

        def one_round(opt):
            # One step of change, then zero gradients until the round ends: a peer's step count
            # depends on thread scheduling (CI: one peer took hundreds while the other's thread
            # waited), and a change growing with it made the starved peer's receiver refuse an
            # honest average hundreds of times its own change.
            grad = 1e-3
            while opt.local_epoch < 1:
                for p in opt.params:
                    p.grad = torch.full_like(p, grad)
                grad = 0.0
                opt.step()

        in_parallel(*(lambda o=o: one_round(o) for o in opts))
        trainable_bytes = 4 * sum(p.numel() for p in opts[0].params)
        print(f"{trainable}: {trainable_bytes} bytes of trainable parameters; sent "
              f"{[o.bytes_sent.total for o in opts]}")
        assert all(o.rounds_averaged == 1 for o in opts)
        # Each part of the vector is reduced by one peer and sent by the other: one vector in all.
        assert sum(o.bytes_sent.total for o in opts) == trainable_bytes
        for name, p in models[0].named_parameters():
            if name in frozen:
                assert torch.equal(p.detach(), frozen[name]), name
    finally:
        for opt in opts:
            opt.shutdown()
