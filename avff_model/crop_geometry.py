"""Where things are in a face crop: the one definition every user imports.

Ingest writes square face crops of ``face_size`` pixels. With landmarks on
(``PreprocessConfig.crop="landmarks"``) each crop is *aligned*: rotated so the eyes are level and
scaled so the eyes' midpoint and the mouth's centre land on :data:`EYE_Y` and :data:`MOUTH_Y`.
Without landmarks (the detector box, ``crop="box"``, and every shard written before landmarks
existed) the face is roughly centred and the same numbers hold on average (they were measured on
box crops of real faces: docs/ingest.md, "Landmarks").

A clip whose landmarks were found stores its own mouth box (``ClipMeta.mouth_box``, crop pixels
``[x0, y0, x1, y1]``); :func:`clip_mouth_box` gives it, or :func:`default_mouth_box` for a clip
that has none. The sync branch, the pseudo-fakes, the hand-made statistics and the probes all
read the mouth region through here, so training, serving and evaluation look at the same pixels.

Fractions are of (H, W) of the crop, rows from the top.
"""

from __future__ import annotations

from collections.abc import Sequence

# the aligned-crop template (fractions of the crop side)
EYE_Y = 0.31  # the eyes' midpoint, on the vertical centre line
MOUTH_Y = 0.655  # the mouth's centre (the mean of the lip landmarks), on the same line
EYE_MOUTH = MOUTH_Y - EYE_Y  # the distance that fixes the scale: eyes-to-mouth is stable under yaw

# the default mouth box, as (top, bottom, left, right) fractions: centred on MOUTH_Y, sized from
# EYE_MOUTH so an open mouth and a box-cropped face off the template still fall inside (on box
# crops of real faces the lips are 0.25 wide, 0.12 high, their centre at rows 0.61-0.69, p10-p90)
MOUTH_HALF_HEIGHT = 0.38 * EYE_MOUTH
MOUTH_HALF_WIDTH = 0.55 * EYE_MOUTH
MOUTH_BOX = (MOUTH_Y - MOUTH_HALF_HEIGHT, MOUTH_Y + MOUTH_HALF_HEIGHT, 0.5 - MOUTH_HALF_WIDTH, 0.5 + MOUTH_HALF_WIDTH)

# the face ellipse (texture branch: inside vs border; pseudo-fakes: the blended region)
FACE_CENTRE = (0.5, 0.5)  # (row, column)
FACE_RADII = (0.42, 0.34)  # (half-height, half-width)

# what a stored mouth box is padded by around the lip landmarks, as a fraction of its size
MOUTH_PAD = 0.15

Box = Sequence[float]  # [x0, y0, x1, y1], crop pixels


def default_mouth_box(size: int) -> list[float]:
    """The template's mouth box in pixels of a ``size``² crop: ``[x0, y0, x1, y1]``."""
    top, bottom, left, right = MOUTH_BOX
    return [left * size, top * size, right * size, bottom * size]


def clip_mouth_box(mouth_box: Box | None, size: int) -> list[float]:
    """A clip's stored mouth box (crop pixels), or the template's when it has none (box crops, old shards)."""
    return [float(v) for v in mouth_box] if mouth_box is not None else default_mouth_box(size)


def mouth_fractions(mouth_box: Box | None, size: int) -> tuple[float, float, float, float]:
    """A clip's mouth box as (top, bottom, left, right) fractions of its crop, clipped to [0, 1]."""
    x0, y0, x1, y1 = clip_mouth_box(mouth_box, size)
    top, bottom, left, right = (min(max(v / size, 0.0), 1.0) for v in (y0, y1, x0, x1))
    if bottom <= top or right <= left:
        raise ValueError(f"mouth box {list(mouth_box or [])} is empty inside a {size}x{size} crop")
    return top, bottom, left, right


def mirrored(fractions: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """(top, bottom, left, right) fractions -> the same box in the horizontally flipped crop."""
    top, bottom, left, right = fractions
    return top, bottom, 1.0 - right, 1.0 - left


def pixel_slices(fractions: tuple[float, float, float, float], h: int, w: int) -> tuple[slice, slice]:
    """(top, bottom, left, right) fractions -> (row slice, column slice) of an (H, W) image, at least 1 px each."""
    top, bottom, left, right = fractions
    eps = 1e-4  # a box that went through float32 (a batch's tensor) cuts the same pixels as the float64 one
    r0, c0 = int(h * top + eps), int(w * left + eps)
    return slice(r0, max(int(h * bottom + eps), r0 + 1)), slice(c0, max(int(w * right + eps), c0 + 1))
