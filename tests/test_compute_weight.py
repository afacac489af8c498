"""Twice the compute earns about twice the weight (``--validator.weighting contribution``).

Real processes on the embedded chain: two honest miners, one at full speed and one with half the
compute (tests/helpers/throttled_miner.py: it waits after each step as long as the step took),
and a validator weighting by score EMA x verified-samples EMA. The test waits for weight records
set after enough checked epochs (facts with their epoch), then compares the two miners' weights.
docs/validation.md records the measured ratio.
"""

import json
from pathlib import Path

import pytest

from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, records_after, wait_until

THROTTLED = str(Path(__file__).parent / "helpers" / "throttled_miner.py")
VALIDATOR_FLAGS = ["--validator.interval", "2", "--validator.alpha", "0.3",
                   "--validator.timeout", "8", "--validator.weights_every", "5",
                   "--validator.weighting", "contribution"]
CHECKED_EPOCHS = 10  # alpha 0.3: the EMAs hold < 3 % of their start after 10 checks


@pytest.mark.slow
def test_twice_the_compute_earns_about_twice_the_weight(tmp_path, zygote):
    options = SwarmOptions(out_dir=tmp_path, miners=2, validators=1, block_time=0.5,
                           neuron_flags=VALIDATOR_TEST_FLAGS)
    prepare_chain(options)
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        fast = group.start("miner1", tmp_path / "miner1", neuron_args("miner", "miner1", options))
        uid_fast = group.wait_for_file(fast, PEER_FILE, 180)["uid"]
        slow = group.start("miner2", tmp_path / "miner2", neuron_args("miner", "miner2", options),
                           program=(THROTTLED,))
        uid_slow = group.wait_for_file(slow, PEER_FILE, 180)["uid"]
        group.start("validator1", tmp_path / "validator1",
                    neuron_args("validator", "validator1", options, VALIDATOR_FLAGS))
        validator = tmp_path / "validator1"

        def settled():
            checks = [c for c in records(validator, "update_check") if c["miners"] == 2]
            if len(checks) < CHECKED_EPOCHS:
                return None
            after = records_after(validator, "weights", checks[CHECKED_EPOCHS - 1])
            return after[-1] if after else None

        weights = wait_until(settled, 900, f"weights after {CHECKED_EPOCHS} checked epochs",
                             group)
    rounds = records(validator, "round")
    samples = {name: [((r.get("update") or {}).get("samples"), r["score"])
                      for round_ in rounds for r in round_["results"] if r["uid"] == uid]
               for name, uid in (("fast", uid_fast), ("slow", uid_slow))}
    ratio = weights[f"weight/uid{uid_fast}"] / max(weights[f"weight/uid{uid_slow}"], 1e-12)
    print(json.dumps({"weights": weights, "ratio": ratio, "samples_and_scores": samples}))
    assert ratio >= 1.5, (ratio, weights, samples)
