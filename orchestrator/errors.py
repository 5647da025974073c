"""Exceptions that the CLI turns into a message and exit code 1 (no Python traceback)."""

from __future__ import annotations

from typing import Any


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
