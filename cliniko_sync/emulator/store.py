"""One resource's records plus the sorted indexes that keep the API's crawl queries O(log n + page)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from cliniko_sync.emulator.records import Record

R = TypeVar("R", bound=Record)

# Fields with an index; entries are (value, id) so equal values come out in numeric id order.
INDEXED_FIELDS = ("updated_at", "created_at", "id")


class SortedIndex:
    """(field value, id) pairs in ascending order."""

    def __init__(self, field: str, records: Iterable[Record]) -> None:
        self.field = field
        self.entries: list[tuple[int, int]] = sorted((getattr(r, field), r.id) for r in records)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, value: int, record_id: int) -> None:
        insort(self.entries, (value, record_id))

    def remove(self, value: int, record_id: int) -> None:
        position = bisect_left(self.entries, (value, record_id))
        if position < len(self.entries) and self.entries[position] == (value, record_id):
            del self.entries[position]


class Table(Generic[R]):
    """Records by id, and the indexes over the ones the API lists (deleted patients are not listed at all)."""

    def __init__(self, records: Iterable[R], *, listed: Callable[[R], bool] = lambda record: True) -> None:
        self.records: dict[int, R] = {r.id: r for r in records}
        self._listed = listed
        visible = [r for r in self.records.values() if listed(r)]
        self.indexes = {name: SortedIndex(name, visible) for name in INDEXED_FIELDS}

    def __len__(self) -> int:
        return len(self.indexes["id"])

    def get(self, record_id: int) -> R | None:
        """A listed record by id, or None."""
        record = self.records.get(record_id)
        if record is None or not self._listed(record):
            return None
        return record

    def iter_listed(self) -> Iterator[R]:
        """Every listed record, in id order."""
        records = self.records
        return (records[record_id] for _, record_id in self.indexes["id"].entries)

    def add(self, record: R) -> None:
        self.records[record.id] = record
        if self._listed(record):
            for index in self.indexes.values():
                index.add(getattr(record, index.field), record.id)

    def set_updated_at(self, record: R, updated_at: int) -> None:
        """Change a record's updated_at and move it in the index."""
        index = self.indexes["updated_at"]
        if self._listed(record):
            index.remove(record.updated_at, record.id)
            index.add(updated_at, record.id)
        record.updated_at = updated_at

    def unlist(self, record: R) -> None:
        """Drop a record from the indexes before a change that hides it from the API (deleting a patient)."""
        for index in self.indexes.values():
            index.remove(getattr(record, index.field), record.id)
