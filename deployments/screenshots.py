"""The README's screenshots (docs/img), taken in headless Chromium from a running stack after the demo.

    bash deployments/demo.sh
    uv run python -m deployments.screenshots [--out docs/img] [--video FILE]

Reads the stack's addresses as every client does (``avff stack env``: ``$AVFF_HOME``, the
``AVFF_*_PORT`` variables) and the newest runs over the servers' REST APIs, then saves:

- ``mlflow-runs.png``: experiment ``avff``'s runs in MLflow's model-training view;
- ``mlflow-run.png``: the newest training run's overview, its metrics searched for ``test_`` (the
  headline metrics beside their baselines);
- ``mlflow-model-version.png``: the model card of the version that run registered (skipped, and
  said, when the gate refused it);
- ``prefect-ingest-run.png``, ``ingest-refused.png``, ``ingest-summary.png``: the newest
  ``ingest-dfdc`` flow run's artifacts tab and its two artifacts in the Prefect UI;
- ``web-verdict.png``: the drop-a-video page after ``--video`` (default: a FAKE of the demo's
  sample) is dropped on it.

Chromium is Debian's (``AVFF_CHROMIUM``, default /usr/bin/chromium) driven by playwright (the
test extra), as the page's test does. A PNG over :data:`MAX_BYTES` is re-saved with a 256-colour
palette, so each stays small enough for the repository.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

from deployments.runs import latest_mlflow_run, model_versions
from deployments.stack import Stack, http_json
from tasks.tracking.ui import ml_view

CHROMIUM = os.environ.get("AVFF_CHROMIUM", "/usr/bin/chromium")
MAX_BYTES = 300_000
VIEWPORT = {"width": 1400, "height": 900}
HEADLINE_FILTER = "test_"  # the run page's metric search: test metrics and their baselines
# MLflow 3.17's UI keeps in local storage its telemetry notice's dismissal (tasks/tracking/ui.py) and
# whether its assistant panel opened once (it opens by itself on a first visit, over half the page)
MLFLOW_QUIET = (
    "localStorage.setItem('mlflow.telemetry.info.alert.dismissed_v1', 'true');"
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
)


def save_png(png: bytes, path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Write ``png``; one larger than ``max_bytes`` is re-encoded with a 256-colour palette. Returns its size."""
    if len(png) > max_bytes:
        from PIL import Image  # matplotlib's dependency

        buf = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(buf, "PNG", optimize=True)
        png = buf.getvalue()
    path.write_bytes(png)
    return len(png)


def newest_flow_run(api: str, flow: str) -> dict:
    """The newest run of the flow named ``flow`` (REST ``flow_runs/filter``)."""
    runs = http_json(f"{api}/flow_runs/filter", {"flows": {"name": {"any_": [flow]}}, "sort": "START_TIME_DESC",
                                                 "limit": 1})  # fmt: skip
    if not runs:
        raise LookupError(f"no {flow} flow run at {api}: run `bash deployments/demo.sh` first")
    return runs[0]


def flow_run_artifacts(api: str, flow_run_id: str) -> dict[str, dict]:
    """key -> artifact of one flow run (its tasks' included)."""
    found = http_json(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found if a.get("key")}


def demo_fake(sample: Path) -> Path:
    """A FAKE video of the demo's sample (its metadata.json), for the page."""
    for meta_path in sorted(sample.glob("**/metadata.json")):
        meta = json.loads(meta_path.read_text())
        for name, entry in sorted(meta.items()):
            if entry.get("label") == "FAKE" and (meta_path.parent / name).is_file():
                return meta_path.parent / name
    raise FileNotFoundError(f"{sample}: no FAKE video listed in a metadata.json; pass --video")


class Shooter:
    """One headless Chromium; :meth:`shot` opens a URL, waits for a text and saves the page."""

    def __init__(self, browser, out: Path):
        self.browser, self.out = browser, out

    def open(self, url: str, wait_text: str | None = None, init: str | None = None):
        page = self.browser.new_page(viewport=VIEWPORT)
        if init:
            page.add_init_script(init)
        page.goto(url)
        if wait_text:
            page.get_by_text(wait_text, exact=False).first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)  # charts and lazy tables settle
        return page

    def save(self, page, name: str, full_page: bool = False) -> None:
        size = save_png(page.screenshot(full_page=full_page), self.out / name)
        print(f"{self.out / name}: {size // 1000} kB", file=sys.stderr)
        page.close()


