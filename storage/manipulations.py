"""The vocabulary of manipulation types: what a FAKE's ``manipulation`` field (``ClipMeta``, ``ManifestRow``) names.

DFDC's own metadata names none (the field is None, and any name a DFDC-format ``metadata.json`` gives is
kept as written). These are the types the synthetic generator writes, one per fake
(``tasks/synthetic/dfdc_sample.py``); training's pseudo-fakes say which of them each kind imitates
(``tasks/train/pseudo_fakes.py`` ``STAND_INS``, keyed by these names); a training run may hold types out
(``TrainSettings.exclude_manipulations``) and evaluation reports per type. The order keys the
generator's random streams: append only.
"""

MANIPULATIONS = (
    "lipsync_offset",  # audio shifted 100-500 ms against the mouth
    "audio_swap",  # audio of another identity's clip; mouth follows the original audio
    "mouth_decorrelated",  # mouth follows an unrelated envelope
    "face_blend",  # another identity's face pasted in with a soft mask and a colour mismatch
    "visual_artifact",  # blur + blockiness inside the face box only
    "audio_pitch",  # pitch and formants jump mid-clip
)
