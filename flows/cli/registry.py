"""Is a registry ``--model`` there? Asked over MLflow's REST API (stdlib only), before any import or run.

``avff predict`` and ``avff evaluate`` default to ``avff-dfdc@champion``. Right after a demo whose model the
gate refused, nothing is registered: without this check ``evaluate`` started a flow run that failed
(Prefect's log lines, a failed run left behind) and ``predict`` imported MLflow for seconds before saying
"train one with `avff train`", which the user just did. Here either is one line, naming what the registry
holds and what to pass instead. Only an http(s) tracking server is asked (a sqlite or file store is read
by the command itself, which says the same through :func:`flows.cli.predict.load_scorer`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from flows.links import resolve_tracking_uri
from flows.preflight import ConfigError, model_uri

NOTHING_REGISTERED = (
    "`avff train` registers a model only if it beats the prior on val (the first line of its report.md says "
    "why not; `--register-if always` registers anyway), or score a training output folder: --model DIR"
)


def _get(uri: str, route: str, **query: str) -> dict | None:
    """GET ``uri/api/2.0/mlflow/route?query`` as JSON; None when MLflow answers that it does not exist."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/{route}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404 or "RESOURCE_DOES_NOT_EXIST" in e.read().decode(errors="replace"):
            return None
        raise ConfigError(f"MLflow at {uri} answered {e.code} to {route}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"no MLflow server answers at {uri} ({reason}): start the stack with `avff stack up` "
                          f"or set MLFLOW_TRACKING_URI / --tracking-uri") from None  # fmt: skip


def _holds(model: dict) -> str:
    """'versions 1, 2 and aliases @champion = 1' of a registered model's REST record."""
    versions = sorted(int(v["version"]) for v in model.get("latest_versions") or [])
    aliases = ", ".join(f"@{a['alias']} = {a['version']}" for a in sorted(model.get("aliases") or [], key=str))
    held = f"latest version {max(versions)}" if versions else "no version"
    return held + (f" and aliases {aliases}" if aliases else "")


def require_registered(spec: str, tracking_uri: str | None) -> None:
    """``spec`` (``NAME@alias``, ``NAME@VERSION``, ``NAME@latest``) names something the tracking server's
    registry holds; a path, a ``runs:/`` URI or a non-http tracking store is left to the command."""
    uri = model_uri(spec)
    tracking = resolve_tracking_uri(tracking_uri)
    if not uri.startswith("models:/") or not tracking.startswith(("http://", "https://")):
        return
    name, _, ref = spec.partition("@")
    ref = ref or "latest"
    found = _get(tracking, "registered-models/get", name=name)
    if found is None:
        raise ConfigError(f"--model {spec}: no model named {name!r} is registered at {tracking}: {NOTHING_REGISTERED}")
    model = found["registered_model"]
    if ref == "latest":
        ok = bool(model.get("latest_versions"))
    elif ref.isdigit():
        ok = _get(tracking, "model-versions/get", name=name, version=ref) is not None
    else:
        ok = any(a["alias"] == ref for a in model.get("aliases") or [])
    if not ok:
        raise ConfigError(f"--model {spec}: {name} at {tracking} has {_holds(model)}; name one of those, "
                          f"or a training output folder: --model DIR")  # fmt: skip
