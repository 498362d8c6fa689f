"""The shell examples in the docs run, and print what the docs show (in shape), so none keeps a stale flag.

Every ```console, ```sh or bare fenced block in README.md and docs/*.md is marked on the line before it:

    <!-- example: run -->                      run it (`$ ` lines), in a world prepared for it (below)
    <!-- example: run; given: harbour-physio, role surf_crm -->
    <!-- example: not run: REASON -->          never run, and the reason says why (a cron line, a real Cliniko)

A ```json block marked `<!-- example: output of: COMMAND -->` is what COMMAND prints: the test runs it in the same
world and compares the keys, at every level.

A run block's `$ ` lines run one after another in one bash on a pseudo-terminal (as the docs' sessions were typed),
against this module's emulator clinic and a fresh database cloned from one where `surf-rehab` is added, given the
emulator's key and synced once. `given:` adds to that world: `harbour-physio` (any other slug: an organization with
no API key), `role NAME` (a login role), `empty database` (no schema, no organization), `zero configuration` (no
DATABASE_URL, encryption key or contact email: the demo's first run); `stop at: TEXT` runs a server until it prints
TEXT, then stops it with Ctrl-C. `$OLD_KEY` (the world's encryption key), `$NEW_KEY` and `$DASHBOARD_PASSWORD` are
set, and the docs' emulator address (127.0.0.1:8765) is this module's emulator.

What is checked, per command: its exit status (0, or the number a following `$ echo $?` shows); every JSON line
shown has the keys the real one has (all of them, unless the docs' has a "…" key); a CSV header is the real one;
every column a table's header shows is in the real table; every other line shown matches a line printed, where
numbers, times, ids, keys, e-mail addresses, URLs and paths are wildcards and "…" stands for anything.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from conftest import (
    TEMPLATE_DB,
    TEST_CONTACT_EMAIL,
    TEST_ENCRYPTION_KEY,
    drop_database,
    run_cli_in_process,
    url_for_database,
)
from cryptography.fernet import Fernet
from psycopg import sql

from cliniko_sync.emulator import EmulatorServer, generate_clinic

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"console", "sh", "bash", "shell", ""}
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!-- example: (?P<verdict>run|not run|output of)(?P<rest>[^\n]*?) -->\n\Z")
DOCS_EMULATOR = "127.0.0.1:8765"
DOCS_API_KEY = "demo-key-au1"
STEP_TIMEOUT = 240


# --- the docs' examples -------------------------------------------------------------------------------------


@dataclass
class Step:
    command: str
    shown: list[str]
    exit_code: int = 0
    status_of: str = "pipeline"  # or "first command": `echo ${PIPESTATUS[0]}` shows a pipeline's first status


@dataclass
class Example:
    page: str
    line: int
    language: str
    body: str
    verdict: str | None  # "run", "not run", "output of" or None (unmarked)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def steps(self) -> list[Step]:
        steps: list[Step] = []
        for line in self.body.splitlines():
            if line.startswith("$ "):
                command = line[2:].strip()
                if command in ("echo $?", "echo ${PIPESTATUS[0]}"):
                    steps[-1].status_of = "pipeline" if command == "echo $?" else "first command"
                    steps[-1].exit_code = -1  # the next shown line is the status
                else:
                    steps.append(Step(command, []))
            elif steps and steps[-1].exit_code == -1:
                steps[-1].exit_code = int(line.strip())
            elif steps:
                steps[-1].shown.append(line)
        return steps


def parse_options(rest: str) -> dict[str, str]:
    """`; given: a, b; stop at: TEXT` → {"given": "a, b", "stop at": "TEXT"}; `: REASON` → {"reason": REASON}
    (the command, after `output of`)."""
    if rest.startswith(":"):
        return {"reason": rest[1:].strip()}
    options = {}
    for part in filter(None, (piece.strip() for piece in rest.split(";"))):
        key, _, value = part.partition(":")
        options[key.strip()] = value.strip()
    return options


def examples(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        marker = MARKER.search(text[: match.start()])
        if match.group("lang") not in SHELL_LANGUAGES and not (marker and marker.group("verdict") == "output of"):
            continue
        found.append(
            Example(
                page=str(page.relative_to(ROOT)),
                line=text.count("\n", 0, match.start()) + 1,
                language=match.group("lang"),
                body=match.group("body"),
                verdict=marker.group("verdict") if marker else None,
                options=parse_options(marker.group("rest")) if marker else {},
            )
        )
    return found


ALL = [example for page in PAGES for example in examples(page)]
RUN = [example for example in ALL if example.verdict == "run"]
OUTPUTS = [example for example in ALL if example.verdict == "output of"]


def test_every_shell_example_is_marked_run_or_not_run_with_a_reason() -> None:
    unmarked = [example.id for example in ALL if example.verdict is None]
    assert not unmarked, f"mark these `<!-- example: run -->` or `<!-- example: not run: REASON -->`: {unmarked}"
    assert all(example.options.get("reason") for example in ALL if example.verdict in ("not run", "output of"))
    assert all(example.language == "console" and example.steps() for example in RUN)


def test_the_docs_run_their_examples() -> None:
    # 15 and 3 when written: an example may not quietly stop running.
    assert len(RUN) >= 15, [example.id for example in RUN]
    assert len(OUTPUTS) >= 3, [example.id for example in OUTPUTS]


# --- what a printed line must look like ------------------------------------------------------------------------

# Order matters: the first alternative that matches at a position wins.
WILDCARDS = [
    (r"\b(?:postgresql|https?)://\S+", r"\S+"),
    (r"(?<![\w.])/(?:[\w.-]+/)+[\w.-]*", r"\S+"),  # a path
    (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", r"[\w.+-]+@[\w.-]+"),
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"),
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", r"[0-9a-f-]{36}"),
    (r"(?<![\w-])[A-Za-z0-9_+/-]{40,}={0,2}", r"\S+"),  # a key
    (r"\d+(?:[.,]\d+)*", r"\d+(?:[.,]\d+)*"),
]
TOKEN = re.compile("|".join(f"({pattern})" for pattern, _ in WILDCARDS))


def line_pattern(shown: str) -> re.Pattern[str]:
    """A shown line as a pattern: its variable parts (numbers, times, ids, keys, addresses) and "…" are wildcards."""
    parts = []
    for piece in re.split(r"\s*…\s*", " ".join(shown.split())):
        out, position = [], 0
        for match in TOKEN.finditer(piece):
            out.append(re.escape(piece[position : match.start()]))
            out.append(WILDCARDS[match.lastindex - 1][1])  # type: ignore[operator]
            position = match.end()
        out.append(re.escape(piece[position:]))
        parts.append("".join(out).replace(r"\ ", r"\s+"))
    return re.compile(".*".join(parts))


def test_line_patterns_keep_the_words_and_free_the_values() -> None:
    pattern = line_pattern("stored key …-au1 for try-out (shard au1, http://127.0.0.1:8765/v1); check it")
    assert pattern.fullmatch("stored key …h7Qz-au1 for try-out (shard au1, http://127.0.0.1:41923/v1); check it")
    assert not pattern.fullmatch("stored key …-au1 for try-out (shard uk2, http://127.0.0.1:4/v1); check it")
    assert line_pattern("q1xkG0pV0mJm3f3Qk0Hk0zJ7s9xwYb2c5r8Tq4n1L2E=").fullmatch(Fernet.generate_key().decode())
    assert line_pattern("re-encrypted 2 stored credentials").fullmatch("re-encrypted 10 stored credentials")
    assert not line_pattern("re-encrypted 2 stored credentials").fullmatch("re-encrypted 1 stored credential")


TABLE = "┏┃┡│└┗╇┳"


def table_headers(lines: list[str]) -> list[list[str]]:
    """The column names of each table in the lines (a name wrapped over two header lines is joined again)."""
    headers: list[list[str]] = []
    previous_was_header = False
    for line in lines:
        is_header = line.strip().startswith("┃")
        if is_header:
            cells = [cell.strip() for cell in line.strip().strip("┃").split("┃")]
            if previous_was_header and len(cells) == len(headers[-1]):
                headers[-1] = [" ".join(filter(None, pair)) for pair in zip(headers[-1], cells, strict=True)]
            else:
                headers.append(cells)
        previous_was_header = is_header
    return headers


def check_output(step: Step, printed: str) -> list[str]:
    """What in the step's shown output the printed output does not bear out (empty when it agrees in shape)."""
    lines = [line.rstrip() for line in printed.splitlines()]
    problems = []
    headers = table_headers(lines)
    for shown_header in table_headers(step.shown):
        if not any(set(shown_header) <= set(header) for header in headers):
            problems.append(f"no table with the columns {shown_header}")
    json_lines = []
    for line in lines:
        if line.strip().startswith(("{", "[")):
            with contextlib.suppress(ValueError):
                json_lines.append(json.loads(line))
    unmatched = [line for line in lines if line.strip()]
    previous = None
    csv_header = "--format csv" in step.command and step.shown and step.shown[0]
    for shown in step.shown:
        text = shown.strip()
        if not text or "━━" in text and not text.startswith(tuple(TABLE)):
            continue  # progress bars: only on a terminal, and never the same twice
        if text.startswith(tuple(TABLE)):
            continue  # a table's header (checked above), border or rows (the clinic's data)
        if text.startswith(("{", "[")) and text.endswith(("}", "]")):
            problems += check_json(json.loads(text), json_lines)
            continue
        if csv_header and shown is not step.shown[0]:
            width = len(next(csv.reader([csv_header])))
            if len(next(csv.reader([text]))) != width:
                problems.append(f"a CSV row of the docs has not {width} fields: {text}")
            continue
        pattern = line_pattern(text)
        if pattern.pattern == previous:
            continue  # a run of lines alike (five e-mail addresses) needs one printed line like them
        previous = pattern.pattern
        hit = next((line for line in unmatched if pattern.fullmatch(" ".join(line.split()))), None)
        if hit is None:
            problems.append(f"nothing printed like: {text}")
        else:
            unmatched.remove(hit)
    return problems


