"""``add_fields``, ``rename`` and ``remove``: change which keys a log has."""

from __future__ import annotations

from .model import Log
from .options import AddFieldsOptions, RemoveOptions, RenameOptions


class AddFields:

    def __init__(self, name: str, options: AddFieldsOptions) -> None:
        self.name = name
        self.reads = self.writes = frozenset(options.fields)
        self._fields = {key: value.encode() for key, value in options.fields.items()}
        self._overwrite = options.overwrite

    def apply(self, log: Log) -> str | None:
        for key, value in self._fields.items():
            if self._overwrite or key not in log:
                log[key] = value
        return None


class Rename:

    def __init__(self, name: str, options: RenameOptions) -> None:
        self.name = name
        self.reads = frozenset(options.fields)
        self.writes = frozenset(options.fields) | frozenset(options.fields.values())
        self._renames = dict(options.fields)

    def apply(self, log: Log) -> str | None:
        for old, new in self._renames.items():
            if old in log and old != new:
                log[new] = log.pop(old)
        return None


class Remove:

    def __init__(self, name: str, options: RemoveOptions) -> None:
        self.name = name
        self.reads = self.writes = frozenset(options.keys)
        self._keys = options.keys

    def apply(self, log: Log) -> str | None:
        for key in self._keys:
            log.pop(key, None)
        return None
