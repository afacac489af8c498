"""The miner-validator contract, in one place so that the two sides cannot drift apart.

* :mod:`~hivetrain.probe.schemas`: what travels on ``/v1/probe``, ``/v1/update`` and
  ``/v1/status`` (bounded pydantic models), and the miner's signatures over its answers and
  update envelopes;
* :mod:`~hivetrain.probe.codec`: model inputs (tokens, labels, uint8 images) to request fields
  and back;
* :mod:`~hivetrain.probe.compute`: what both sides compute on a batch: the loss and seeded
  gradient coordinates of a probe, and the losses that measure a published update.

The miner's API (:mod:`hivetrain.miner.api`) serves it; the validator's clients
(:mod:`hivetrain.validator.prober`, :mod:`hivetrain.validator.update_client`) call it.
"""
