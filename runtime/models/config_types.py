"""Type checks of config dicts read from json (transformer / VAE / text encoder config.json, vidrt.json).

A wrong value type in a config file ("num_layers": "eight") otherwise surfaces as a TypeError deep
inside model construction; here it becomes a CheckpointError naming the file, the key and the value.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from vidrt.errors import CheckpointError

__all__ = ["field_types", "check_config"]


def field_types(cls) -> dict[str, Any]:
    """Field name -> type of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _fits(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # Any and other types: not checked


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).split(' ', 1)[-1]}s"
        return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[-1]}s"
    return {int: "an int", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_config(data: Any, types: Mapping[str, Any], where: Any) -> None:
    """Raise a CheckpointError naming ``where`` (the file) unless ``data`` is a mapping whose known keys
    (those in ``types``) hold values of their type; unknown keys are left to the caller."""
    if not isinstance(data, Mapping):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise CheckpointError(f"{where} holds {kind}, not a JSON object of settings "
                              "({\"key\": value, ...}); restore the file from the original checkpoint")
    for key, tp in types.items():
        if key in data and not _fits(data[key], tp):
            raise CheckpointError(f"{where}: key {key!r} must be {_describe(tp)}, got {data[key]!r}; fix the value "
                                  "(or restore the file from the original checkpoint)")
