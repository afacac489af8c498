"""The placeholder ids that mark an image's span in ``input_ids`` (see :mod:`hivetrain.model.multimodal`).

Negative, so no tokenizer ever produces them and text-only runs keep their vocabulary. Kept in a
module of their own on the ground floor (no torch, no transformers, no hivetrain imports):
the data pipeline, the model and the probe's wire schemas all need them, and neither data nor
model may import upward.
"""

IMAGE_START, IMAGE_END, IMAGE_SLOT = -1, -2, -3
LOWEST_PLACEHOLDER = min(IMAGE_START, IMAGE_END, IMAGE_SLOT)
