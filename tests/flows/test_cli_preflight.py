"""ingest, evaluate and predict refuse inputs that cannot work before any flow run: one line, exit status 2.

"No run" is checked where it would show: PREFECT_HOME is a fresh folder and PREFECT_API_URL is unset,
so a flow run would start a temporary Prefect server whose database lands there.
"""

import os
import subprocess
import sys

import pytest

from flows.preflight import ConfigError, model_uri


def _avff(tmp_path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def _refused(tmp_path, out: subprocess.CompletedProcess, command: str, *phrases: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"avff {command}: error: ")
    for phrase in phrases:
        assert phrase in out.stderr
    assert not list((tmp_path / "prefect-home").glob("*.db"))  # no Prefect server, so no flow run
    assert not (tmp_path / "mlflow.db").exists()


@pytest.fixture
def a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    return str(tmp_path / "a-file")


@pytest.mark.parametrize("command", ["ingest", "evaluate"])
def test_a_missing_data_folder_is_one_line(tmp_path, command):
    extra = ["--out", str(tmp_path / "o")]
    out = _avff(tmp_path, command, "--data", str(tmp_path / "nonexistent"), *extra)
    _refused(tmp_path, out, command, f"data folder {tmp_path / 'nonexistent'} does not exist")


@pytest.mark.parametrize("command", ["ingest", "evaluate"])
def test_data_that_is_a_file_is_one_line(tmp_path, a_file, command):
    out = _avff(tmp_path, command, "--data", a_file, "--out", str(tmp_path / "o"))
    _refused(tmp_path, out, command, f"data folder {a_file} is a file, not a folder")


@pytest.mark.parametrize("command", ["ingest", "evaluate"])
def test_an_out_that_is_a_file_is_one_line(tmp_path, a_file, command):
    (tmp_path / "videos").mkdir()
    out = _avff(tmp_path, command, "--data", str(tmp_path / "videos"), "--out", a_file)
    _refused(tmp_path, out, command, f"output folder {a_file} is an existing file")


def test_ingest_refuses_a_missing_identities_file(tmp_path):
    (tmp_path / "videos").mkdir()
    out = _avff(tmp_path, "ingest", "--data", str(tmp_path / "videos"), "--out", str(tmp_path / "o"),
                "--identities", str(tmp_path / "ids.csv"))  # fmt: skip
    _refused(tmp_path, out, "ingest", f"identities file {tmp_path / 'ids.csv'} does not exist")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("model", ["avff-dfdc/1", "./no-such-run/", "model.safetensors"])
def test_a_model_that_is_neither_a_name_nor_a_path_names_the_forms(tmp_path, command, model):
    (tmp_path / "videos").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"")  # a file: predict looks at the model once it has a video to score
    args = ["--data", str(tmp_path / "videos")] if command == "evaluate" else [str(tmp_path / "a.mp4")]
    out = _avff(tmp_path, command, *args, "--model", model)
    _refused(tmp_path, out, command, f"--model {model}: no such folder or file", "NAME@alias", "models:/NAME/VERSION")


@pytest.mark.parametrize(
    ("spec", "uri"),
    [("avff-dfdc", "models:/avff-dfdc/latest"), ("avff-dfdc@3", "models:/avff-dfdc/3"),
     ("avff-dfdc@champion", "models:/avff-dfdc@champion"), ("models:/avff-dfdc/1", "models:/avff-dfdc/1")],
)  # fmt: skip
def test_registry_forms_become_model_uris(spec, uri):
    assert model_uri(spec) == uri


def test_an_existing_folder_is_a_model_path(tmp_path):
    assert model_uri(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ConfigError, match="NAME@alias"):
        model_uri("@")


def test_a_deterministic_error_is_not_retried_but_a_blip_is():
    from prefect.states import Failed

    from flows.preflight import retry_unless_deterministic

    for error in (ConfigError("no"), FileNotFoundError("no metadata.json"), NotADirectoryError("x")):
        assert not retry_unless_deterministic(None, None, Failed(data=error))
    assert retry_unless_deterministic(None, None, Failed(data=OSError("connection reset")))


def test_the_flows_tasks_that_touch_storage_retry_a_blip_twice_without_a_cache():
    from prefect.cache_policies import NO_CACHE

    from flows import evaluate, ingest
    from flows.preflight import retry_unless_deterministic

    tasks = {"scan-and-plan": ingest.scan_and_plan, "process-units": ingest.process_units,
             "write-index": ingest.write_index, "shortcut-probes": evaluate.probe_model,
             "score-videos": evaluate.score_videos}  # fmt: skip
    for name, t in tasks.items():
        assert t.name == name
    for t in tasks.values():
        assert (t.retries, t.retry_delay_seconds, t.cache_policy) == (2, [2, 10], NO_CACHE), t.name
        assert t.retry_condition_fn is retry_unless_deterministic, t.name


@pytest.mark.slow  # starts a Prefect server
def test_a_retrying_task_retries_a_blip_but_not_a_config_error(prefect_server):
    from flows.preflight import retrying_task

    calls: list[type] = []

    @retrying_task("flaky")
    def flaky(error: type[Exception]) -> int:
        calls.append(error)
        if len(calls) < 3:
            raise error("the same call may work again" if error is OSError else "it never will")
        return len(calls)

    fast = flaky.with_options(retry_delay_seconds=0)  # the retries and their condition stay
    assert fast(OSError) == 3
    calls.clear()
    with pytest.raises(ConfigError, match="never"):
        fast(ConfigError)
    assert calls == [ConfigError]


@pytest.mark.slow  # starts a Prefect server
def test_an_ingest_of_a_folder_without_videos_scans_once(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.ingest import ingest_dfdc
    from tasks.ingest.settings import IngestSettings

    (tmp_path / "empty").mkdir()
    config = IngestSettings(data=str(tmp_path / "empty"), out=str(tmp_path / "o"), executor="local", progress=False)
    state = ingest_dfdc(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(FileNotFoundError, match="no metadata.json and no dfdc_train_part_"):
        state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert [(r.name.rsplit("-", 1)[0], r.run_count) for r in runs] == [("scan-and-plan", 1)]  # one attempt, no retries


HEAVY = ("numpy", "pyarrow", "torch", "prefect", "mlflow", "ray", "cv2", "av", "mediapipe")


@pytest.mark.parametrize("command", ["ingest", "evaluate", "cv", "ablate", "train"])
def test_a_refusal_loads_no_heavy_library(tmp_path, command):
    """What keeps a refusal under a second: the flags and the preflight import none of the libraries a run
    needs (pyarrow alone, through storage.fs, was ~0.45 CPU-s of the CLI's 0.87 before it loaded lazily)."""
    args = ["--data", str(tmp_path / "nonexistent")] + (
        ["--out", str(tmp_path / "o")] * (command in ("ingest", "evaluate"))
    )
    probe = (f"import sys\nfrom flows.cli import main\ntry:\n    main({[command, *args]!r})\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "error:" in out.stderr and out.stdout.strip() == "[]", (out.stdout, out.stderr)
