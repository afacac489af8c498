"""An honest miner with half the compute, for the weight-per-compute test.

    python tests/helpers/throttled_miner.py miner <miner flags>

It trains exactly like ``hivetrain miner`` (its own assigned data, every step, honest claims),
but after each inner step it waits as long as the step took, so it trains about half the samples
per second a full-speed peer on the same machine trains. On a shared CPU, doubling
``--train.batch_size`` does not double a miner's samples per second (each step takes twice as
long); halving one miner's speed is how this machine can show two honest miners whose compute
differs by 2 x. The swarm's rounds end on the swarm's sample count, so the full-speed miner
takes about twice the steps per round and claims (and verifiably trains) twice the samples.
"""

import sys
import time

from hivetrain.cli import main
from hivetrain.swarm import diloco

original_init = diloco.DiLoCoOptimizer.__init__


def init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    real_step, last = self.inner.step, [time.monotonic()]

    def step(*a, **k):
        result = real_step(*a, **k)
        # The time since the previous step returned: forward, backward and this step.
        time.sleep(max(0.0, time.monotonic() - last[0]))
        last[0] = time.monotonic()
        return result

    self.inner.step = step


diloco.DiLoCoOptimizer.__init__ = init

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
