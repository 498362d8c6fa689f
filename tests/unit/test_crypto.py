"""The encryption key from the environment: one key, a rotation list, and every way it can be wrong."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from cliniko_sync.config import ENV_ENCRYPTION_KEY
from cliniko_sync.crypto import Credentials, load_keys
from cliniko_sync.errors import EXIT_CONFIG, ConfigError

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_single_key_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, OLD_KEY)
    fernet = load_keys().fernet

    assert fernet.decrypt(fernet.encrypt(b"secret")) == b"secret"
    assert Fernet(OLD_KEY.encode()).decrypt(fernet.encrypt(b"secret")) == b"secret"


def test_first_key_encrypts_and_every_key_decrypts(monkeypatch: pytest.MonkeyPatch) -> None:
    old_token = Fernet(OLD_KEY.encode()).encrypt(b"old")
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, f" {NEW_KEY} , {OLD_KEY} ,")
    fernet = load_keys().fernet

    assert fernet.decrypt(old_token) == b"old"
    new_token = fernet.encrypt(b"new")
    assert Fernet(NEW_KEY.encode()).decrypt(new_token) == b"new"
    with pytest.raises(InvalidToken):
        Fernet(OLD_KEY.encode()).decrypt(new_token)


@pytest.mark.parametrize("value", [None, "", " ", ",", " , "])
def test_missing_key_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(ENV_ENCRYPTION_KEY, raising=False)
    else:
        monkeypatch.setenv(ENV_ENCRYPTION_KEY, value)

    with pytest.raises(ConfigError, match="cliniko-sync keygen") as caught:
        load_keys()

    assert caught.value.exit_code == EXIT_CONFIG
    assert ENV_ENCRYPTION_KEY in str(caught.value)


@pytest.mark.parametrize(
    ("value", "position"),
    [
        ("not-a-key-at-all", 1),
        (OLD_KEY[:-4], 1),  # truncated
        (OLD_KEY.replace("=", "") + "!!!!", 1),  # not base64
        (f"{NEW_KEY},hunter2-secretish-value", 2),
        ("ÄÖÜ" * 15, 1),  # not ASCII
    ],
    ids=["not-a-key", "truncated", "not-base64", "second-of-two", "not-ascii"],  # the keys are random per process
)
def test_malformed_key_is_refused_unechoed(monkeypatch: pytest.MonkeyPatch, value: str, position: int) -> None:
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, value)

    with pytest.raises(ConfigError) as caught:
        load_keys()

    message = str(caught.value)
    assert f"key #{position} is not a valid Fernet key" in message
    assert "cliniko-sync keygen" in message
    assert "\n" not in message
    for part in value.split(","):
        assert part not in message


def test_credentials_repr_hides_the_api_key() -> None:
    api_key = "MxJrZXkiOiI1Njd1amJmZTQ1NyJ9-au2"
    credentials = Credentials(api_key=api_key, shard="au2", api_url=None)

    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert api_key not in text
        assert "MxJrZXki" not in text
        assert "-au2" in text  # the last four characters, as a hint
    assert credentials.api_key == api_key
