"""What the miner's API answers: probes on the live model, status, and who may ask.

The probe runs on the copy of the swarm-global parameters the trainer publishes at every epoch
(never on the live model mid-step), so a validator that recomputes the same batch at the same
epoch gets the same loss and gradient, and a probe never waits for an averaging round.
"""

from __future__ import annotations

from hivetrain.chain import Chain
from hivetrain.miner.trainer import Trainer
from hivetrain.model.inputs import request_inputs
from hivetrain.model.probe import param_digest, probe_loss_and_grad
from hivetrain.protocol import ProbeRequest


class MinerService:
    """The three callables :func:`hivetrain.miner.api.create_app` needs.

    :param min_stake: TAO a caller's hotkey must have staked, besides a validator permit.
    """

    def __init__(self, trainer: Trainer, chain: Chain, peer_id: str, min_stake: float):
        self.trainer, self.chain, self.peer_id, self.min_stake = trainer, chain, peer_id, min_stake

    def probe(self, request: ProbeRequest) -> dict:
        trainer = self.trainer
        inputs = request_inputs(request, trainer.device)
        with trainer.published_lock:
            result = probe_loss_and_grad(trainer.published, inputs, request.seed, request.n_coords)
            answer = {"loss": result.loss, "coords": result.coords, "grad_values": result.grad_values,
                      "epoch": trainer.published_epoch,
                      "param_digest": param_digest(trainer.published), "peer_id": self.peer_id,
                      "samples_since_last_probe": trainer.state.samples_since_probe}
        trainer.state.samples_since_probe = 0
        return answer

    def status(self) -> dict:
        state = self.trainer.state
        return {"epoch": self.trainer.opt.local_epoch, "peer_id": self.peer_id,
                "samples_per_second": state.samples_per_second, "device": str(self.trainer.device)}

    def authorize(self, hotkey: str) -> str | None:
        """None when ``hotkey`` is a registered validator with enough stake, else why not."""
        metagraph = self.chain.metagraph()
        uid = metagraph.uid_of(hotkey)
        if uid is None:
            metagraph = self.chain.metagraph(refresh=True)  # maybe registered since the last sync
            uid = metagraph.uid_of(hotkey)
        if uid is None:
            return f"hotkey {hotkey} is not registered on subnet {self.chain.netuid}"
        if not metagraph.validator_permit[uid]:
            return f"uid {uid} has no validator permit"
        if metagraph.stake[uid] < self.min_stake:
            return f"uid {uid} has {metagraph.stake[uid]:.2f} TAO staked, below {self.min_stake}"
        return None
