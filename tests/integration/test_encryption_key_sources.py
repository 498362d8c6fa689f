"""Where the encryption key comes from: CREDENTIALS_ENCRYPTION_KEY (the value), CREDENTIALS_ENCRYPTION_KEY_FILE (a
file holding it), or the systemd credential $CREDENTIALS_DIRECTORY/cliniko-sync-encryption-key (LoadCredential=, see
contrib/systemd/). The precedence, and a bad file as one line on stderr with exit 78 that never shows the file's
content."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from test_credentials import API_KEY, assert_one_line_error

from cliniko_sync.config import (
    ENCRYPTION_KEY_CREDENTIAL,
    ENV_CREDENTIALS_DIRECTORY,
    ENV_ENCRYPTION_KEY,
    ENV_ENCRYPTION_KEY_FILE,
    encryption_keys,
)
from cliniko_sync.errors import EXIT_CONFIG, ConfigError

# Fixed keys (parametrize ids show them, and pytest-xdist workers must collect the same ids).
VARIABLE_KEY, FILE_KEY, CREDENTIAL_KEY, OLD_KEY = (base64.urlsafe_b64encode(bytes([n]) * 32).decode() for n in range(4))


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Each source holding its own key, none of them set in the environment yet."""
    for name in (ENV_ENCRYPTION_KEY, ENV_ENCRYPTION_KEY_FILE, ENV_CREDENTIALS_DIRECTORY):
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(FILE_KEY + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / ENCRYPTION_KEY_CREDENTIAL).write_text(CREDENTIAL_KEY)
    return {ENV_ENCRYPTION_KEY: VARIABLE_KEY, ENV_ENCRYPTION_KEY_FILE: str(key_file),
            ENV_CREDENTIALS_DIRECTORY: str(credentials)}  # fmt: skip


@pytest.mark.parametrize(
    ("set_", "expected"),
    [
        ((ENV_ENCRYPTION_KEY,), VARIABLE_KEY),
        ((ENV_ENCRYPTION_KEY_FILE,), FILE_KEY),
        ((ENV_CREDENTIALS_DIRECTORY,), CREDENTIAL_KEY),
        ((ENV_ENCRYPTION_KEY, ENV_CREDENTIALS_DIRECTORY), VARIABLE_KEY),
        ((ENV_ENCRYPTION_KEY_FILE, ENV_CREDENTIALS_DIRECTORY), FILE_KEY),
    ],
)
def test_the_variable_then_the_file_then_the_systemd_credential(
    sources: dict[str, str], monkeypatch: pytest.MonkeyPatch, set_: tuple[str, ...], expected: str
) -> None:
    for name in set_:
        monkeypatch.setenv(name, sources[name])
    assert encryption_keys()[1] == [expected]


def test_the_variable_and_the_file_together_are_refused(
    sources: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (ENV_ENCRYPTION_KEY, ENV_ENCRYPTION_KEY_FILE):
        monkeypatch.setenv(name, sources[name])
    with pytest.raises(ConfigError, match="set only one"):
        encryption_keys()


def test_a_credentials_directory_without_the_key_is_not_a_source(
    sources: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # systemd sets $CREDENTIALS_DIRECTORY for any LoadCredential=, e.g. only the database password's.
    monkeypatch.setenv(ENV_CREDENTIALS_DIRECTORY, str(tmp_path))
    assert encryption_keys() == (ENV_ENCRYPTION_KEY, [])


def test_a_key_file_may_list_keys_for_rotation_one_a_line_or_comma_separated(
    sources: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rotating = tmp_path / "rotating"
    monkeypatch.setenv(ENV_ENCRYPTION_KEY_FILE, str(rotating))
    rotating.write_text(f"{FILE_KEY}\n{OLD_KEY}\n")
    assert encryption_keys()[1] == [FILE_KEY, OLD_KEY]
    rotating.write_text(f" {FILE_KEY}, {OLD_KEY} ")
    assert encryption_keys()[1] == [FILE_KEY, OLD_KEY]


def test_credentials_set_encrypts_with_the_systemd_credential(cli: Any, conn: Any, sources: dict[str, str]) -> None:
    env = {ENV_ENCRYPTION_KEY: "", ENV_CREDENTIALS_DIRECTORY: sources[ENV_CREDENTIALS_DIRECTORY]}
    assert cli("org", "add", "surf-rehab", "--name", "Surf Rehab").returncode == 0
    result = cli("credentials", "set", "surf-rehab", input=API_KEY + "\n", env=env)
    assert result.returncode == 0, result.stderr
    token = conn.execute("SELECT token FROM api_credentials WHERE organization_id = 'surf-rehab'").fetchone()["token"]
    assert API_KEY in Fernet(CREDENTIAL_KEY.encode()).decrypt(token.encode()).decode()


@pytest.mark.parametrize("source", [ENV_ENCRYPTION_KEY_FILE, ENV_CREDENTIALS_DIRECTORY])
def test_rotation_and_decryption_name_the_source_they_used(
    cli: Any, sources: dict[str, str], source: str, tmp_path: Path
) -> None:
    """The key came from a file: every message about it names that file, never the variable that was not used."""
    env = {ENV_ENCRYPTION_KEY: "", source: sources[source]}
    path = (
        sources[ENV_ENCRYPTION_KEY_FILE]
        if source == ENV_ENCRYPTION_KEY_FILE
        else str(Path(sources[ENV_CREDENTIALS_DIRECTORY]) / ENCRYPTION_KEY_CREDENTIAL)
    )
    named = f"the key file {path}" if source == ENV_ENCRYPTION_KEY_FILE else f"the systemd credential {path}"
    assert cli("org", "add", "surf-rehab", "--name", "Surf Rehab").returncode == 0
    assert cli("credentials", "set", "surf-rehab", input=API_KEY + "\n", env=env).returncode == 0
    rotated = cli("credentials", "rotate", env=env)
    assert rotated.stdout == f"re-encrypted 1 stored credential with the first key in {named}\n", rotated.stderr
    Path(path).write_text(OLD_KEY)  # a key that did not encrypt them
    refused = cli("credentials", "rotate", env=env)
    assert_one_line_error(refused, EXIT_CONFIG, f"with any key in {named}; nothing was rotated")
    checked = cli("check-credentials", "surf-rehab", "--format", "json", env=env)
    assert checked.returncode == EXIT_CONFIG
    assert f"cannot decrypt the stored API key of surf-rehab with {named}: wrong key?" in checked.stdout
    assert ENV_ENCRYPTION_KEY not in refused.stderr + checked.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read the key file"),  # missing
        ("directory", "cannot read the key file"),  # not a file (root reads any file, so no chmod 000)
        ("", "is empty"),
        (" \n\n", "is empty"),
        (b"\xff\xfe-secret", "is not UTF-8"),
        ("not-a-fernet-key-secret", "key #1 is not a valid Fernet key"),
    ],
)
def test_a_bad_key_file_is_one_line_and_exit_78(
    cli: Any, tmp_path: Path, content: str | bytes | None, fragment: str
) -> None:
    path = tmp_path / "key"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert cli("org", "add", "surf-rehab", "--name", "Surf Rehab").returncode == 0
    result = cli("credentials", "set", "surf-rehab", input=API_KEY + "\n",
                 env={ENV_ENCRYPTION_KEY: "", ENV_ENCRYPTION_KEY_FILE: str(path)})  # fmt: skip
    assert_one_line_error(result, EXIT_CONFIG, fragment)
    assert str(path) in result.stderr and "secret" not in result.stderr
