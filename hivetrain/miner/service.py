"""What the miner's API answers: probes on the live model, and status.

The probe runs on the copy of the swarm-global parameters the trainer publishes at every epoch
(never on the live model mid-step), so a validator that recomputes the same batch at the same
epoch gets the same loss and gradient, and a probe never waits for an averaging round.
"""

from __future__ import annotations

from hivetrain.miner.trainer import Trainer
from hivetrain.probe.codec import request_inputs
from hivetrain.probe.compute import param_digest, probe_loss_and_grad
from hivetrain.probe.schemas import ProbeRequest


class MinerService:
    """The ``probe`` and ``status`` callables :func:`hivetrain.miner.api.create_app` needs
    (``authorize`` is :class:`hivetrain.miner.callers.CallerPolicy`)."""

    def __init__(self, trainer: Trainer, peer_id: str, run_id: str, recipe: dict):
        """:param recipe: the flags that rebuild this miner's recipe (served in status)."""
        self.trainer, self.peer_id, self.run_id, self.recipe = trainer, peer_id, run_id, recipe

    def probe(self, request: ProbeRequest) -> dict:
        trainer = self.trainer
        inputs = request_inputs(request, trainer.device)
        with trainer.published_lock:
            result = probe_loss_and_grad(trainer.published, inputs, request.seed, request.n_coords)
            answer = {"loss": result.loss, "coords": result.coords, "grad_values": result.grad_values,
                      "epoch": trainer.published_epoch,
                      "param_digest": param_digest(trainer.published), "peer_id": self.peer_id,
                      "samples_since_last_probe": trainer.state.samples_since_probe}
        latest = self.updates().latest() if self.updates() is not None else None
        if latest is not None:
            answer.update(update_epoch=latest.epoch, update_digest=latest.digest,
                          update_samples=latest.samples)
        trainer.state.samples_since_probe = 0
        return answer

    def updates(self):
        """The optimizer's :class:`~hivetrain.swarm.updates.UpdateHistory` (DiLoCo keeps one;
        sync mode averages gradients every step and has none)."""
        return getattr(self.trainer.opt, "updates", None)

    def update(self, epoch: int):
        """The update this miner sent for ``epoch``, or None (served at ``/v1/update``)."""
        history = self.updates()
        return history.get(epoch) if history is not None else None

    def status(self) -> dict:
        state = self.trainer.state
        return {"epoch": self.trainer.opt.local_epoch, "peer_id": self.peer_id,
                "samples_per_second": state.samples_per_second, "device": str(self.trainer.device),
                "run_id": self.run_id, "recipe": self.recipe}
