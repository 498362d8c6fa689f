"""docs/commands.md shows every command's --help as the app renders it now: the generated blocks are never stale."""

from __future__ import annotations

import pytest

from cliniko_sync import docs_reference
from cliniko_sync.docs_reference import BLOCK, PAGE, helps, regenerate, stale_blocks, stale_message

PAGE_TEXT = PAGE.read_text(encoding="utf-8")


def test_the_commands_page_shows_every_commands_current_help() -> None:
    stale = stale_blocks(PAGE_TEXT)
    assert not stale, stale_message(stale)


def test_each_command_has_one_block() -> None:
    shown = [match.group("command") for match in BLOCK.finditer(PAGE_TEXT)]
    assert len(shown) == len(set(shown))
    assert {"cliniko-sync", "cliniko-sync sync", "cliniko-sync org add", "cliniko-sync db grant"} <= set(shown)
    assert "cliniko-sync org" not in shown  # a group's help only lists its commands


def test_a_block_edited_by_hand_is_stale_and_regenerated() -> None:
    edited = PAGE_TEXT.replace("Sync every enabled organization.", "Sync them all.", 1)
    assert edited != PAGE_TEXT
    assert stale_blocks(edited) == ["cliniko-sync sync"]
    assert regenerate(edited) == PAGE_TEXT


def test_a_block_in_a_tab_keeps_its_indentation() -> None:
    edited = PAGE_TEXT.replace(
        "    Usage: cliniko-sync org add [OPTIONS] ORG\n", "    Usage: cliniko-sync org add ORG\n", 1
    )
    assert edited != PAGE_TEXT
    assert stale_blocks(edited) == ["cliniko-sync org add"]
    assert regenerate(edited) == PAGE_TEXT


def test_a_command_without_a_block_is_stale() -> None:
    first = next(BLOCK.finditer(PAGE_TEXT))
    without_root = PAGE_TEXT[: first.start()] + PAGE_TEXT[first.end() :]
    assert stale_blocks(without_root) == ["cliniko-sync"]
    assert "docs/commands.md is stale for cliniko-sync: run `python -m cliniko_sync.docs_reference --write`" in (
        stale_message(["cliniko-sync"])
    )


def test_the_help_is_rendered_at_a_fixed_width_whatever_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    assert helps()["cliniko-sync sync"] in PAGE_TEXT


def test_the_check_exits_0_when_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert docs_reference.main([]) == 0
    assert docs_reference.main(["--bogus"]) == 2
    assert "--write" in capsys.readouterr().err
