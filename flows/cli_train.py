"""``avff train``: flags generated from :class:`tasks.train.settings.TrainSettings` -> the train-avff flow.

Every field of TrainSettings is a flag, built from the field itself: ``--field-name`` (three
keep their short spellings: ``--out``, ``--model``, ``--override KEY=JSON``), its type, bounds,
choices, default and description; a bool is ``--x`` / ``--no-x``; a nested augmentation
setting takes a preset name or a JSON object (merged into the file's or default value;
``--mixup-alpha`` and ``--cutmix-alpha`` set the two Mixup/CutMix strengths directly).
``--config run.yaml`` reads fields from a YAML or JSON file (the names of the flow's
parameters); flags override it. A flag left out keeps the file's value, else the field's
default, so the CLI has no defaults of its own.

:func:`add_train_arguments` and :func:`checked_train_config` are shared with ``avff cv`` and
``avff ablate`` (flows/cli_experiments.py), so every training setting is a flag of all three.

Bad input fails before any Prefect or MLflow run starts, as one line with exit status 2:
numbers and their bounds, ``--model``, ``--data`` (no manifest: run ``avff ingest`` first) and
the keys of ``--config`` while parsing, in well under a second (this module imports neither
torch nor a flow); the rest (``--monitor``, ``--fusion``, ...) when TrainSettings validates.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import operator
import sys
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from tasks.train.settings import AUGMENT_PRESETS, TrainSettings

FIELDS: dict[str, FieldInfo] = TrainSettings.model_fields
# fields whose flag is not --field-name (the spellings users, docs and scripts know)
_FLAG_OF = {"output_dir": "--out", "model_preset": "--model", "overrides": "--override"}
# MixAugment fields with a flag of their own (docs/experiments.md), dest "mix.<field>"
_MIX_FLAGS = ("mixup_alpha", "cutmix_alpha")
_KEY_OF = {info.alias or name: name for name, info in FIELDS.items()} | {name: name for name in FIELDS}


def flag_of(key: str) -> str:
    """The flag of a TrainSettings field, by field name or alias: ``model_config`` -> ``--model``."""
    name = _KEY_OF.get(key, key)
    return _FLAG_OF.get(name, "--" + name.replace("_", "-"))


_OPS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _bounds(info: FieldInfo) -> list[tuple[str, float]]:
    """The field's bounds as (``ge``|``gt``|``le``|``lt``, bound): pydantic keeps them as constraint objects."""
    return [(name, getattr(m, name)) for m in info.metadata for name in _OPS if hasattr(m, name)]


def _bounded(kind: type, bounds: Iterable[tuple[str, float]]):
    """An argparse type: a ``kind`` number within ``bounds``, refused while parsing."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        for name, bound in bounds:
            symbol, holds = _OPS[name]
            if not holds(value, bound):
                raise argparse.ArgumentTypeError(f"must be {symbol} {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _ingest_output(text: str) -> str:
    """An argparse type: a folder ``avff ingest`` wrote (it holds manifest.parquet)."""
    from flows.preflight import ConfigError, require_ingest_output

    try:
        require_ingest_output(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _preset(text: str) -> str:
    """An argparse type: a model preset name of avff_model (``tiny``, ``laptop``, ``paper``)."""
    from flows.preflight import model_presets

    known = model_presets()
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown model preset {text!r}; known: {', '.join(known)}")
    return text


def _key_json(text: str) -> tuple[str, Any]:
    """An argparse type: ``KEY=JSON`` -> (key, value); a value that is no JSON stays a string (fusion=late)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _preset_or_json(text: str) -> str | dict:
    """An argparse type: a preset name, or a JSON object of the nested setting's fields."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object: {e}") from None


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML or JSON file of TrainSettings fields -> {field name: value}; an unknown key raises ValueError."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(loaded).__name__}")
    for key in loaded:
        if key not in _KEY_OF:
            close = difflib.get_close_matches(str(key), list(_KEY_OF), n=1)
            raise ValueError(f"{path}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return {_KEY_OF[k]: v for k, v in loaded.items()}


def _config_file(text: str) -> dict[str, Any]:
    try:
        return read_config_file(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _plain(annotation: Any) -> Any:
    """``int | None`` -> ``int``: the type a flag parses (None is the default, never typed in)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _help(info: FieldInfo) -> str:
    if info.is_required():
        return f"{info.description} (required: here or in --config)"
    default = info.get_default(call_default_factory=True)
    if dataclasses.is_dataclass(default):  # the augmentation settings default to "off"
        shown = "off" if default == type(default)() else json.dumps(dataclasses.asdict(default))
    else:
        shown = json.dumps(default) if isinstance(default, dict) else str(default)
    return f"{info.description} (default: {shown})".replace("%", "%%")