def keys(value: object) -> object:
    """The shape of a JSON value: an object's keys (and their values' shapes), an array's first item's shape."""
    if isinstance(value, dict):
        return {key: keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [keys(value[0])] if value else []
    return None


def same_shape(shown: object, printed: object) -> bool:
    if isinstance(shown, dict):
        if not isinstance(printed, dict):
            return False
        if "…" not in shown and shown.keys() != printed.keys():
            return False
        return all(key == "…" or same_shape(item, printed.get(key)) for key, item in shown.items())
    if isinstance(shown, list):
        return isinstance(printed, list) and (not shown or not printed or same_shape(shown[0], printed[0]))
    return True


def key_paths(shape: object, prefix: str = "") -> set[str]:
    """`a`, `a.b`, … of a shape (arrays by their first item); "…" keys left out."""
    if isinstance(shape, list):
        return key_paths(shape[0], prefix) if shape else set()
    if not isinstance(shape, dict):
        return set()
    paths = set()
    for key, item in shape.items():
        if key != "…":
            paths |= {prefix + key} | key_paths(item, f"{prefix}{key}.")
    return paths


def check_json(shown: object, printed: list[object]) -> list[str]:
    if any(same_shape(keys(shown), keys(value)) for value in printed):
        return []
    nearest = next((value for value in printed if isinstance(value, type(shown))), None)
    if nearest is None:
        return [f"no JSON {type(shown).__name__} printed"]
    shown_paths, printed_paths = key_paths(keys(shown)), key_paths(keys(nearest))
    return [
        f"the JSON printed differs in its keys: not in the docs {sorted(printed_paths - shown_paths)}, not printed"
        f" {sorted(shown_paths - printed_paths)}"
    ]


def test_json_shapes_compare_keys_not_values() -> None:
    assert check_json({"a": 1, "b": {"c": 2}}, [{"a": 5, "b": {"c": None}}]) == []
    assert check_json({"a": 1}, [{"a": 1, "new": 2}]) != []
    assert check_json({"a": 1, "…": "more"}, [{"a": 1, "new": 2}]) == []
    assert check_json([{"a": 1}], [[{"a": 2}], []]) == []
    assert check_json({"a": 1, "b": {"c": 2}}, [{"a": 1, "b": {"d": 2}}]) == [
        "the JSON printed differs in its keys: not in the docs ['b.d'], not printed ['b.c']"
    ]


# --- the world the examples run in -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_emulator() -> Iterator[EmulatorServer]:
    """A clinic like the emulator's default one (what `cliniko-sync emulator` serves) but smaller, so the examples'
    syncs are quick (what they print is compared in shape, not in counts), accepting the docs' demo key."""
    server = EmulatorServer(generate_clinic(patients=200), api_keys=[DOCS_API_KEY], rate_limit=None).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def docs_template(
    pg_admin_url: str, template_url: str, docs_emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database where surf-rehab is added, holds the emulator's key and is synced once."""
    name = f"cliniko_sync_docs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY")
    env = {**base_env(tmp_path_factory.mktemp("docs")), "DATABASE_URL": url_for_database(pg_admin_url, name)}
    for args, given in (
        (["org", "add", "surf-rehab", "--name", "Surf Rehab"], None),
        (["credentials", "set", "surf-rehab", "--api-url", docs_emulator.base_url], DOCS_API_KEY),
        (["-q", "sync", "surf-rehab"], None),
    ):
        result = run_cli_in_process(args, env, input=given)
        assert result.returncode == 0, result.stderr
    yield name
    drop_database(pg_admin_url, name)


def base_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(home),
        CLINIKO_SYNC_DATA_DIR=str(home / "data"),
        CREDENTIALS_ENCRYPTION_KEY=TEST_ENCRYPTION_KEY,
        CLINIKO_SYNC_CONTACT_EMAIL=TEST_CONTACT_EMAIL,
        CLINIKO_SYNC_RATE_LIMIT="off",
        COLUMNS="250",
        TERM="xterm",
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class World:
    env: dict[str, str]
    directory: Path
    replacements: dict[str, str]


@pytest.fixture
def world(
    request: pytest.FixtureRequest, pg_admin_url: str, docs_template: str, docs_emulator: EmulatorServer
) -> Iterator[World]:
    example: Example = request.param
    given = [item.strip() for item in example.options.get("given", "").split(",") if item.strip()]
    directory = Path(tempfile.mkdtemp(prefix="docs-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    env = base_env(directory)
    env.update(OLD_KEY=TEST_ENCRYPTION_KEY, NEW_KEY=Fernet.generate_key().decode(), DASHBOARD_PASSWORD="d4sh-Board!")
    name = f"cliniko_sync_docs_{uuid.uuid4().hex[:10]}"
    roles = [item.split()[1] for item in given if item.startswith("role ")]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        template = "" if "empty database" in given else f" TEMPLATE {docs_template} STRATEGY FILE_COPY"
        admin.execute(f"CREATE DATABASE {name}{template}")
        for role in roles:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    env["DATABASE_URL"] = url_for_database(pg_admin_url, name)
    for slug in (item for item in given if re.fullmatch(r"[a-z0-9-]+", item)):
        result = run_cli_in_process(["org", "add", slug, "--name", slug.replace("-", " ").title()], env)
        assert result.returncode == 0, result.stderr
    if "zero configuration" in given:
        for variable in ("DATABASE_URL", "CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
            del env[variable]
    emulator = docs_emulator.base_url.split("//")[1].split("/")[0]
    yield World(env, directory, {DOCS_EMULATOR: emulator, "--port 8765": f"--port {free_port()}"})
    # The roles it was given, and those its commands created (`db grant ROLE … --create`): roles outlive a database.
    roles += re.findall(r"db grant ([\w-]+) [^\n]*--create", example.body)
    drop_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        for role in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- running a block on a terminal -------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r(?!\n)")
STEP_MARK = "@@docs-example-step"


def on_terminal(script: str, world: World, stop_at: str | None = None) -> str:
    """Run a bash script with stdin, stdout and stderr on a pseudo-terminal; what it printed, escapes removed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, int(world.env["COLUMNS"]), 0, 0))
    process = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-c", script],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=world.directory,
        env=world.env,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + STEP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                if stop_at and stop_at in b"".join(chunks).decode(errors="replace"):
                    os.killpg(process.pid, signal.SIGINT)
                    stop_at = None
            elif process.poll() is not None:
                break
        else:
            pytest.fail(f"the example did not finish in {STEP_TIMEOUT} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.close(master)
    return ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r\n", "\n")


def run_steps(example: Example, world: World) -> list[tuple[Step, str, int]]:
    steps = example.steps()
    lines = []
    for number, step in enumerate(steps):
        command = step.command
        for docs, here in world.replacements.items():
            command = command.replace(docs, here)
        lines.append(f"echo '{STEP_MARK} {number}@@'\n{command}\necho \"{STEP_MARK} status $? ${{PIPESTATUS[0]}}@@\"")
    printed = on_terminal("\n".join(lines), world, stop_at=example.options.get("stop at"))
    results = []
    for number, step in enumerate(steps):
        after = printed.split(f"{STEP_MARK} {number}@@\n", 1)[1]
        output, _, rest = after.partition(f"{STEP_MARK} status ")
        statuses = [int(word) for word in rest.split("@@", 1)[0].split()] if rest else [-1, -1]
        status = statuses[0] if step.status_of == "pipeline" else statuses[1]
        results.append((step, output, status))
    return results


@pytest.mark.parametrize("world", RUN, ids=[example.id for example in RUN], indirect=True)
def test_example_runs_as_shown(world: World, request: pytest.FixtureRequest) -> None:
    example: Example = request.node.callspec.params["world"]
    if "| jq " in example.body and not shutil.which("jq"):
        pytest.skip("jq is not installed (Debian: apt-get install jq)")
    problems = []
    for step, output, status in run_steps(example, world):
        printed = "\n".join(line for line in output.splitlines() if "━━" not in line)  # without progress bars
        if status != step.exit_code:
            problems.append(f"`{step.command}` exited {status}, the docs say {step.exit_code}; it printed:\n{printed}")
            continue
        problems += [f"`{step.command}`: {problem}; it printed:\n{printed}" for problem in check_output(step, output)]
    assert not problems, f"{example.id}: " + "\n".join(problems)


@pytest.mark.parametrize("world", OUTPUTS, ids=[example.id for example in OUTPUTS], indirect=True)
def test_json_output_has_the_keys_shown(world: World, request: pytest.FixtureRequest) -> None:
    example: Example = request.node.callspec.params["world"]
    command = example.options["reason"]
    printed = subprocess.run(
        ["bash", "-c", command],
        env=world.env,
        cwd=world.directory,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert printed.returncode == 0, printed.stderr
    assert check_json(json.loads(example.body), [json.loads(printed.stdout)]) == [], f"{example.id}: `{command}`"
