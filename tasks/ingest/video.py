"""Decode exactly the frames ingest needs from a video with PyAV, bit-identical to a full decode.

Each requested time gets the frame whose presentation time is nearest to it. To find those
frames, the packets' timestamps are read first (demuxing is cheap). The decode then sends every
packet to the decoder, with the codec's own skip switch set per packet: frames that no other
frame references (``skip_frame="NONREF"``) are skipped unless they are a target. Reference
frames are always decoded, so every kept frame is exactly what a full decode gives.

Skipping B-frames (``"BIDIR"``), the shortcut this replaced, is NOT correct: DFDC's H.264
uses B-pyramid, so some B-frames are references, and dropping them smears the P-frames
predicted from them (median 25-35 dB PSNR against a full decode on real clips).

Times are seconds from the stream's first presented frame (``VideoInfo.start_time``), so a
stream whose timestamps start at 100 s (MPEG-TS) is read from its start, and the container's
edit lists (applied by FFmpeg's demuxer) are honoured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from dataclasses import dataclass

import av
from av.video.reformatter import VideoReformatter
from collections.abc import Iterator

import numpy as np

from tasks.ingest.config import HWACCELS, Limits
from tasks.ingest.stages import stage


class VideoError(Exception):
    """A video that cannot be used; ``reason`` is a stable code for quarantine.parquet."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    fps: float
    width: int  # upright (after rotation)
    height: int
    rotation: int  # degrees, as stored in the container's display matrix
    codec: str
    has_audio: bool
    audio_rate: int
    start_time: float = 0.0  # seconds: the video stream's first timestamp, t=0 for every other time


class HWAccelUnavailable(RuntimeError):
    """The hardware decoder asked for cannot start on this machine (not the video's fault)."""


def _hwaccel(name: str):
    """PyAV's hardware decoding through ``name``, with no silent fallback to the CPU decoder."""
    from av.codec.hwaccel import HWAccel

    if name not in HWACCELS:
        raise ValueError(f"hwaccel must be one of {', '.join(HWACCELS)} or None, got {name!r}")
    return HWAccel(device_type=name, allow_software_fallback=False)


def _open(path: str, hwaccel: str | None = None):
    """The container, its video decoder on ``hwaccel`` when named (None: the CPU)."""
    try:
        with stage("demux"):  # the demuxer reads the container's header and index
            if hwaccel is None:
                return av.open(path, metadata_errors="ignore")
            return av.open(path, metadata_errors="ignore", hwaccel=_hwaccel(hwaccel))
    except av.error.FFmpegError as e:
        if hwaccel is not None:
            _open(path).close()  # a bad file is refused as such; a file the CPU opens blames the device
            raise HWAccelUnavailable(f"{path}: hardware decoding hwaccel={hwaccel!r} cannot start here ({e})") from e
        raise _unreadable(path, e) from e
    except OSError as e:
        raise _unreadable(path, e) from e


def _unreadable(path: str, e: Exception) -> VideoError:
    if isinstance(e, av.error.InvalidDataError):
        return VideoError("undecodable", f"{path}: not a readable media file ({e})")
    return VideoError("undecodable", f"{path}: cannot open ({e})")


