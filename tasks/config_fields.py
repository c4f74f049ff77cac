"""The fields of a nested config class, walked to its leaves: below the configs that nest and the CLI that flattens.

:class:`tasks.ingest.settings.IngestSettings` names the place of each preprocessing field with it, and
``flows/cli/fields.py`` makes one flag of each leaf of a flattened group with it: one walk, so that a
flag and the place a refusal names cannot disagree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def config_fields(config: Any) -> dict[str, FieldInfo] | None:
    """The fields of a nested config class (a pydantic model or pydantic dataclass), None for any other type."""
    if isinstance(config, type) and issubclass(config, BaseModel):
        return config.model_fields
    return getattr(config, "__pydantic_fields__", None) if isinstance(config, type) else None


def leaf_fields(config: type, prefix: str) -> dict[str, FieldInfo]:
    """{dotted place: field} of every field of ``config``, the fields of its nested configs in their place
    (``leaf_fields(PreprocessConfig, "preprocess")`` has ``preprocess.limits.max_bytes``)."""
    out: dict[str, FieldInfo] = {}
    for name, info in (config_fields(config) or {}).items():
        nested = config_fields(info.annotation) is not None
        out.update(leaf_fields(info.annotation, f"{prefix}.{name}") if nested else {f"{prefix}.{name}": info})
    return out
