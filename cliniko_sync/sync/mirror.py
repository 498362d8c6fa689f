"""Writing pages into the mirror tables and the crawl state into sync_state (always inside the caller's transaction)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from psycopg import sql

from cliniko_sync.db import DictConnection
from cliniko_sync.sync.crawl import Position
from cliniko_sync.sync.streams import Stream


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def _stage_name(stream: Stream) -> str:
    return f"stage_{stream.table}"


@cache
def _statements(stream: Stream) -> tuple[sql.Composed, sql.Composed, sql.Composed, sql.Composed, sql.Composed]:
    table = sql.Identifier(stream.table)
    stage = sql.Identifier(_stage_name(stream))
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in stream.columns)
    create_stage = sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {columns} FROM {table} WITH NO DATA"
    ).format(stage=stage, columns=columns, table=table)
    copy = sql.SQL("COPY {stage} ({columns}) FROM STDIN").format(stage=stage, columns=columns)
    newer = sql.SQL("EXCLUDED.updated_at >= {table}.updated_at").format(table=table)
    assignments = sql.SQL(", ").join(
        sql.SQL("{col} = CASE WHEN {newer} THEN EXCLUDED.{col} ELSE {table}.{col} END").format(
            col=sql.Identifier(c), newer=newer, table=table
        )
        for c in stream.columns
        if c != "id"
    )
    # Never replace a newer row with an older one; skip no-op updates (no dead tuples for unchanged rows).
    upsert = sql.SQL(
        """
        WITH prior AS (
            SELECT s.updated_at, s.raw, t.updated_at AS old_updated_at, t.raw AS old_raw,
                   t.removed_at AS old_removed_at
            FROM {stage} s
            -- LIMIT keeps this a per-row primary-key probe: a plain join would hash the whole organization.
            LEFT JOIN LATERAL (
                SELECT m.updated_at, m.raw, m.removed_at FROM {table} m
                WHERE m.organization_id = %(org)s AND m.id = s.id LIMIT 1
            ) t ON true
        ), written AS (
            INSERT INTO {table} (organization_id, {columns}, last_full_pass, removed_at, synced_at)
            SELECT %(org)s, {columns}, %(pass)s, NULL, now() FROM {stage}
            ON CONFLICT (organization_id, id) DO UPDATE SET
                {assignments},
                last_full_pass = COALESCE(EXCLUDED.last_full_pass, {table}.last_full_pass),
                removed_at = NULL,
                synced_at = now()
            WHERE EXCLUDED.updated_at > {table}.updated_at
               OR (EXCLUDED.updated_at = {table}.updated_at AND EXCLUDED.raw IS DISTINCT FROM {table}.raw)
               OR {table}.removed_at IS NOT NULL
               OR (EXCLUDED.last_full_pass IS NOT NULL
                   AND EXCLUDED.last_full_pass IS DISTINCT FROM {table}.last_full_pass)
            RETURNING 1
        )
        SELECT
            count(*) FILTER (WHERE old_updated_at IS NULL) AS inserted,
            count(*) FILTER (WHERE old_updated_at IS NOT NULL AND updated_at >= old_updated_at
                             AND (raw IS DISTINCT FROM old_raw OR old_removed_at IS NOT NULL)) AS updated,
            count(*) AS total,
            (SELECT count(*) FROM written) AS written
        FROM prior
        """
    ).format(stage=stage, table=table, columns=columns, assignments=assignments)
    clear_stage = sql.SQL("DELETE FROM {stage}").format(stage=stage)
    remove_unseen = sql.SQL(
        "UPDATE {table} SET removed_at = now() "
        "WHERE organization_id = %(org)s AND removed_at IS NULL AND last_full_pass IS DISTINCT FROM %(pass)s"
    ).format(table=table)
    return create_stage, copy, upsert, clear_stage, remove_unseen


def latest_per_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page may repeat a record (or carry two versions of it): keep the newest of each id."""
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = newest.get(row["id"])
        if kept is None or row["updated_at"] >= kept["updated_at"]:
            newest[row["id"]] = row
    return list(newest.values())


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: drop it (hostile or broken data must not fail the sync)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _storable(row: dict[str, Any], column: str) -> Any:
    value = row[column]
    if column == "raw":
        text = json.dumps(value, ensure_ascii=False)
        return json.dumps(_without_nul(value), ensure_ascii=False) if "\\u0000" in text else text
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "")
    return value