def probe(path: str, limits: Limits = Limits()) -> VideoInfo:
    """Container facts without decoding the stream (rotation needs one decoded frame)."""
    size = os.path.getsize(path)
    if size == 0:
        raise VideoError("empty_file", f"{path}: zero-byte file")
    if size > limits.max_bytes:
        raise VideoError("too_large", f"{path}: {size} bytes exceeds max_bytes={limits.max_bytes}")
    with _open(path) as c:
        if not c.streams.video:
            raise VideoError("no_video", f"{path}: no video stream (audio-only or not a video)")
        v = c.streams.video[0]
        audio = c.streams.audio[0] if c.streams.audio else None
        # a stream whose codec this FFmpeg build cannot decode has no codec context (and no size)
        for kind, stream in (("video", v), ("audio", audio)):
            if stream is not None and stream.codec_context is None:
                raise VideoError("undecodable", f"{path}: {kind} stream #{stream.index}: no decoder for its codec")
        if v.width * v.height > limits.max_pixels:
            raise VideoError("too_large", f"{path}: {v.width}x{v.height} exceeds max_pixels={limits.max_pixels}")
        fps = float(v.average_rate or v.guessed_rate or 0)
        duration = _duration(c, v)
        rotation = 0
        try:
            for frame in c.decode(v):
                rotation = int(round(frame.rotation or 0)) % 360
                break
        except av.error.FFmpegError as e:
            raise VideoError("undecodable", f"{path}: first video frame does not decode ({e})") from e
        width, height = (v.height, v.width) if rotation in (90, 270) else (v.width, v.height)
        if not math.isnan(duration) and duration > limits.max_duration_s:
            raise VideoError("too_long", f"{path}: {duration:.1f}s exceeds max_duration_s={limits.max_duration_s}")
        return VideoInfo(
            duration=duration,
            fps=fps,
            width=width,
            height=height,
            rotation=rotation,
            codec=v.codec_context.name,
            has_audio=audio is not None,
            audio_rate=int(audio.rate) if audio is not None else 0,
            start_time=_start_seconds(v) or 0.0,
        )


# containers whose duration FFmpeg reports as the end time (their timestamps count from 0, whatever
# the first one is): an mkv whose frames start at 100 s and last 10 s says 110 s
_DURATION_IS_END = frozenset({"matroska,webm"})


def _duration(c, v) -> float:
    """Seconds from the stream's first timestamp to its end; NaN when neither stream nor container says.

    A stream's own duration is a length already; a container's is one too except in
    :data:`_DURATION_IS_END`, where the video stream's start is subtracted.
    """
    if v.duration is not None and v.time_base:
        return float(v.duration * v.time_base)
    if not c.duration:
        return float("nan")
    total = c.duration / av.time_base
    start = _start_seconds(v)  # the video's start: t=0 of every time here (audio may start earlier)
    if c.format.name in _DURATION_IS_END and start:
        total -= start
    return total


def _start_seconds(stream) -> float | None:
    """The stream's first timestamp in seconds (t=0 of every time here); None when the container has none."""
    if stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply the display-matrix rotation (counter-clockwise degrees) to an (H, W, 3) frame."""
    k = {0: 0, 90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


# Codecs whose NONREF skip was checked bit-exact against a full decode (tests/tasks/ingest/test_video_fidelity.py).
# Any other codec is decoded whole: correct, only slower.
EXACT_SKIP_CODECS = frozenset({"h264", "hevc"})


def nearest_frames(frame_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame nearest each requested time; on a tie the earlier frame.

    frame_times: (M,) sorted presentation times; times: (N,) -> (N,) int indices into frame_times.
    """
    right = np.clip(np.searchsorted(frame_times, times, side="left"), 0, len(frame_times) - 1)
    left = np.clip(right - 1, 0, len(frame_times) - 1)
    use_left = np.abs(times - frame_times[left]) <= np.abs(frame_times[right] - times)
    return np.where(use_left, left, right)


KEEP_PACKET_BYTES = 256 << 20  # demuxed packets kept for the decode pass; past this, the file is read again


@dataclass(frozen=True)
class _Timeline:
    """The presented frames' timestamps, read by demuxing only, and the packets read."""

    pts: np.ndarray  # (M,) int64, sorted, in time_base units
    time_base: float
    origin: int  # pts of t=0 (the stream's start time)
    exact: bool  # every packet had a timestamp: frames can be chosen before decoding
    packets: list | None  # in decode order, up to the last one needed; None when too large to keep

    def seconds(self) -> np.ndarray:
        return (self.pts - self.origin) * self.time_base  # (M,)


def _timeline(c, v, until_s: float) -> _Timeline:
    with stage("demux"):
        return _read_timeline(c, v, until_s)


