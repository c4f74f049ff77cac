"""``avff web [--model avff-dfdc@champion] [--port 8765]``: the drop-a-video page on 127.0.0.1.

A thin Starlette app over :mod:`tasks.serve.web` (the page, the upload checks, the scorer):
``GET /`` the page, ``POST /score`` one video's record (the raw file as the body), ``GET /health``.
`avff stack up` starts it beside Prefect and MLflow (deployments/stack.py).
"""

from __future__ import annotations

import sys

HOST = "127.0.0.1"  # never another interface: the page scores whatever it is sent
DEFAULT_PORT = 8765


def _add_web(sub) -> None:
    from tasks.serve.web import DEFAULT_MAX_BYTES

    p = sub.add_parser("web", help="serve the drop-a-video page (verdict, per-clip timeline, face crops)",
                       description="A page on 127.0.0.1 where a person drops a video and sees what `avff predict` "
                                   "says of it. The model is loaded at the first upload, and again when its alias moves.")  # fmt: skip
    p.add_argument("--model", default="avff-dfdc@champion", help="NAME@alias, NAME@VERSION, models:/..., or a "
                   "folder written by `avff train` (default: %(default)s)")  # fmt: skip
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest upload (default: %(default)s)")


def model_key(spec: str, tracking_uri: str | None):
    """A function naming the model ``spec`` means now: a registry alias or ``latest`` resolved to its
    version (so the page reloads when training moves it), a path as itself."""
    from flows.preflight import model_uri

    uri = model_uri(spec)
    if not uri.startswith("models:/"):
        return lambda: uri

    def key() -> str:
        from tasks.tracking.mlflow_tracker import MLflowTracker
        from tasks.tracking.tracker import resolve_tracking_uri

        name, _, alias = uri.removeprefix("models:/").partition("@")
        name, _, version = name.partition("/")
        tracker = MLflowTracker(resolve_tracking_uri(tracking_uri))
        try:
            if alias:
                return tracker.version_uri(name, tracker.model_version(name, alias).version)
            if version == "latest":
                return tracker.version_uri(name, max(v.version for v in tracker.model_versions(name)))
        except Exception:  # not registered yet: loading says so
            return uri
        return uri

    return key


def make_app(score, max_bytes: int):
    """The Starlette app: ``score(data: bytes, name: str) -> dict`` runs in a worker thread."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from tasks.serve.web import UploadRefused, check_upload, page, upload_name

    async def index(request: Request):
        return HTMLResponse(page())

    async def health(request: Request):
        return PlainTextResponse("ok")

    async def score_upload(request: Request):
        name = upload_name(request.headers.get("x-filename"))
        try:
            length = request.headers.get("content-length")
            check_upload(name, int(length) if length and length.isdigit() else None, max_bytes)
            body = bytearray()
            async for chunk in request.stream():  # a client that lied about its length is cut off here
                body += chunk
                check_upload(name, len(body), max_bytes)
            check_upload(name, len(body), max_bytes)
        except UploadRefused as e:
            return JSONResponse(e.to_json(name), status_code=e.status)
        try:
            record = await run_in_threadpool(score, bytes(body), name)
        except LookupError as e:  # no such registered model (yet)
            return JSONResponse(UploadRefused("no_model", str(e).strip("'\"")).to_json(name), status_code=503)
        except Exception as e:  # the registry is down, the model files are broken: the page says so
            first = (str(e).strip().splitlines() or [""])[0][:500]
            message = f"cannot load the model: {type(e).__name__}: {first}"
            return JSONResponse(UploadRefused("model_unavailable", message).to_json(name), status_code=503)
        return JSONResponse(record, status_code=200 if record["p_fake"] is not None else 422)

    routes = [Route("/", index), Route("/health", health), Route("/score", score_upload, methods=["POST"])]
    return Starlette(routes=routes)


def _web(args) -> int:
    import os

    import uvicorn

    # a registry that is down answers the page in seconds, not after MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

    from flows.cli.predict import load_scorer
    from tasks.serve.web import UploadScorer

    scorer = UploadScorer(lambda: load_scorer(args.model, args.tracking_uri, args.device),
                          model_key(args.model, args.tracking_uri))  # fmt: skip
    print(f"avff web: http://{HOST}:{args.port}/ (model {args.model})", file=sys.stderr, flush=True)
    uvicorn.run(make_app(scorer, args.max_bytes), host=HOST, port=args.port, log_level="warning")
    return 0


COMMANDS = {"web": (_add_web, _web)}
