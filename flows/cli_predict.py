"""``avff predict VIDEO... [--model avff-dfdc@latest|PATH] [--json]``."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="score videos with a registered (or local) AVFF model")
    p.add_argument("videos", nargs="+")
    p.add_argument("--model", default="avff-dfdc@latest",
                   help="NAME@VERSION|NAME@latest|NAME@alias (MLflow registry), models:/ or runs:/ URI, or a local path")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per video on stdout")


def model_uri(spec: str) -> str:
    """'avff-dfdc@latest' -> 'models:/avff-dfdc/latest'; '@3' -> version 3; '@champion' -> alias."""
    if "://" in spec or spec.startswith(("models:/", "runs:/")) or os.path.exists(spec):
        return spec
    if "/" in spec or spec.endswith(".safetensors"):  # a path, not a registry name: do not ask MLflow for it
        raise FileNotFoundError(f"model {spec!r}: no such file or directory")
    name, _, ref = spec.partition("@")
    ref = ref or "latest"
    return f"models:/{name}/{ref}" if ref == "latest" or ref.isdigit() else f"models:/{name}@{ref}"


def verdict(p_fake: float | None, threshold: float | None) -> dict:
    """FAKE when P(FAKE) >= the model's threshold (chosen on val at training), else REAL; 0.5 without one."""
    source = "model" if threshold is not None else "default"
    t = 0.5 if threshold is None else float(threshold)
    label = None if p_fake is None else ("FAKE" if p_fake >= t else "REAL")
    return {"verdict": label, "threshold": t, "threshold_source": source}


def _predict(args) -> int:
    import mlflow
    from tqdm import tqdm

    from flows.train import resolve_tracking_uri
    from tasks.faces import FaceDetector
    from tasks.predict import preprocess_for, score_video
    from tasks.serving import load_model

    uri = model_uri(args.model)
    if uri.startswith(("models:/", "runs:/")):
        mlflow.set_tracking_uri(resolve_tracking_uri(args.tracking_uri))
    scorer = load_model(uri, device=args.device)
    pre = preprocess_for(scorer)
    failed = 0
    with FaceDetector(min_score=pre.min_det_score, detect_side=pre.detect_side) as detector:
        for path in tqdm(args.videos, desc="predict", unit="video", disable=len(args.videos) < 2 or not sys.stderr.isatty()):
            s = score_video(path, scorer, pre, detector)
            failed += s.p_fake is None
            decision = verdict(s.p_fake, scorer.threshold)
            if args.json:
                print(json.dumps({**asdict(s), **decision}), flush=True)
            elif s.p_fake is None:
                print(f"{path}: cannot score ({s.reason}): {s.error}", flush=True)
            else:
                print(f"{path}: {decision['verdict']}  P(FAKE) = {s.p_fake:.3f}, threshold {decision['threshold']:.3f}"
                      f"{'' if decision['threshold_source'] == 'model' else ' (default: the model carries none)'}  "
                      f"({s.clips} clips, face in {s.face_frac:.0%} of sampled frames)", flush=True)  # fmt: skip
    if failed:
        print(f"avff predict: {failed} of {len(args.videos)} videos could not be scored (reasons above)", file=sys.stderr)
    return 1 if failed else 0  # any video not scored: a script must notice


COMMANDS = {"predict": (_add_predict, _predict)}