def _read_timeline(c, v, until_s: float) -> _Timeline:
    tb = float(v.time_base)
    origin = v.start_time
    pts: list[int] = []
    packets: list | None = []
    kept = 0
    exact = True
    for packet in c.demux(v):
        if packet.size == 0:  # the demuxer's final flush packet
            continue
        if packet.pts is None:
            exact = False
            break
        if packets is not None:
            packets.append(packet)
            kept += packet.size
            packets = packets if kept <= KEEP_PACKET_BYTES else None
        if packet.is_discard:  # decoded for reference only (edit lists): never presented
            continue
        if origin is None:
            origin = packet.pts
        pts.append(packet.pts)
        if (packet.dts if packet.dts is not None else packet.pts) - origin > (until_s + 1.0) / tb:
            break  # a second past the last requested time covers any B-frame reordering
    arr = np.unique(np.asarray(pts, dtype=np.int64))
    if origin is None:
        origin = int(arr[0]) if arr.size else 0
    return _Timeline(arr, tb, int(origin), exact and arr.size > 0, packets)


def presented_times(path: str, until_s: float, read_seconds: float = 60.0) -> np.ndarray:
    """(M,) seconds from the stream's start of every presented frame up to a second past until_s.

    What :func:`read_frames` picks from: a time in this array is read back as exactly that
    frame. Demuxing only where every packet has a timestamp; otherwise the frames are decoded
    (correct, slower), as :func:`read_frames` does then. Raises VideoError ('undecodable').
    """
    until = min(float(until_s), read_seconds)
    with _open(path) as c:
        v = c.streams.video[0]
        try:
            line = _timeline(c, v, until)
        except av.error.FFmpegError as e:
            raise VideoError("undecodable", f"{path}: video packets cannot be read ({e})") from e
        if line.exact:
            return line.seconds()
        v.thread_type = "NONE"
        start, times = _start_seconds(v), []
        try:
            for frame in c.decode(v):
                if frame.time is None:
                    continue
                start = frame.time if start is None else start
                times.append(frame.time - start)
                if times[-1] > until + 1.0:
                    break
        except av.error.FFmpegError as e:
            if not times:
                raise VideoError("undecodable", f"{path}: video stream does not decode ({e})") from e
    return np.unique(np.asarray(times, dtype=np.float64))