def write_rows(
    conn: DictConnection, stream: Stream, organization_id: str, rows: list[dict[str, Any]], full_pass: int | None
) -> WriteCounts:
    """Upsert parsed rows through a temp staging table (COPY), returning what changed."""
    if not rows:
        return WriteCounts()
    create_stage, copy, upsert, clear_stage, _ = _statements(stream)
    conn.execute(create_stage)
    with conn.cursor() as cur:
        with cur.copy(copy) as loader:
            for row in latest_per_id(rows):
                loader.write_row([_storable(row, c) for c in stream.columns])
        cur.execute(upsert, {"org": organization_id, "pass": full_pass})
        result = cur.fetchone()
        cur.execute(clear_stage)  # a dry run keeps one transaction open: don't let pages pile up
    assert result is not None
    return WriteCounts(
        inserted=result["inserted"],
        updated=result["updated"],
        unchanged=result["total"] - result["inserted"] - result["updated"],
    )


def remove_unseen(conn: DictConnection, stream: Stream, organization_id: str, full_pass: int) -> int:
    """After a complete full pass: soft-delete mirror rows that the pass did not see."""
    statement = _statements(stream)[4]
    return conn.execute(statement, {"org": organization_id, "pass": full_pass}).rowcount


# --- crawl state -------------------------------------------------------------------------------------------


@dataclass
class StreamState:
    """One sync_state row."""

    pass_id: int | None = None
    pass_mode: str | None = None
    pass_complete: bool = False
    position: Position = Position()
    cursor_updated_at: datetime | None = None


def load_state(conn: DictConnection, organization_id: str, stream: Stream) -> StreamState:
    row = conn.execute(
        "SELECT * FROM sync_state WHERE organization_id = %s AND stream = %s", (organization_id, stream.name)
    ).fetchone()
    if row is None:
        return StreamState()
    return StreamState(
        pass_id=row["pass_id"],
        pass_mode=row["pass_mode"],
        pass_complete=row["pass_complete"],
        position=Position(row["position_updated_at"], frozenset(row["position_ids"] or ()), row["tie_after_id"]),
        cursor_updated_at=row["cursor_updated_at"],
    )


def save_state(conn: DictConnection, organization_id: str, stream: Stream, state: StreamState) -> None:
    complete_mark = "now()" if state.pass_complete else "NULL"
    full_mark = "now()" if state.pass_complete and state.pass_mode == "full" else "NULL"
    conn.execute(
        sql.SQL(
            """
            INSERT INTO sync_state AS s (organization_id, stream, pass_id, pass_mode, pass_started_at, pass_complete,
                position_updated_at, position_ids, tie_after_id, cursor_updated_at, last_complete_at,
                last_full_complete_at, updated_at)
            VALUES (%(org)s, %(stream)s, %(pass_id)s, %(mode)s, now(), %(complete)s, %(pos_at)s, %(pos_ids)s,
                %(tie)s, %(cursor)s, {complete_mark}, {full_mark}, now())
            ON CONFLICT (organization_id, stream) DO UPDATE SET
                pass_started_at = CASE WHEN s.pass_id IS DISTINCT FROM EXCLUDED.pass_id
                                       THEN now() ELSE s.pass_started_at END,
                pass_id = EXCLUDED.pass_id, pass_mode = EXCLUDED.pass_mode, pass_complete = EXCLUDED.pass_complete,
                position_updated_at = EXCLUDED.position_updated_at, position_ids = EXCLUDED.position_ids,
                tie_after_id = EXCLUDED.tie_after_id, cursor_updated_at = EXCLUDED.cursor_updated_at,
                last_complete_at = COALESCE(EXCLUDED.last_complete_at, s.last_complete_at),
                last_full_complete_at = COALESCE(EXCLUDED.last_full_complete_at, s.last_full_complete_at),
                updated_at = now()
            """
        ).format(complete_mark=sql.SQL(complete_mark), full_mark=sql.SQL(full_mark)),
        {
            "org": organization_id,
            "stream": stream.name,
            "pass_id": state.pass_id,
            "mode": state.pass_mode,
            "complete": state.pass_complete,
            "pos_at": state.position.updated_at,
            "pos_ids": sorted(state.position.ids),
            "tie": state.position.tie_after_id,
            "cursor": state.cursor_updated_at,
        },
    )
