"""Flags generated from a pydantic config: one argparse flag per field, plus ``--config FILE``.

:class:`ConfigFlags` ties a config model (``TrainSettings``, ``IngestSettings``) to its command:
each field becomes ``--field-name`` (or a kept spelling from ``renames``), typed and bounded
from the field (numbers checked while parsing, ``Literal`` as choices, ``X | None`` as X, a
tuple as that many values, a list as one or more values, a mapping as repeated ``KEY=JSON``, a
nested dataclass as a preset name or a JSON object merged into the current value, a bool as
``--x`` / ``--no-x``), with the field's description and default as help. A nested config named in
``flatten`` (IngestSettings' ``preprocess``) has no flag of its own: each of its fields, nested ones
included, is a flag of its own name (``--face-size`` sets ``preprocess.face_size``). Every flag defaults to "absent", so a value comes
from the flags, else from ``--config`` (a YAML or JSON file of fields, unknown keys refused
while parsing), else from the model: the command has no defaults of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import operator
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tasks.config_fields import config_fields, leaf_fields

_OPS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def bounds(info: FieldInfo) -> list[tuple[str, float]]:
    """The field's bounds as (``ge``|``gt``|``le``|``lt``, bound): pydantic keeps them as constraint objects."""
    return [(name, getattr(m, name)) for m in info.metadata for name in _OPS if hasattr(m, name)]


