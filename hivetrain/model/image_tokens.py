"""The placeholder ids that mark an image's span in ``input_ids`` (see :mod:`hivetrain.model.multimodal`).

Negative, so no tokenizer ever produces them and text-only runs keep their vocabulary. Kept in a
module of their own (no torch, no transformers) because the data pipeline, the wire protocol
and the model all need them.
"""

IMAGE_START, IMAGE_END, IMAGE_SLOT = -1, -2, -3
LOWEST_PLACEHOLDER = min(IMAGE_START, IMAGE_END, IMAGE_SLOT)
