"""``avff predict VIDEO... [--model avff-dfdc@champion|PATH] [--json]``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING

from flows.preflight import MODEL_FORMS, model_uri

if TYPE_CHECKING:
    from tasks.tracking.tracker import Tracker


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="score videos with a registered (or local) AVFF model",
        description="FAKE / REAL per video with the model's own threshold; runs here, no flow run.",
    )
    p.add_argument("videos", nargs="+", help="video files to score")
    p.add_argument("--model", default="avff-dfdc@champion", help=f"{MODEL_FORMS} (default: %(default)s)")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per video on stdout")


@contextlib.contextmanager
def quiet_libraries():
    """Python keeps writing to stderr; native libraries (TFLite's delegate notes, mediapipe's absl
    warnings) write to file descriptor 2, which points at /dev/null meanwhile. Also off: MLflow's
    download bars, its INFO logs and its type-hint warning. ``--debug`` skips all of this."""
    from tasks.tracking.tracker import quiet_tracker

    quiet_tracker()
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = python_stderr


def load_scorer(spec: str, tracking_uri: str | None, device: str = "auto"):
    """The scorer for ``--model``; a registry name/version/alias that does not exist is one clear error."""
    from tasks.serve.scorer import load_model
    from tasks.tracking.mlflow_tracker import MLflowTracker
    from tasks.tracking.tracker import NotInRegistry

    uri = model_uri(spec)
    if not uri.startswith(("models:/", "runs:/")):
        return load_model(uri, device=device)
    tracker = MLflowTracker.connect(tracking_uri)  # load_model downloads models:/ URIs from it
    try:
        with tracker.registry_lookup():
            return load_model(uri, device=device)
    except NotInRegistry:
        raise LookupError(f"model {spec!r} is not in the registry at {tracker.uri}: {_known(tracker, spec)}") from None


def _known(tracker: Tracker, spec: str) -> str:
    """What the registry does hold under spec's name: its versions and aliases."""
    name = spec.partition("@")[0]
    try:
        versions = sorted(v.version for v in tracker.model_versions(name))
        aliases = tracker.aliases(name)
    except Exception:
        versions, aliases = [], {}
    if not versions:
        return f"no model named {name!r} (train one with `avff train`)"
    named = ", ".join(f"@{a} = {v}" for a, v in sorted(aliases.items()))
    return f"{name} has versions {', '.join(map(str, versions))}" + (f" and aliases {named}" if named else "")


def _predict(args) -> int:
    from flows.cli.fields import refused
    from flows.preflight import ConfigError

    from flows.cli.registry import require_registered

    if not any(os.path.isfile(v) for v in args.videos):  # nothing to score: said first, with no server asked
        return refused("predict", "no video to score: " + "; ".join(map(_not_a_video, args.videos)))
    try:  # the model's form, and that the registry holds it, before libraries load: one line at once
        require_registered(args.model, args.tracking_uri)
    except ConfigError as e:
        return refused("predict", str(e))
    with contextlib.nullcontext() if getattr(args, "debug", False) else quiet_libraries():
        return _score_all(args)


def _not_a_video(path: str) -> str:
    """Why ``path`` is no video file, in score_video's words."""
    return f"{path}: {'not a regular file' if os.path.exists(path) else 'no such file'}"


def _score_all(args) -> int:
    from tqdm import tqdm

    from tasks.ingest.preprocess import face_detector
    from tasks.serve.decision import verdict
    from tasks.serve.predict import preprocess_for, result, score_video

    scorer = load_scorer(args.model, args.tracking_uri, args.device)
    pre = preprocess_for(scorer)
    failed = 0
    with face_detector(pre) as detector:
        for path in tqdm(
            args.videos, desc="predict", unit="video", disable=len(args.videos) < 2 or not sys.stderr.isatty()
        ):
            s = score_video(path, scorer, pre, detector)
            failed += s.p_fake is None
            decision = verdict(s.p_fake, scorer.threshold)
            if args.json:
                print(json.dumps(result(s, scorer.threshold)), flush=True)
            elif s.p_fake is None:
                print(f"{path}: cannot score ({s.reason}): {s.error}", flush=True)
            else:
                print(f"{path}: {decision['verdict']}  P(FAKE) = {s.p_fake:.3f}, threshold {decision['threshold']:.3f}"
                      f"{'' if decision['threshold_source'] == 'model' else ' (default: the model carries none)'}  "
                      f"({s.clips} clip{'' if s.clips == 1 else 's'}, face in {s.face_frac:.0%} of sampled frames{_faces(s)})", flush=True)  # fmt: skip
    if failed:
        print(
            f"avff predict: {failed} of {len(args.videos)} videos could not be scored (reasons above)", file=sys.stderr
        )
    return 1 if failed else 0  # any video not scored: a script must notice


def _faces(s) -> str:
    """How a video of several faces got its score: each face's, the max being the video's."""
    if len(s.face_p_fake) < 2:
        return ""
    return (
        f"; {len(s.face_p_fake)} faces, P(FAKE) " + " / ".join(f"{p:.3f}" for p in s.face_p_fake) + ", the max counts"
    )


COMMANDS = {"predict": (_add_predict, _predict)}
