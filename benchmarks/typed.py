"""Frozen dataclasses to JSON and back.

A section's result crosses a process boundary (``--child`` prints it, the parent reads it) and
goes to ``--json``; the report reads it typed. ``to_json`` is :func:`dataclasses.asdict`;
``from_json`` rebuilds the dataclass from its field types, so a result type needs no code of
its own. The types it knows: dataclasses, ``Optional``, ``list``, ``tuple`` (fixed or
``...``), ``dict`` with string keys, ``Literal``, and JSON's scalars.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, TypeVar, Union, cast

T = TypeVar("T")


def to_json(value: object) -> dict[str, Any]:
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise TypeError(f"not a dataclass instance: {value!r}")
    return dataclasses.asdict(value)


def from_json(kind: type[T], data: Any) -> T:
    return cast(T, _convert(kind, data))


def _convert(hint: Any, data: Any) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        # Evaluated here rather than read from the fields: results use postponed annotations.
        hints = typing.get_type_hints(hint)
        return hint(
            **{
                field.name: _convert(hints[field.name], data[field.name])
                for field in dataclasses.fields(hint)
                if field.name in data
            }
        )
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if data is None:
            return None
        (inner,) = (arg for arg in args if arg is not type(None))
        return _convert(inner, data)
    if origin is list:
        return [_convert(args[0], item) for item in data]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item) for item in data)
        return tuple(_convert(arg, item) for arg, item in zip(args, data))
    if origin is dict:
        return {key: _convert(args[1], value) for key, value in data.items()}
    if hint is Any:
        return data
    if origin is Literal and data in args:
        return data
    # A figure typed float can be a whole number in Python (a median of counts), and JSON
    # keeps it an int.
    if hint is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if isinstance(hint, type) and isinstance(data, hint):
        return data
    raise TypeError(f"{data!r} is not a {hint}")
