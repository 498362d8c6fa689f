"""One resource's records plus the sorted indexes that keep the API's crawl queries O(log n + page)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from cliniko_sync.emulator.records import Record, whole_second

R = TypeVar("R", bound=Record)

# The indexes: name -> (record field, keyed by the shown whole second?). Entries are (key, id), so equal keys come
# out in numeric id order. `updated_at/shown` exists for the crawl's crowded-second query
# (`updated_at:>=T&updated_at:<T+1&id:>N`, sort=id): inside one shown second the stored fractions scatter the ids,
# but keyed by the shown second they are in id order again.
INDEXES: dict[str, tuple[str, bool]] = {
    "updated_at": ("updated_at", False),
    "created_at": ("created_at", False),
    "id": ("id", False),
    "updated_at/shown": ("updated_at", True),
}


class SortedIndex:
    """(key, id) pairs in ascending order; the key is a record field, or the whole second it is shown as."""

    def __init__(self, field: str, records: Iterable[Record], *, shown: bool = False) -> None:
        self.field = field
        self.shown = shown
        self.entries: list[tuple[float, int]] = sorted((self.key(getattr(r, field)), r.id) for r in records)
        self.changes = 0  # entries added or removed so far
        # Lists derived from this index and another of the same table, kept by query.py under a key that holds both
        # indexes' `changes`; a change of this index clears them.
        self.derived: dict[tuple[object, ...], list[tuple[float, int]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def key(self, value: float) -> float:
        return whole_second(value) if self.shown else value

    def add(self, value: float, record_id: int) -> None:
        insort(self.entries, (self.key(value), record_id))
        self.changes += 1
        self.derived.clear()

    def remove(self, value: float, record_id: int) -> None:
        entry = (self.key(value), record_id)
        position = bisect_left(self.entries, entry)
        if position < len(self.entries) and self.entries[position] == entry:
            del self.entries[position]
        self.changes += 1
        self.derived.clear()


class Table(Generic[R]):
    """Records by id, and the indexes over the ones the API lists (deleted patients are not listed at all)."""

    def __init__(
        self, records: Iterable[R], *, listed: Callable[[R], bool] = lambda record: True, extra: tuple[str, ...] = ()
    ) -> None:
        self.records: dict[int, R] = {r.id: r for r in records}
        self._listed = listed
        # More indexed fields for this table alone, e.g. appointments' starts_at (the window pass's range).
        self._indexes = {**INDEXES, **{name: (name, False) for name in extra}}
        self.reindex()

    def reindex(self) -> None:
        """Rebuild every index from the records (after timestamps changed wholesale)."""
        visible = [r for r in self.records.values() if self._listed(r)]
        self.indexes = {
            name: SortedIndex(field, visible, shown=shown) for name, (field, shown) in self._indexes.items()
        }

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

    def set_updated_at(self, record: R, updated_at: float) -> None:
        """Change a record's updated_at and move it in the indexes on that field."""
        self.set_field(record, "updated_at", updated_at)

    def set_field(self, record: R, name: str, value: float) -> None:
        """Change one of a record's fields and move it in the indexes on that field (e.g. a class's starts_at)."""
        if self._listed(record):
            for index in self.indexes.values():
                if index.field == name:
                    index.remove(getattr(record, name), record.id)
                    index.add(value, record.id)
        setattr(record, name, value)

    def unlist(self, record: R) -> None:
        """Drop a record from the indexes before a change that hides it from the API (deleting a patient)."""
        for index in self.indexes.values():
            index.remove(getattr(record, index.field), record.id)
