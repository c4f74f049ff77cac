"""Training checkpoints that can be shared without trusting whoever wrote them.

A checkpoint is a directory (local or object storage, via :mod:`storage.fs`) of two files:

- ``model.safetensors``  the weights; the model config JSON rides in its metadata
- ``state.pt``           everything else needed to resume exactly: optimizer, scheduler and
                         grad-scaler states, RNG states (python, numpy, torch, cuda), data
                         position (stage, epoch, global step), history, early-stopping state,
                         and the sha256 of the weights file it belongs to

``state.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``: a pickle that would run code is refused, never executed.
Each file is written atomically; ``state.pt`` goes last and names the weights' hash, so a
crash between the two writes is detected on load instead of pairing mismatched files.

:class:`CheckpointStore` never rewrites a checkpoint in place: each save is a new directory
``<root>/epoch-0003`` and ``last.json`` / ``best.json`` are pointers written atomically after
it is complete, so a crash at any moment leaves the previous ``last`` intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from storage import fs

WEIGHTS = "model.safetensors"
STATE = "state.pt"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, inconsistent, or refused as unsafe."""


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    config: dict  # the model config (AVFFConfig as a dict)
    state: dict = field(default_factory=dict)  # what save_checkpoint was given as `state`


def capture_rng() -> dict:
    """RNG states as tensors and plain lists (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where the device count matches)."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _weights_bytes(model: torch.nn.Module, config: dict) -> bytes:
    # clone: tied/shared storages are refused by safetensors; contiguous CPU copies are not
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return save_safetensors(
        tensors, metadata={"avff_config": json.dumps(config, sort_keys=True), "format": str(FORMAT)}
    )


def save_checkpoint(directory: str, model: torch.nn.Module, config: dict, state: dict) -> str:
    """Write ``directory/model.safetensors`` then ``directory/state.pt``; returns ``directory``.

    ``state`` must hold only tensors, numbers, strings, None and lists/tuples/dicts of them.
    """
    weights = _weights_bytes(model, config)
    fs.atomic_write_bytes(fs.join(directory, WEIGHTS), weights)
    payload = {"format": FORMAT, "weights_sha256": hashlib.sha256(weights).hexdigest(), "state": state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    fs.atomic_write_bytes(fs.join(directory, STATE), buf.getvalue())
    return directory


def load_weights(directory_or_file: str) -> tuple[dict[str, torch.Tensor], dict, bytes]:
    """Weights, model config and the raw file bytes of ``model.safetensors`` (safe: no pickle)."""
    uri = str(directory_or_file)
    if not uri.endswith(".safetensors"):
        direct = fs.join(uri, WEIGHTS)
        uri = direct if fs.exists(direct) else fs.join(resolve_checkpoint(uri), WEIGHTS)
    if not fs.exists(uri):
        raise CheckpointError(f"no weights at {uri}")
    raw = fs.read_bytes(uri)
    try:
        weights = load_safetensors(raw)
        # the metadata sits in the JSON header: 8-byte little-endian length, then the header
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{uri}: not a safetensors file ({exc})") from exc
    meta = header.get("__metadata__") or {}
    config = json.loads(meta["avff_config"]) if "avff_config" in meta else {}
    return weights, config, raw


def load_checkpoint(directory: str) -> Checkpoint:
    """Load a checkpoint (see :func:`resolve_checkpoint`); raises CheckpointError if unsafe."""
    directory = resolve_checkpoint(directory)
    state_uri = fs.join(directory, STATE)
    if not fs.exists(state_uri):
        raise CheckpointError(f"no {STATE} in {directory} (not a checkpoint, or an interrupted write)")
    try:
        payload = torch.load(io.BytesIO(fs.read_bytes(state_uri)), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"refused {state_uri}: not a weights-only checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{state_uri}: unknown checkpoint format")
    weights, config, raw = load_weights(directory)
    if hashlib.sha256(raw).hexdigest() != payload["weights_sha256"]:
        raise CheckpointError(f"{directory}: {WEIGHTS} does not belong to {STATE} (interrupted save?)")
    return Checkpoint(weights=weights, config=config, state=payload["state"])


_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class CheckpointStore:
    """Immutable checkpoint directories under ``root`` plus ``{tag}.json`` pointers to them."""

    def __init__(self, root: str):
        self.root = str(root)

    def path(self, name: str) -> str:
        if not _NAME_RE.match(name):
            raise CheckpointError(f"invalid checkpoint name {name!r}")
        return fs.join(self.root, name)

    def save(self, name: str, model: torch.nn.Module, config: dict, state: dict, tags: tuple[str, ...] = ()) -> str:
        """Write checkpoint ``name`` then point each of ``tags`` (e.g. "last", "best") at it."""
        directory = save_checkpoint(self.path(name), model, config, state)
        for tag in tags:
            self.mark(tag, name)
        return directory

    def mark(self, tag: str, name: str) -> None:
        self.path(name)  # validates the name
        fs.atomic_write_bytes(self.path(tag) + ".json", json.dumps({"checkpoint": name}).encode())

    def resolve(self, tag: str) -> str | None:
        """The directory ``tag`` points at, or None when there is no such pointer."""
        pointer = self.path(tag) + ".json"
        if not fs.exists(pointer):
            return None
        name = json.loads(fs.read_bytes(pointer)).get("checkpoint", "")
        return self.path(str(name))

    def adopt(self, source_root: str, tags: tuple[str, ...]) -> None:
        """Copy the checkpoints ``tags`` point at in another store (a resume source) into this
        one, for tags this store lacks; files are copied as bytes, never deserialised."""
        source = CheckpointStore(source_root)
        for tag in tags:
            src = source.resolve(tag)
            if src is None or self.resolve(tag) is not None:
                continue
            name = src.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
            for member in (WEIGHTS, STATE):
                fs.atomic_write_bytes(fs.join(self.path(name), member), fs.read_bytes(fs.join(src, member)))
            self.mark(tag, name)

    def prune(self, keep_tags: tuple[str, ...] = ("last", "best", "pretrained")) -> None:
        """Delete checkpoint directories no pointer refers to."""
        keep = {self.resolve(t) for t in keep_tags} - {None}
        fsys, root = fs.split_uri(self.root)
        if not fsys.exists(root):
            return
        for entry in fsys.ls(root, detail=True):
            if entry["type"] != "directory":
                continue
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if _NAME_RE.match(name) and self.path(name) not in keep and fs.exists(fs.join(self.path(name), STATE)):
                fsys.rm(entry["name"], recursive=True)


def resolve_checkpoint(uri: str) -> str:
    """A checkpoint directory from a directory, a ``{tag}.json`` pointer, or a training output
    directory (its ``checkpoints/last.json``)."""
    uri = str(uri)
    if fs.exists(fs.join(uri, STATE)):
        return uri
    if uri.endswith(".json") and fs.exists(uri):
        parent, tag = uri.rsplit("/", 1) if "/" in uri else (".", uri)
        found = CheckpointStore(parent).resolve(tag.removesuffix(".json"))
        if found:
            return found
    found = CheckpointStore(fs.join(uri, "checkpoints")).resolve("last")
    if found:
        return found
    raise CheckpointError(f"no checkpoint at {uri} (expected {STATE}, a pointer .json, or checkpoints/last.json)")