def sample_frames(
    path: str,
    times: list[float],
    *,
    rotation: int = 0,
    skip_nonref: bool = True,
    read_seconds: float = 60.0,
    max_pixels: int = 3840 * 2160,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames nearest each requested time -> ((N, H, W, 3) uint8 RGB upright, (N,) their times).

    Times are seconds from the stream's start. Every returned frame equals a full decode's frame
    at that timestamp. With ``skip_nonref`` the decoder skips frames that no other frame
    references unless they are a target; it decodes everything where it cannot tell (no packet
    timestamps, a codec outside :data:`EXACT_SKIP_CODECS`). Raises VideoError ('undecodable',
    'resolution_change', 'too_large').
    """
    frames, got = read_frames(path, times, rotation=rotation, skip_nonref=skip_nonref,
                              read_seconds=read_seconds, max_pixels=max_pixels)  # fmt: skip
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), got
    return np.stack(frames), got  # (N, H, W, 3)


def read_frames(
    path: str,
    times: list[float],
    *,
    rotation: int = 0,
    skip_nonref: bool = True,
    read_seconds: float = 60.0,
    max_pixels: int = 3840 * 2160,
    hwaccel: str | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`sample_frames` as a list of (H, W, 3) arrays, one per sorted time (a frame picked
    twice is the same array). Ingest uses this: no (N, H, W, 3) copy, whose fresh 300 MB per
    1080p video cost up to 0.2 CPU-s in page faults (docs/performance.md).

    ``hwaccel="cuda"``: the video decodes on the GPU (NVDEC), frames copied back for the same
    RGB conversion; raises :class:`HWAccelUnavailable` where that device cannot start."""
    if not times:
        return [], np.zeros(0)
    want = np.sort(np.asarray(times, dtype=np.float64))  # (N,)
    with _open(path, hwaccel) as c:
        v = c.streams.video[0]
        try:
            line = _timeline(c, v, min(float(want[-1]), read_seconds))
        except av.error.FFmpegError as e:
            raise VideoError("undecodable", f"{path}: video packets cannot be read ({e})") from e
        if line.exact:
            index = nearest_frames(line.seconds(), want)
            order = line.pts[index].tolist()
            if line.packets is not None:  # decode what was read, with this container's decoder
                packets = [*line.packets, None]  # None flushes the frames the decoder still holds
                frames = _decode_targets(path, v, packets, order, skip_nonref, max_pixels, rotation)
            else:
                with _open(path, hwaccel) as again:
                    v2 = again.streams.video[0]
                    frames = _decode_targets(path, v2, again.demux(v2), order, skip_nonref, max_pixels, rotation)
            if frames is not None:
                return frames, line.seconds()[index]
            # a target packet gave no frame (corrupt data, a decoder that renumbers pts): decode everything
    return _decode_all_nearest(path, want, read_seconds, max_pixels, rotation, hwaccel)


def _check_size(path: str, frame, first: tuple[int, int] | None, max_pixels: int) -> tuple[int, int]:
    size = (frame.width, frame.height)
    if first is not None and size != first:
        raise VideoError(
            "resolution_change", f"{path}: frame size changes mid-stream ({first[0]}x{first[1]} -> {size[0]}x{size[1]})"
        )
    if size[0] * size[1] > max_pixels:
        raise VideoError("too_large", f"{path}: {size[0]}x{size[1]} frame exceeds max_pixels={max_pixels}")
    return size


class RGBConverter:
    """Decoded frames -> (H, W, 3) uint8 RGB, upright, through one swscale context kept for them all.

    The pixels of ``frame.to_ndarray(format="rgb24")`` (the fidelity tests compare against it on
    every real clip), at 0.6x its CPU: that call builds a new swscale context and slice-thread pool
    for every frame (bench/convert.py, docs/performance.md). One thread, as the decoder: ingest
    runs one video per core. Hardware frames are copied back first, as ``to_ndarray`` does. Not
    thread-safe: one per decode.
    """

    def __init__(self) -> None:
        self._sws = VideoReformatter()

    def __call__(self, frame, rotation: int = 0) -> np.ndarray:
        with stage("convert"):
            return _upright(self._sws.reformat(frame, format="rgb24", threads=1).to_ndarray(), rotation)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
FRAME_HEAP_BLOCK = 32 << 20  # blocks up to this size come from the heap (glibc's most): a 4K RGB frame is 25 MB
FRAME_HEAP_KEEP = 1 << 30  # freed heap memory kept for reuse, up to this much


def keep_frame_memory() -> bool:
    """Let this process reuse the memory of freed frames for the next ones; False where it cannot (not glibc).

    A 1080p RGB frame (6 MB) is above glibc's threshold for a private mapping, so each converted
    frame was fresh memory whose ~1,500 pages fault in when swscale first writes them, and go back
    to the kernel when the video is done: ~73,000 page faults and ~0.16 CPU-s per video in ingest,
    several times the conversion itself (docs/performance.md). Served from the heap, which is not
    trimmed, the next video's frames reuse those pages. The price: the process keeps its peak heap
    between videos (one video's frames, ~0.3 GB at 1080p). Process-wide: a worker calls it once
    when it is set up (flows.ingest.UnitWorker), never at import. Pixels do not change.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl, macOS)
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, FRAME_HEAP_BLOCK)) and bool(mallopt(_M_TRIM_THRESHOLD, FRAME_HEAP_KEEP))


def _decode_targets(path: str, v, packets, order: list[int], skip_nonref: bool, max_pixels: int, rotation: int):
    """Frames at the pts in ``order`` -> [(H, W, 3) RGB], or None when a target gave no frame.

    Reference frames are always decoded; a non-reference frame only when it is a target.
    """
    slots: dict[int, list[int]] = {}
    for i, pts in enumerate(order):
        slots.setdefault(pts, []).append(i)
    frames: list = [None] * len(order)
    done = 0
    v.thread_type = "NONE"  # one video per core (Ray fans out): threads would only add CPU
    cc = v.codec_context
    skip = skip_nonref and cc.name in EXACT_SKIP_CODECS
    size = None
    to_rgb = RGBConverter()
    try:
        with stage("decode"):
            for packet in packets:
                if packet is not None and packet.size == 0:
                    packet = None  # the demuxer's flush packet
                if skip:  # the decoder reads this per packet
                    cc.skip_frame = "DEFAULT" if packet is None or packet.pts in slots else "NONREF"
                for frame in cc.decode(packet):
                    size = _check_size(path, frame, size, max_pixels)
                    rows = slots.pop(frame.pts, None)
                    if rows is None:
                        continue
                    rgb = to_rgb(frame, rotation)  # (H, W, 3)
                    for row in rows:
                        frames[row] = rgb
                    done += len(rows)
                if not slots:
                    break
    except av.error.FFmpegError as e:
        if done == 0:
            raise VideoError("undecodable", f"{path}: video stream does not decode ({e})") from e
    return frames if not slots else None


def _decode_all_nearest(
    path: str, want: np.ndarray, read_seconds: float, max_pixels: int, rotation: int, hwaccel: str | None = None
):
    """The reference path: decode every frame up to the last requested time, keep the nearest ones."""
    times: list[float] = []
    frames: dict[int, np.ndarray] = {}
    best: dict[int, int] = {}  # requested index -> frame number
    to_rgb = RGBConverter()
    with _open(path, hwaccel) as c:
        v = c.streams.video[0]
        v.thread_type = "NONE"
        size = None
        try:
            for t, frame in _timed(c, v):
                size = _check_size(path, frame, size, max_pixels)
                times.append(t)
                k = len(times) - 1
                improved = [i for i, w in enumerate(want) if i not in best or abs(t - w) < abs(times[best[i]] - w)]
                if improved:
                    frames[k] = to_rgb(frame, rotation)
                    for i in improved:
                        best[i] = k
                    frames = {j: f for j, f in frames.items() if j in best.values()}  # drop frames nobody picks
                if t > want[-1] or t > read_seconds:
                    break
        except av.error.FFmpegError as e:
            if not times:
                raise VideoError("undecodable", f"{path}: video stream does not decode ({e})") from e
    if not best:
        raise VideoError("undecodable", f"{path}: no decodable video frames")
    order = [best[i] for i in range(len(want))]
    return [frames[k] for k in order], np.asarray([times[k] for k in order], dtype=np.float64)


def frames_within(
    path: str, spans: list[tuple[float, float]], *, rotation: int = 0, read_seconds: float = 60.0,
    max_pixels: int = 3840 * 2160, hwaccel: str | None = None,
) -> Iterator[tuple[float, np.ndarray]]:  # fmt: skip
    """Every frame shown within any of ``spans`` ([start, end] seconds from the stream's start, as
    :func:`read_frames`' times), in time order: (time, (H, W, 3) uint8 upright RGB). Decoded one by
    one up to the last span's end, so one full frame is held at a time. Raises VideoError."""
    last = min(max(end for _, end in spans), read_seconds)
    to_rgb = RGBConverter()
    with _open(path, hwaccel) as c:
        v = c.streams.video[0]
        size = None
        try:
            for t, frame in _timed(c, v):
                if t > last:
                    return
                if any(a <= t <= b for a, b in spans):
                    size = _check_size(path, frame, size, max_pixels)
                    yield t, to_rgb(frame, rotation)
        except av.error.FFmpegError as e:
            raise VideoError("undecodable", f"{path}: video stream does not decode ({e})") from e


def _timed(c, v):
    """(seconds from the stream's start, frame) of every decoded frame that has a time; the start is the
    stream's declared one, else the first frame's."""
    start = _start_seconds(v)
    for frame in _decoded(c, v):
        if frame.time is None:
            continue
        start = frame.time if start is None else start
        yield frame.time - start, frame


def _decoded(c, v):
    """Every frame of ``v``, its demux and decode charged to the "decode" stage."""
    frames = c.decode(v)
    while True:
        with stage("decode"):
            frame = next(frames, None)
        if frame is None:
            return
        yield frame
