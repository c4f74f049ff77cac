"""Checks of a flow's inputs that need no heavy import, run before any Prefect or MLflow run starts.

The CLI calls them while parsing its flags, before it imports the flows (torch, Prefect and
MLflow take seconds to import); the flows call them again first thing, for runs started
from a deployment or the UI. Local paths are checked with ``os`` alone (importing
``storage.fs`` pulls in pyarrow, a second on a busy machine); object storage through it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

MANIFEST = "manifest.parquet"  # storage.fs.IngestLayout.manifest's name (a test keeps them equal)


class ConfigError(ValueError):
    """A config that cannot work; its message is one line that says what to do."""


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def exists(uri: str) -> bool:
    if _is_local(uri):
        return os.path.exists(uri.removeprefix("file://"))
    from storage import fs

    return fs.exists(uri)


def require_ingest_output(data: str) -> None:
    """``data`` must be an ingest output root (it holds manifest.parquet)."""
    manifest = os.path.join(data, MANIFEST) if _is_local(data) else data.rstrip("/") + "/" + MANIFEST
    if not exists(manifest):
        raise ConfigError(f"{data} holds no {MANIFEST}, so it is no ingest output: "
                          f"run `avff ingest --data <videos> --out {data}` first")  # fmt: skip


def model_presets() -> list[str]:
    """avff_model's preset names without importing torch: its config module is pure Python.

    ``import avff_model.config`` would run the package's ``__init__`` (the model, torch), so
    the module is loaded from its file; TrainSettings' validator, on the real registry, stays
    the authority (a test keeps both lists equal).
    """
    package = importlib.util.find_spec("avff_model")  # finds the package without running it
    path = os.path.join(package.submodule_search_locations[0], "config.py")
    spec = importlib.util.spec_from_file_location("_avff_model_presets", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.list_configs()


def require_path(path: str | None, what: str) -> None:
    if path and not exists(path):
        raise ConfigError(f"{what} {path} does not exist")


def require_folder(path: str, what: str) -> None:
    """A local ``path`` must be an existing folder (object storage is read, and checked, by the run)."""
    if not _is_local(path):
        return
    local = path.removeprefix("file://")
    if not os.path.exists(local):
        raise ConfigError(f"{what} {path} does not exist")
    if not os.path.isdir(local):
        raise ConfigError(f"{what} {path} is a file, not a folder")


def require_output_folder(path: str | None) -> None:
    """An output root must be a folder or creatable as one (storage.fs says why not)."""
    if path and _is_local(path):
        from storage import fs

        problem = fs.not_a_folder(path)
        if problem:
            raise ConfigError(problem)


MODEL_FORMS = (
    "NAME@alias, NAME@VERSION, NAME@latest, models:/NAME/VERSION, runs:/RUN_ID/PATH or an existing folder or file"
)


def model_uri(spec: str) -> str:
    """'avff-dfdc@latest' -> 'models:/avff-dfdc/latest'; '@3' -> version 3; '@champion' -> alias.

    A URI or an existing path is returned as is; anything else with a '/' (``avff-dfdc/1``, a
    missing folder) is no registry name and no file, so it is refused naming the forms that work.
    """
    if "://" in spec or spec.startswith(("models:/", "runs:/")) or os.path.exists(spec):
        return spec
    if "/" in spec or os.sep in spec or spec.endswith(".safetensors") or not spec.strip("@"):
        raise ConfigError(f"--model {spec}: no such folder or file, and no registered model name; use {MODEL_FORMS}")
    name, _, ref = spec.partition("@")
    ref = ref or "latest"
    return f"models:/{name}/{ref}" if ref == "latest" or ref.isdigit() else f"models:/{name}@{ref}"


def check_evaluate_inputs(data: str, model: str, out: str | None) -> None:
    """evaluate-avff's inputs that cannot work, before any run: the videos, the model's form, the output."""
    require_folder(data, "data folder")
    model_uri(model)
    require_output_folder(out)


def check_ingest_inputs(data: str, out: str, identities: str | None) -> None:
    """ingest-dfdc's inputs that cannot work, before any run: the videos' folder, the output, the identity map."""
    require_folder(data, "data folder")
    require_output_folder(out)
    require_path(identities, "identities file")


# errors a retry cannot change: the same input fails the same way (a storage blip is an OSError of another kind)
DETERMINISTIC = (ConfigError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def retry_unless_deterministic(task, task_run, state) -> bool:
    """A Prefect ``retry_condition_fn``: retry a failed task unless its error is :data:`DETERMINISTIC`."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as e:  # the failed state's own exception
            error = e
    return not isinstance(error, DETERMINISTIC)


RETRIES, RETRY_DELAYS_S = 2, (2, 10)  # a blip (storage, a model server) gets two more tries, 2 s then 10 s later


def retrying_task(name: str):
    """``@task`` for a Prefect task that is safe to run again: no result cache, :data:`RETRIES` retries after
    :data:`RETRY_DELAYS_S`, none for a :data:`DETERMINISTIC` error (:func:`retry_unless_deterministic`).

    Prefect is imported here, not at the top: the CLI imports this module before any flow.
    """
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(name=name, cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=list(RETRY_DELAYS_S),
                retry_condition_fn=retry_unless_deterministic)  # fmt: skip
