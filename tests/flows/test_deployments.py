"""prefect.yaml: every deployment's entrypoint imports and its default parameters validate as the flow's config."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["entrypoint"] for d in DEPLOYMENTS])
def test_deployment_parameters_are_a_valid_config(deployment):
    module, _, name = deployment["entrypoint"].rpartition(".")
    flow = getattr(importlib.import_module(module), name)
    config_type = inspect.signature(flow.fn).parameters["config"].annotation
    if isinstance(config_type, str):  # `from __future__ import annotations`
        config_type = getattr(importlib.import_module(module), config_type)
    config_type.model_validate(deployment["parameters"]["config"])


def test_every_flow_the_readme_names_is_deployed():
    entrypoints = {d["entrypoint"] for d in DEPLOYMENTS}
    assert {"flows.ingest.ingest_dfdc", "flows.train.train_avff", "flows.evaluate.evaluate_avff"} <= entrypoints
