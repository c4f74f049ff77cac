"""The drop-a-video page's logic, free of any web framework: the page, the upload checks, the answer.

The server (:mod:`flows.cli.web`) only moves bytes: ``GET /`` is :func:`page`, ``POST /score``
(the raw file as the body, its name in ``X-Filename``) is :func:`check_upload` then the model's
:func:`tasks.serve.predict.score_bytes` through :class:`UploadScorer`, answered with
:func:`tasks.serve.predict.result`, the record ``avff predict --json`` prints.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable


DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # an upload above this is refused before it is read whole
PAGE_FILE = Path(__file__).with_name("page.html")


class UploadRefused(Exception):
    """An upload refused before scoring; ``reason`` is one of ingest's stable codes (docs/reliability.md)."""

    def __init__(self, reason: str, message: str, status: int = 400):
        super().__init__(message)
        self.reason, self.status = reason, status

    def to_json(self, name: str) -> dict:
        return {"video": name, "p_fake": None, "verdict": None, "reason": self.reason, "error": str(self)}


def page() -> str:
    """The page: plain HTML and JavaScript, no external resources."""
    return PAGE_FILE.read_text()


def upload_name(header: str | None) -> str:
    """The file name the page sent (``X-Filename``, URL-encoded): its last path part, at most 200 characters."""
    from urllib.parse import unquote

    name = Path(unquote(header or "")).name.strip()
    return name[:200] or "upload"


def check_upload(name: str, size: int | None, max_bytes: int) -> None:
    """Refuse an upload by its announced size (``Content-Length``) before reading it."""
    if size is None:
        raise UploadRefused("unreadable", f"{name}: the upload has no Content-Length", 411)
    if size == 0:
        raise UploadRefused("empty_file", f"{name}: zero-byte file")
    if size > max_bytes:
        raise UploadRefused("too_large", f"{name}: {size} bytes exceeds the page's limit of {max_bytes} bytes "
                                         f"({max_bytes / 2**20:.0f} MiB)", 413)  # fmt: skip


class UploadScorer:
    """Scores uploads with the model ``load()`` returns, loaded at the first upload (a stack has
    no model until training registers one) and again whenever ``key()`` changes (an alias moved).

    ``load() -> Scorer`` may raise LookupError naming what is missing; ``key() -> str`` names the
    model ``load`` would return now. One upload at a time: the face detector is not thread-safe.
    """

    def __init__(self, load: Callable, key: Callable[[], str] = lambda: "model"):
        self._load, self._key = load, key
        self._lock = threading.Lock()
        self._loaded: tuple[str, object, object, object] | None = None  # (key, scorer, preprocess, detector)

    def _model(self):
        key = self._key()
        if self._loaded is None or self._loaded[0] != key:
            from tasks.ingest.preprocess import face_detector
            from tasks.serve.predict import preprocess_for  # torch: not for the CLI's flags (flows/cli/web.py)

            scorer = self._load()
            pre = preprocess_for(scorer)
            if self._loaded is not None:
                self._loaded[3].close()
            self._loaded = (key, scorer, pre, face_detector(pre))
        return self._loaded[1:]

    def __call__(self, data: bytes, name: str) -> dict:
        """The upload's record: :func:`tasks.serve.predict.result` of it, plus the model it was scored with."""
        from tasks.serve.predict import result, score_bytes

        with self._lock:
            scorer, pre, detector = self._model()
            record = result(score_bytes(data, name, scorer, pre, detector, faces=True), scorer.threshold)
            return {**record, "model": self._loaded[0]}
