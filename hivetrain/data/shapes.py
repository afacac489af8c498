"""The embedded image-caption set: rendered scenes of one coloured shape, e.g. "a red circle at
the top left".

It needs no network and no files: scene ``i`` of a split is drawn from a seed fixed by the split
name and ``i``, and rendered with plain numpy (supersampled coverage masks, then rounding), so
every peer on every platform produces the same bytes, whatever image library is installed. The
caption names shape, colour and position, which makes learning measurable: a captioner that
reads the image names them far above chance, one that does not cannot. Position, size and
colour are jittered, so no two scenes are the same image and held-out scenes are never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hivetrain.data.tokens import derive_seed

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
           "yellow": (230, 210, 40), "purple": (150, 60, 200), "white": (235, 235, 235)}
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom",
             "bottom right")
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """One shape on a plain background; coordinates are fractions of the image side."""

    shape: str
    colour: str
    position: str
    x: float
    y: float
    radius: float
    rgb: tuple[int, int, int]
    background: tuple[int, int, int]

    @property
    def caption(self) -> str:
        where = "in the centre" if self.position == "centre" else f"at the {self.position}"
        return f"a {self.colour} {self.shape} {where}"


def scene(split: str, index: int) -> Scene:
    """Scene ``index`` of ``split`` ("train" or "heldout"; any name gives its own scenes)."""
    rng = np.random.default_rng(derive_seed("shapes", split, index))
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    cell = int(rng.integers(len(POSITIONS)))
    x, y = ((cell % 3 + 0.5) / 3, (cell // 3 + 0.5) / 3) + rng.uniform(-0.05, 0.05, 2)
    rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 21, 3), 0, 255)
    background = rng.integers(0, 60, 3)
    return Scene(shape, colour, POSITIONS[cell], float(x), float(y),
                 float(rng.uniform(0.09, 0.14)), tuple(int(v) for v in rgb),
                 tuple(int(v) for v in background))


def render(item: Scene, size: int) -> np.ndarray:
    """The scene as a uint8 [3, size, size] image (anti-aliased by supersampling)."""
    samples = (np.arange(size * SUPERSAMPLE) + 0.5) / (size * SUPERSAMPLE)
    dx, dy = samples[None, :] - item.x, samples[:, None] - item.y
    r = item.radius
    if item.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif item.shape == "square":
        inside = np.maximum(abs(dx), abs(dy)) <= 0.85 * r
    elif item.shape == "triangle":  # apex up, base 0.8 r below the centre
        inside = (dy <= 0.8 * r) & (abs(dx) <= (dy + r) / 1.8)
    else:  # cross: a plus sign with arms 0.6 r thick
        thick = 0.3 * r
        inside = ((abs(dx) <= thick) & (abs(dy) <= r)) | ((abs(dy) <= thick) & (abs(dx) <= r))
    cover = inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    rgb, background = np.array(item.rgb, float), np.array(item.background, float)
    image = background[:, None, None] + (rgb - background)[:, None, None] * cover[None]
    return np.rint(image).astype(np.uint8)


def parse_caption(text: str) -> dict[str, str | None]:
    """The first shape, colour and position a caption names (None where it names none)."""
    words = text.lower()

    def first(names) -> str | None:
        found = [(words.find(name), -len(name), name) for name in names if name in words]
        return min(found)[2] if found else None

    return {"shape": first(SHAPES), "colour": first(COLOURS), "position": first(POSITIONS)}