def _field_argument(name: str, info: FieldInfo) -> tuple[list[str], dict[str, Any]]:
    """(flags, add_argument kwargs) of one field; default SUPPRESS: a flag left out is absent from the namespace."""
    kind = _plain(info.annotation)
    kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": _help(info)}
    if name == "data":
        kw["type"] = _ingest_output
    elif name == "model_preset":
        kw["type"] = _preset
    elif get_origin(kind) is dict:
        kw.update(action="append", type=_key_json, metavar="KEY=JSON")
    elif kind is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif get_origin(kind) is Literal:
        kw["choices"] = get_args(kind)
    elif kind in (int, float):
        kw["type"] = _bounded(kind, _bounds(info))
    elif dataclasses.is_dataclass(kind):
        kw.update(type=_preset_or_json, metavar="PRESET|JSON" if name in AUGMENT_PRESETS else "JSON")
    if "action" not in kw and "choices" not in kw and "metavar" not in kw:
        kw["metavar"] = flag_of(name).removeprefix("--").replace("-", "_").upper()
    return [flag_of(name)], kw


def add_train_arguments(p: argparse.ArgumentParser, *, skip: Iterable[str] = ()) -> None:
    """Every TrainSettings field as a flag (except ``skip``: fields the command sets itself), plus ``--config``."""
    one_line_errors(p)
    p.add_argument("--config", type=_config_file, default={}, metavar="FILE",
                   help="a YAML or JSON file of settings (the flow's parameter names); flags override it")
    g = p.add_argument_group("training settings (tasks/train/settings.py, docs/experiments.md)")
    for name, info in FIELDS.items():
        if name not in skip:
            flags, kw = _field_argument(name, info)
            g.add_argument(*flags, **kw)
    defaults = FIELDS["mix"].get_default(call_default_factory=True)
    for sub in _MIX_FLAGS:
        g.add_argument("--" + sub.replace("_", "-"), dest=f"mix.{sub}", type=_bounded(float, [("ge", 0)]), metavar="ALPHA",
                       default=argparse.SUPPRESS, help=f"mix.{sub}: alpha of the Beta(alpha, alpha) of "
                       f"{sub.split('_')[0]}; 0 off (default: {getattr(defaults, sub)})")  # fmt: skip


def _nested(fields: dict[str, Any], name: str) -> dict[str, Any]:
    """A nested setting's current value as a dict: the file's (a preset name resolved), else the default."""
    value = fields.get(name, FIELDS[name].get_default(call_default_factory=True))
    if isinstance(value, str):
        value = AUGMENT_PRESETS.get(name, {}).get(value, value)
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)


def train_fields(args: argparse.Namespace) -> dict[str, Any]:
    """{field name: value} of ``--config`` overlaid with the flags given (mappings and nested JSON merge)."""
    fields = dict(args.config)
    given = vars(args)
    for name in FIELDS:
        if name not in given:
            continue
        value = given[name]
        if name == "overrides":
            value = {**fields.get(name, {}), **dict(value)}
        elif isinstance(value, dict):  # a nested setting's JSON: merged onto the file's value, else the default
            value = {**_nested(fields, name), **value}
        fields[name] = value
    mix = {k.removeprefix("mix."): v for k, v in given.items() if k.startswith("mix.")}
    if mix:
        fields["mix"] = {**_nested(fields, "mix"), **mix}
    return fields


def train_config(args: argparse.Namespace) -> TrainSettings:
    """The TrainSettings the file and flags describe (validated)."""
    return TrainSettings.model_validate(train_fields(args))


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad flag as one line (not the usage of 60 flags), exit status 2."""

    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    parser.error = error  # argparse has no hook for this but overriding the method
    return parser


def usage_error(command: str, error: Exception) -> int:
    """Print a config error as one line naming the flag; exit status 2 (like argparse)."""
    errors = getattr(error, "errors", None)
    if callable(errors):  # a pydantic ValidationError: one clause per field
        clauses = []
        for e in errors():
            where = flag_of(str(e["loc"][0])) if e["loc"] else "config"
            clauses.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        text = "; ".join(clauses)
    else:
        text = " ".join(str(error).split())
    print(f"avff {command}: error: {text}", file=sys.stderr)
    return 2


def _add_train(sub) -> None:
    add_train_arguments(sub.add_parser(
        "train", help="train AVFF on ingested shards, tracked in MLflow",
        description="Train AVFF on the shards of `avff ingest` (a train-avff flow run), track it in MLflow and "
        "register the model if it beats the prior baseline on val.",
    ))  # fmt: skip


def checked_train_config(args, command: str, *, splits: bool = False):
    """(TrainSettings, 0), or (None, 2) after printing why the flags cannot work (before any run starts)."""
    from pydantic import ValidationError

    from flows.preflight import ConfigError

    try:
        # recorded, not printed: import-time warnings (MLflow's about the pyfunc's type hints) are not
        # the user's business; record=True because MLflow resets the filters around its own warning
        with warnings.catch_warnings(record=True):
            config = train_config(args)
            from flows.train import check_inputs

        check_inputs(config, splits=splits)
    except (ValidationError, ConfigError) as e:
        return None, usage_error(command, e)
    return config, 0


def _train(args) -> int:
    config, status = checked_train_config(args, "train", splits=True)
    if config is None:
        return status
    from flows.train import train_avff

    print(json.dumps(train_avff(config), indent=2, default=str))
    return 0


COMMANDS = {"train": (_add_train, _train)}
