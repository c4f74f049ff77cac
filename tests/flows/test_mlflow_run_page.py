"""Issue 25: MLflow's run page lists a training run's headline metrics first, read in headless Chromium.

MLflow 3.17's run overview lists a run's metrics in the order the tracking store returns them, the
order they were first logged (``RunViewMetricsTable``: ``values(latestMetrics)``, no sort; only
``system/`` metrics are split off into a group of their own). So the training run logs nothing on
itself before its summary at the best checkpoint, headline first (``tasks.train.finish.HEADLINE``);
its curves are logged live on its child run ``· curves`` and copied onto it when it finishes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from deployments.stack import free_port, wait_for_port
from tests.processes import stop

pytestmark = pytest.mark.slow  # starts an MLflow server and a browser

CHROMIUM = os.environ.get("AVFF_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def mlflow_ui(trained, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 over the trained fixture's store (its sqlite DB and artifacts)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (deployments/test.sh installs it with apt when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    port = free_port()
    log = open(tmp_path_factory.mktemp("logs") / "mlflow.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", trained["tracking_uri"], "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})  # fmt: skip
    try:
        wait_for_port(port, proc, timeout=240, name="mlflow server")
        yield f"http://127.0.0.1:{port}", sync_api
    finally:
        stop(proc)
        log.seek(0)
        print(log.read()[-3000:])


def _metrics_on_page(url: str, sync_api) -> list[str]:
    """The metric names of a run page's overview, top to bottom, as Chromium renders them."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 4000})
            page.goto(url)
            links = page.locator('a[href*="/model-metrics"]')  # each metric's name links to its chart
            links.first.wait_for(timeout=180_000)
            return [name.strip() for name in links.all_inner_texts()]
        finally:
            browser.close()


def test_the_run_page_lists_the_headline_first_and_keeps_every_curve(trained, mlflow_ui):
    from tasks.train.finish import HEADLINE
    from tasks.tracking.ui import ml_view

    base, sync_api = mlflow_ui
    client = mlflow.MlflowClient(trained["tracking_uri"])
    run = client.get_run(trained["run_id"])
    url = ml_view(f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    shown = _metrics_on_page(url, sync_api)
    assert sorted(shown) == sorted(run.data.metrics)  # the page shows every metric of the run, once
    headline = [k for k in HEADLINE if k in run.data.metrics]
    assert len(headline) >= 6 and shown[: len(headline)] == headline, shown
    # the curves are still the run's, every epoch of them, after the headline
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_video_auc")]
    assert epochs == [2, 3, 4] and shown.index("val_video_auc") > len(headline)
    assert not any("_step_" in k for k in shown)  # per-step curves: on the child run only
