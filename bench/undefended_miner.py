"""``hivetrain miner`` with hivemind's plain all-reduce in place of the robust one, for the
defences' cost in ``bench/low_communication.py``.

    python bench/undefended_miner.py miner <miner flags>

Only the reduction and the receivers' checks are swapped out (every copy averaged as hivemind
does, weighted by the sender's own word; every returned part applied): admission, exclusions and
checked state downloads stay, since they cost nothing per round. The swarm's code is unchanged;
this file is a benchmark's baseline, never a way to run a miner.
"""

import sys

from hivemind.averaging.allreduce import AllReduceRunner

from hivetrain.cli import main
from hivetrain.swarm import averager
from hivetrain.swarm.robust import Verdicts


class PlainAllReduceRunner(AllReduceRunner):
    """hivemind's runner with the robust runner's constructor and (always empty) verdicts."""

    def __init__(self, *, banned, reference_rms: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.verdicts = Verdicts()

    def report(self) -> dict:
        return self.verdicts.as_dict()


averager.RobustAllReduceRunner = PlainAllReduceRunner

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
