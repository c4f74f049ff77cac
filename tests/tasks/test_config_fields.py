"""The one walk of nested config classes, below IngestSettings' refusals and the CLI's flattened flags."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass

from tasks.config_fields import config_fields, leaf_fields


@dataclass(frozen=True)
class _Inner:
    depth: int = Field(1, description="deepest")


@dataclass(frozen=True)
class _Middle:
    size: int = Field(2, description="a leaf")
    inner: _Inner = Field(default_factory=_Inner, description="a nested dataclass")


class _Outer(BaseModel):
    middle: _Middle = Field(default_factory=_Middle)
    mode: str | None = None


def test_every_leaf_is_found_at_its_dotted_place():
    leaves = leaf_fields(_Outer, "top")
    assert list(leaves) == ["top.middle.size", "top.middle.inner.depth", "top.mode"]
    assert leaves["top.middle.inner.depth"].description == "deepest"


def test_only_config_classes_have_fields():
    assert set(config_fields(_Outer)) == {"middle", "mode"} and set(config_fields(_Middle)) == {"size", "inner"}
    assert config_fields(int) is None and config_fields(str | None) is None and config_fields(list[int]) is None
    assert leaf_fields(int, "x") == {}


def test_the_ingest_refusal_and_the_ingest_flags_name_the_same_places():
    from flows.cli.ingest import ingest_flags
    from tasks.ingest.settings import preprocessing_places

    flattened = {dest for dest in ingest_flags().flags if dest.startswith("preprocess.")}
    assert set(preprocessing_places().values()) == flattened
    assert preprocessing_places()["max_bytes"] == "preprocess.limits.max_bytes"
