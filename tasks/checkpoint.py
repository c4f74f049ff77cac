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
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
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
    return save_safetensors(tensors, metadata={"avff_config": json.dumps(config, sort_keys=True), "format": str(FORMAT)})


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
    uri = directory_or_file if str(directory_or_file).endswith(".safetensors") else fs.join(directory_or_file, WEIGHTS)
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
    """Load a checkpoint written by :func:`save_checkpoint`; raises CheckpointError if unsafe."""
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