def _close_mlflow_assistant(page) -> None:
    """MLflow 3.17 may open its assistant side panel (MLFLOW_QUIET asks it not to): close it when it is there."""
    panel = page.get_by_text("MLflow Assistant", exact=False)
    if panel.count():
        close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
        if close.count():
            close.first.click()
            page.wait_for_timeout(500)


def mlflow_shots(s: Shooter, uri: str, experiment: str, model: str) -> None:
    run = latest_mlflow_run(uri, experiment)
    if run is None:
        raise LookupError(f"no run in MLflow experiment {experiment!r} at {uri}: run the demo first")
    eid, rid, name = run["info"]["experiment_id"], run["info"]["run_id"], run["info"]["run_name"]
    page = s.open(ml_view(f"{uri}/#/experiments/{eid}/runs"), name, MLFLOW_QUIET)
    _close_mlflow_assistant(page)
    s.save(page, "mlflow-runs.png")
    page = s.open(ml_view(f"{uri}/#/experiments/{eid}/runs/{rid}"), "Metrics", MLFLOW_QUIET)
    _close_mlflow_assistant(page)
    # the overview lists metrics in first-logged order (the epoch curves); its search box shows the headline
    page.get_by_placeholder("Search metrics").fill(HEADLINE_FILTER)
    page.wait_for_timeout(1000)
    page.get_by_text("Metrics (", exact=False).first.scroll_into_view_if_needed()
    s.save(page, "mlflow-run.png")
    versions = model_versions(uri, model, rid)
    if not versions:
        print(f"mlflow-model-version.png: not taken, run {rid} registered no version of {model}", file=sys.stderr)
        return
    page = s.open(ml_view(f"{uri}/#/models/{model}/versions/{versions[0]['version']}"), "Description", MLFLOW_QUIET)
    _close_mlflow_assistant(page)
    s.save(page, "mlflow-model-version.png")


def prefect_shots(s: Shooter, api: str, flow_run_id: str | None = None) -> None:
    ui = api.removesuffix("/api")
    run = http_json(f"{api}/flow_runs/{flow_run_id}") if flow_run_id else newest_flow_run(api, "ingest-dfdc")
    page = s.open(f"{ui}/runs/flow-run/{run['id']}", "Artifacts")
    page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
    page.get_by_text("ingest-refused").first.wait_for(timeout=60_000)
    page.mouse.wheel(0, 300)  # the artifact cards whole, under the run's graph
    page.wait_for_timeout(1000)
    s.save(page, "prefect-ingest-run.png")
    artifacts = flow_run_artifacts(api, run["id"])
    for key in ("ingest-refused", "ingest-summary"):
        if key not in artifacts:
            print(f"{key}.png: not taken, flow run {run['name']} has no {key} artifact", file=sys.stderr)
            continue
        page = s.open(f"{ui}/artifacts/artifact/{artifacts[key]['id']}", key)
        s.save(page, f"{key}.png")


def web_shot(s: Shooter, url: str, video: Path) -> None:
    page = s.open(url, "Drop a video")
    page.set_input_files("#file", str(video))
    page.wait_for_selector("#result:not([hidden]), #error:not(:empty)", timeout=600_000)
    if page.inner_text("#error"):
        print(f"web-verdict.png: the page refused {video.name}: {page.inner_text('#error')}", file=sys.stderr)
    page.wait_for_timeout(1000)  # the face crops decode
    s.save(page, "web-verdict.png", full_page=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.screenshots", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--video", type=Path, help="the video dropped on the page (default: a FAKE of data/sample)")
    p.add_argument("--sample", type=Path, default=Path("data/sample"), help="the demo's sample (for --video)")
    p.add_argument(
        "--ingest-run",
        help="the ingest-dfdc flow run id to show (default: the newest; a rerun skips "
        "complete shards, so the first shows the work)",
    )
    p.add_argument("--experiment", default="avff")
    p.add_argument("--model", default="avff-dfdc")
    p.add_argument("--only", nargs="+", choices=("mlflow", "prefect", "web"), default=("mlflow", "prefect", "web"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright  # the test extra

    stack = Stack()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            s = Shooter(browser, args.out)
            if "mlflow" in args.only:
                mlflow_shots(s, stack.mlflow_uri, args.experiment, args.model)
            if "prefect" in args.only:
                prefect_shots(s, stack.prefect_api, args.ingest_run)
            if "web" in args.only:
                web_shot(s, stack.web_url, args.video or demo_fake(args.sample))
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
