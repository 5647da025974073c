"""Exceptions that the CLI turns into a message and exit code 1 (no Python traceback), and pydantic's validation
errors turned into a :class:`SpecError`'s problems (field path, constraint, bad value)."""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel


class WavesweepError(Exception):
    """Base of the errors a user can act on; the message says how."""


class SpecError(WavesweepError):
    """A spec broke one or more constraints; ``problems`` holds (field path, constraint, bad value)."""

    def __init__(self, problems: list[tuple[str, str, Any]]):
        self.problems = problems
        super().__init__("\n".join(_line(*p) for p in problems))


def _line(path: str, constraint: str, value: Any) -> str:
    return f"{path}: {constraint}" if value is None else f"{path}: {constraint}; got {value!r}"


class StoreError(WavesweepError):
    """The store could not be opened, read or written; the message names the (password-masked) URL."""


class SchemaOutOfDate(StoreError):
    """The database schema is older (or newer) than this wavesweep; the message gives the upgrade command."""


class StudyMismatch(WavesweepError):
    """A spec reuses a study name whose recorded runs were made with a different experiment or fixed params."""


_PYDANTIC_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
    "model_type": "must be a mapping",
}


def problems_from_pydantic(errors: list[dict[str, Any]], model: type[BaseModel],
                           union_messages: dict[str, str]) -> list[tuple[str, str, Any]]:
    """pydantic's errors as problems, in its order. pydantic reports a union field once per member it tried, each
    under a location ending in the member's tag (``resources.gpus_per_run.constrained-float``, ``...literal['auto']``);
    those are grouped into one problem at the field's own path, with ``union_messages[path]`` where given (what the
    field takes, in words) or else what each member wanted."""
    grouped: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for n, err in enumerate(errors):
        tag = _union_tag_at(model, err["loc"])
        grouped.setdefault(("one", n) if tag is None else ("union", err["loc"][:tag]), []).append(err)
    return [_from_pydantic(errs[0], model) if kind == "one" else _from_union(key, errs, model, union_messages)
            for (kind, key), errs in grouped.items()]


def _from_union(loc: tuple[Any, ...], errors: list[dict[str, Any]], model: type[BaseModel],
                union_messages: dict[str, str]) -> tuple[str, str, Any]:
    path = _path(loc)
    message = union_messages.get(path)
    if message is None:  # what each member wanted: "must be a number or a string"
        wanted = [_from_pydantic({**err, "loc": loc}, model)[1].removeprefix("must be ") for err in errors]
        message = "must be " + " or ".join(dict.fromkeys(wanted))
    return path, message, errors[0]["input"]


def _union_tag_at(model: type[BaseModel], loc: tuple[Any, ...]) -> int | None:
    """The index in ``loc`` of the union-member tag pydantic appended, or None if ``loc`` crosses no union. Walks
    the annotations along ``loc``: a model steps into a field, a dict or tuple over its key or index."""
    annotation: Any = model
    i = 0
    while True:
        origin, args = typing.get_origin(annotation), [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, types.UnionType):
            if len(args) > 1:  # X | None is no union to pydantic: it adds no member tag
                return i if i < len(loc) else None
            annotation = args[0]
        elif i >= len(loc):
            return None
        elif hasattr(annotation, "model_fields"):
            field = annotation.model_fields.get(loc[i])
            if field is None:
                return None
            annotation, i = field.annotation, i + 1
        elif origin in (dict, tuple, list):
            annotation, i = args[-1] if origin is dict else args[0], i + 1
        else:
            return None


def _path(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "spec"


def _from_pydantic(err: dict[str, Any], model: type[BaseModel]) -> tuple[str, str, Any]:
    loc = err["loc"]
    path = _path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = ", ".join(_fields_at(model, loc[:-1]))
        return path, f"unknown key; valid keys here: {valid}", err["input"]
    if kind == "missing":
        return path, "is required", None
    if kind == "literal_error":
        return path, f"must be one of {err['ctx']['expected']}", err["input"]
    if kind in ("greater_than", "greater_than_equal"):
        op = ">" if kind == "greater_than" else ">="
        bound = err["ctx"].get("gt", err["ctx"].get("ge"))
        return path, f"must be {op} {bound:g}", err["input"]
    if kind == "string_pattern_mismatch":
        return path, "must be 1-100 letters, digits, '_', '.', '-', starting with a letter or digit", err["input"]
    message = _PYDANTIC_MESSAGES.get(kind, err["msg"][0].lower() + err["msg"][1:])
    return path, message, err["input"]


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the (sub)model that ``loc`` points into, for 'unknown key' messages."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is not None:
            current = field.annotation
        # dict[str, Factor] -> Factor: a factor name (or index) steps into the value type
        args = getattr(current, "__args__", ())
        if field is None and args:
            current = args[-1]
        elif field is not None and args and not hasattr(current, "model_fields"):
            current = next((a for a in args if hasattr(a, "model_fields")), current)
    return sorted(getattr(current, "model_fields", {}))
