"""The logging interface training writes to, so that ``tasks/`` never imports a tracker.

The flow injects an MLflow adapter (:mod:`tasks.tracking.mlflow_adapter`); tests and scripts use
:class:`InMemoryLogger`. Metrics always carry a step; numbers that make no curve (baselines,
one-off summaries) go in a table (rows of dicts, shown as a table in MLflow's artifact view).
"""

from __future__ import annotations

import json
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


@dataclass
class JsonlLogger(InMemoryLogger):
    """An InMemoryLogger that also appends every metric call to ``path`` as a JSON line
    (``{"step": s, "metrics": {...}}``): readable from another process, e.g. a rank-0 child."""

    path: str = ""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        super().log_metrics(metrics, step)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "metrics": {k: float(v) for k, v in metrics.items()}}) + "\n")


def read_jsonl_metrics(path: str) -> dict[str, list[tuple[int, float]]]:
    """What a :class:`JsonlLogger` wrote: ``metrics[key]`` as a list of (step, value)."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            for k, v in rec["metrics"].items():
                out.setdefault(k, []).append((rec["step"], v))
    return out


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
