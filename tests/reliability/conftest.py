"""Shared material for the fault-injection suite: talking-face footage, media writers, servers.

Footage is rendered once per session by ``tasks.synthetic.dfdc_sample`` (two identities, 7 s, 160 px,
25 fps) and decoded back to frames and audio, so each test can re-encode the same content
in another container, codec, orientation or timing and compare what ingest makes of it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

FPS = 25
AUDIO_RATE = 44100
# Prefect start-up timeout and Ray auth/registration settings: tests/conftest.py


@dataclass(frozen=True)
class Footage:
    """Decoded talking-face clips: frames (N, H, W, 3) uint8 and mono audio (n,) float32."""

    a: np.ndarray  # identity A, the main face of every derived clip
    b: np.ndarray  # identity B, a second face
    audio: np.ndarray  # A's speech at AUDIO_RATE
    source: Path  # A as generated (H.264 + AAC in mp4)


def _decode_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (N, H, W, 3)


@pytest.fixture(scope="session")
def footage(tmp_path_factory) -> Footage:
    from tasks.ingest.audio import decode_audio
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = make_dfdc_sample(tmp_path_factory.mktemp("footage"), n_real=2, parts=0, duration_s=7.0,
                            size=(160, 160), fps=FPS, seed=3, manipulations=())  # fmt: skip
    a, b = sorted(root.glob("*.mp4"))
    return Footage(_decode_frames(a), _decode_frames(b), decode_audio(str(a), AUDIO_RATE, max_seconds=60), a)


def write_av(path: Path, frames: np.ndarray, *, times_s=None, fps: float = FPS, audio=None,
             vcodec: str = "libx264", acodec: str = "aac", audio_rate: int = AUDIO_RATE,
             options: dict | None = None) -> Path:  # fmt: skip
    """Encode frames (N, H, W, 3) uint8 with per-frame timestamps ``times_s`` (variable frame
    rate) or a constant ``fps``, plus optional mono audio, in any container/codec PyAV has.

    ``tasks.synthetic.dfdc_sample.write_video`` covers constant-rate H.264/HEVC/MJPEG with AAC; this
    covers what it does not (VFR, Opus in WebM, container options such as faststart).
    """
    times_s = np.arange(len(frames)) / fps if times_s is None else np.asarray(times_s)
    with av.open(str(path), "w", options=options or {}) as out:
        vs = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        vs.codec_context.thread_count = 1
        aus = None
        if audio is not None:
            aus = out.add_stream(acodec, rate=audio_rate, layout="mono")
        for frame, t in zip(frames, times_s):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = int(round(t * 1000)), Fraction(1, 1000)
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        if aus is not None:
            af = av.AudioFrame.from_ndarray(
                np.asarray(audio, np.float32)[None, :], format="flt", layout="mono"
            )  # (1, n)
            af.sample_rate, af.pts = audio_rate, 0
            out.mux(aus.encode(af))
            out.mux(aus.encode())
    return path


def write_audio_only(path: Path, audio: np.ndarray, rate: int = AUDIO_RATE) -> Path:
    with av.open(str(path), "w") as out:
        aus = out.add_stream("aac", rate=rate, layout="mono")
        af = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")  # (1, n)
        af.sample_rate, af.pts = rate, 0
        out.mux(aus.encode(af))
        out.mux(aus.encode())
    return path


def remux(src: Path, dst: Path, *, options: dict | None = None, title: str | None = None) -> Path:
    """The packets of ``src`` in a new container ``dst`` (muxer ``options``, a ``title`` tag): another
    file, the same video."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options or {}) as out:
        if title is not None:
            out.metadata["title"] = title
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:  # the demuxer's end-of-stream flush packets
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def remux_faststart(src: Path, dst: Path) -> Path:
    """The same packets with the mp4 index (moov) moved to the front, as streaming sites write."""
    return remux(src, dst, options={"movflags": "faststart"})


@pytest.fixture(scope="session")
def media() -> SimpleNamespace:
    """The writers above for test modules (a conftest is not importable under importlib mode)."""
    return SimpleNamespace(write_av=write_av, write_audio_only=write_audio_only, remux=remux, remux_faststart=remux_faststart,
                           fps=FPS, audio_rate=AUDIO_RATE)  # fmt: skip


# --------------------------------------------------------------------------- processes


def descendants(root: int) -> list[int]:
    """root and every process below it, from /proc (no psutil in the lock)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill9(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="session")
def procs() -> SimpleNamespace:
    return SimpleNamespace(descendants=descendants, cmdline=cmdline, kill9=kill9)


@pytest.fixture(scope="session")
def flow_env() -> dict[str, str]:
    """Start this session's Prefect API; the environment for subprocesses that run flows.

    In-process flows use the same server (Prefect's ephemeral one, bound to 127.0.0.1);
    without the URL every subprocess would start its own (~30 s each on this machine).
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=300)
        url = server.api_url
    return {**os.environ, "PREFECT_API_URL": url, "PYTHONDONTWRITEBYTECODE": "1"}
