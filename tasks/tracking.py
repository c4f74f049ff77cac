"""The logging interface training writes to, so that ``tasks/`` never imports a tracker.

The flow injects an MLflow adapter (:mod:`tasks.mlflow_logger`); tests and scripts use
:class:`InMemoryLogger`. Metrics always carry a step; numbers that make no curve (baselines,
one-off summaries) go in a table (rows of dicts, shown as a table in MLflow's artifact view).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Logger(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None: ...


@dataclass
class InMemoryLogger:
    """Keeps everything in dicts: ``metrics[key]`` is a list of (step, value)."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: list[tuple[str, str | None]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((int(step), float(v)))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(path), artifact_path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        self.tables[artifact_file] = [dict(r) for r in rows]

    def last(self, key: str) -> float:
        return self.metrics[key][-1][1]


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b": v}``; lists/tuples/None become strings (MLflow params)."""
    flat: dict[str, Any] = {}
    for k, v in params.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten_params(v, name))
        elif isinstance(v, (str, int, float, bool)):
            flat[name] = v
        else:
            flat[name] = str(v)
    return flat