def bounded(kind: type, limits: Iterable[tuple[str, float]]) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` number within ``limits``, refused while parsing."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        for name, bound in limits:
            symbol, holds = _OPS[name]
            if not holds(value, bound):
                raise argparse.ArgumentTypeError(f"must be {symbol} {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


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


def _plain(annotation: Any) -> Any:
    """``int | None`` -> ``int``: the type a flag parses (None is the default, never typed in)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _shown(default: Any) -> str:
    if dataclasses.is_dataclass(default):  # nested settings default to "off"
        return "off" if default == type(default)() else json.dumps(dataclasses.asdict(default))
    return json.dumps(default) if isinstance(default, dict) else str(default)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad flag as one line (not the usage of 60 flags), exit status 2."""

    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    parser.error = error  # argparse has no hook for this but overriding the method
    return parser


@dataclasses.dataclass(frozen=True)
class ConfigFlags:
    """The command-line face of a config model (module docstring)."""

    model: type[BaseModel]
    renames: Mapping[str, str] = dataclasses.field(default_factory=dict)  # field -> its flag, when not --field-name
    types: Mapping[str, Callable[[str], Any]] = dataclasses.field(default_factory=dict)  # field -> parse-time check
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # nested field -> named values
    file_flag: str = "--config"  # the flag of the file that can hold the fields too (named in a required field's help)
    flatten: tuple[str, ...] = ()  # nested config fields whose own fields are flags (--face-size: preprocess.face_size)

    def __post_init__(self) -> None:
        flags = [self.flag_of(dest) for dest in self.flags]
        clashes = sorted({f for f in flags if flags.count(f) > 1})
        if clashes:
            raise ValueError(f"{self.model.__name__}: flags named twice once flattened: {', '.join(clashes)}")

    @property
    def fields(self) -> dict[str, FieldInfo]:
        return self.model.model_fields

    @property
    def flags(self) -> dict[str, FieldInfo]:
        """{flag's dest: field} of every flag: the model's fields, a flattened group's by dotted path."""
        out: dict[str, FieldInfo] = {}
        for name, info in self.fields.items():
            out.update(leaf_fields(info.annotation, name) if name in self.flatten else {name: info})
        return out

    def name_of(self, key: str) -> str:
        """The field a key names (its name or its alias), or ``key`` itself when it names none."""
        return next((n for n, info in self.fields.items() if key in (n, info.alias)), key)

    def flag_of(self, key: str) -> str:
        """The flag of a field, by field name, alias or dotted place: ``model_config`` -> ``--model`` for
        TrainSettings, ``preprocess.face_size`` -> ``--face-size`` for IngestSettings."""
        name = self.name_of(key)
        return self.renames.get(name, "--" + name.rsplit(".", 1)[-1].replace("_", "-"))

    def read_file(self, path: str) -> dict[str, Any]:
        """A YAML or JSON file of fields -> {field name: value}; an unknown key raises ValueError naming it (a
        flattened group's field at the top is kept: the model refuses it, naming its place)."""
        import yaml

        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read {path}: {' '.join(str(e).split())}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of settings, got {type(loaded).__name__}")
        keys = [k for n, info in self.fields.items() for k in (n, info.alias) if k]
        # a flattened group's field at the top (``face_size``) is left to the model, whose refusal names its
        # place for every entry point alike (IngestSettings: the flow's parameter, the Prefect form, this file)
        misplaced = {dest.rsplit(".", 1)[1] for dest in self.flags if "." in dest}
        _check_keys(path, {k: v for k, v in loaded.items() if k not in misplaced}, keys, "")
        for group in self.flatten:
            _check_nested_keys(path, loaded.get(group), self.fields[group].annotation, group)
        return {self.name_of(k): v for k, v in loaded.items()}

    def _file(self, text: str) -> dict[str, Any]:
        try:
            return self.read_file(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    def _argument(self, name: str, info: FieldInfo) -> dict[str, Any]:
        """add_argument kwargs of one field; default SUPPRESS: a flag left out is absent from the namespace."""
        kind = _plain(info.annotation)
        default = (
            f"required: here or in {self.file_flag}"
            if info.is_required()
            else f"default: {_shown(info.get_default(call_default_factory=True))}"
        )
        if "." in name:  # a flattened group's field: its key in a file
            default += f"; {self.file_flag} key {name}"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                              "help": f"{info.description} ({default})".replace("%", "%%")}  # fmt: skip
        if get_origin(kind) is dict:  # repeated KEY=JSON pairs (``types`` may check each pair while parsing)
            named = get_origin(get_args(kind)[1]) is dict  # name -> settings (ablation variants)
            kw.update(
                action="append", type=self.types.get(name, _key_json), metavar="NAME=JSON" if named else "KEY=JSON"
            )
        elif name in self.types:
            kw["type"] = self.types[name]
        elif kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is Literal:
            kw["choices"] = get_args(kind)
        elif kind in (int, float):
            kw["type"] = bounded(kind, bounds(info))
        elif get_origin(kind) is tuple and Ellipsis not in get_args(kind):
            kw.update(nargs=len(get_args(kind)), type=bounded(get_args(kind)[0], []))
        elif get_origin(kind) is tuple and get_args(kind)[0] is str:  # tuple[str, ...]: any number of values
            kw.update(nargs="*")
        elif get_origin(kind) is list:  # list[int]: one or more values
            item = get_args(kind)[0]
            kw.update(nargs="+", type=bounded(item, []) if item in (int, float) else item)
        elif dataclasses.is_dataclass(kind):
            kw.update(type=_preset_or_json, metavar="PRESET|JSON" if name in self.presets else "JSON")
        if "action" not in kw and "choices" not in kw and "metavar" not in kw:
            kw["metavar"] = self.flag_of(name).removeprefix("--").replace("-", "_").upper()
        return kw

    def add_arguments(self, parser: argparse.ArgumentParser, title: str, *,
                      skip: Iterable[str] = ()) -> argparse._ArgumentGroup:  # fmt: skip
        """``--config`` (:attr:`file_flag`) and one flag per field (except ``skip``) in a group called ``title``."""
        one_line_errors(parser)
        parser.add_argument(
            self.file_flag,
            dest="config",
            type=self._file,
            default={},
            metavar="FILE",
            help="a YAML or JSON file of settings (the flow's parameter names); flags override it",
        )
        group = parser.add_argument_group(title)
        self.add_fields(group, skip=skip)
        return group

    def add_fields(self, group: argparse._ActionsContainer, *, skip: Iterable[str] = ()) -> None:
        """One flag per field (except ``skip``), no file flag: a second config's fields beside the first's."""
        for dest, info in self.flags.items():
            if dest.split(".", 1)[0] not in skip and dest.rsplit(".", 1)[-1] not in skip:
                group.add_argument(self.flag_of(dest), **self._argument(dest, info))

    def nested(self, fields: Mapping[str, Any], name: str) -> dict[str, Any]:
        """A nested setting's current value as a dict: the file's (a preset name resolved), else the default."""
        value = fields.get(name, self.fields[name].get_default(call_default_factory=True))
        if isinstance(value, str):
            value = self.presets.get(name, {}).get(value, value)
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """{field name: value} of ``--config`` overlaid with the flags given (mappings and nested JSON merge)."""
        return self.overlay(args.config, args)

    def overlay(self, fields: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        """``fields`` ({field name: value}) with the flags given on top (mappings and nested JSON merge)."""
        fields = dict(fields)
        given = vars(args)
        for name, info in self.flags.items():
            if name not in given:
                continue
            value = given[name]
            if "." in name:  # a flattened group's field: into the file's mapping of the group (else a new one)
                _put(fields, name.split("."), value)
                continue
            if get_origin(_plain(info.annotation)) is dict:  # KEY=JSON pairs onto the file's mapping
                value = {**fields.get(name, {}), **dict(value)}
            elif isinstance(value, dict):  # a nested setting's JSON: merged onto the file's value, else the default
                value = {**self.nested(fields, name), **value}
            fields[name] = value
        return fields

    def usage_error(self, command: str, error: Exception) -> int:
        """Print a config error as one line naming the flag; exit status 2 (like argparse)."""
        errors = getattr(error, "errors", None)
        if callable(errors):  # a pydantic ValidationError: one clause per field
            clauses = []
            for e in errors():
                message = e["msg"].removeprefix("Value error, ")
                # a check across fields (loc empty) names its fields itself
                clauses.append(self._clause(e["loc"], message))
            text = "; ".join(clauses)
        else:
            text = str(error)
        return refused(command, text)

    def _clause(self, loc: tuple, message: str) -> str:
        """One error as ``--flag: message``; a check across fields (loc empty or a whole group) names its fields."""
        place = ".".join(map(str, loc))
        if not loc:
            return message
        if loc[0] not in self.flatten:
            return f"{self.flag_of(str(loc[0]))}: {message}"
        if place in self.flags:
            return f"{self.flag_of(place)}: {message}"
        group = any(dest.startswith(place + ".") for dest in self.flags)
        return message if group else f"{place}: {message}"


def _check_keys(path: str, loaded: Mapping, keys: list[str], where: str) -> None:
    """Refuse a key of ``loaded`` not in ``keys``, suggesting the closest (``where``: the mapping's place)."""
    for key in loaded:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {where + close[0]!r}?)" if close else ""
            raise ValueError(f"{path}: unknown key {where + str(key)!r}{hint}")


def _check_nested_keys(path: str, loaded: Any, config: type, where: str) -> None:
    """The keys of a flattened group's mapping in a file, nested mappings included (a non-mapping: left to pydantic)."""
    fields = config_fields(config) or {}
    if not isinstance(loaded, Mapping):
        return
    _check_keys(path, loaded, list(fields), f"{where}.")
    for name, info in fields.items():
        if config_fields(info.annotation) is not None:
            _check_nested_keys(path, loaded.get(name), info.annotation, f"{where}.{name}")


def _put(fields: dict[str, Any], place: list[str], value: Any) -> None:
    """Set ``fields[a][b][c] = value`` for place ``[a, b, c]``, copying the mappings on the way (a nested
    config object becomes its dict)."""
    head, *rest = place
    if not rest:
        fields[head] = value
        return
    inner = fields.get(head, {})
    inner = dataclasses.asdict(inner) if dataclasses.is_dataclass(inner) else dict(inner)
    _put(inner, rest, value)
    fields[head] = inner


def refused(command: str, reason: str) -> int:
    """Print why a command cannot run as one line on stderr; exit status 2 (like argparse), no run started."""
    print(f"avff {command}: error: {' '.join(str(reason).split())}", file=sys.stderr)
    return 2
