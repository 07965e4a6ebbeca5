"""The embedded stack's NATS passwords: how they are made, stored and found by the CLI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tranche import credentials


def test_passwords_start_with_a_letter_and_differ_per_user() -> None:
    passwords = credentials.new_passwords()
    assert set(passwords) == set(credentials.USERS)
    assert len(set(passwords.values())) == len(passwords)
    for password in passwords.values():
        assert password[0].isalpha() and password.isalnum() and len(password) == 32


def test_the_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    passwords = credentials.new_passwords()
    credentials.write_passwords(tmp_path, passwords)
    folder = tmp_path / credentials.SECRETS_DIR
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for user, password in passwords.items():
        path = credentials.password_file(tmp_path, user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == password
    path.chmod(0o644)  # a file left readable by an older run is tightened again
    credentials.write_passwords(tmp_path, passwords)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_operator_commands_prefer_the_environment_then_the_stacks_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRANCHE_NATS_USER", raising=False)
    monkeypatch.delenv("TRANCHE_NATS_PASSWORD", raising=False)
    assert credentials.operator_auth(tmp_path) == {}  # a server without users
    credentials.write_passwords(tmp_path, {"operator": "Secret1"})
    assert credentials.operator_auth(tmp_path) == {"user": "operator", "password": "Secret1"}
    monkeypatch.setenv("TRANCHE_DATA_DIR", str(tmp_path))
    assert credentials.operator_auth() == {"user": "operator", "password": "Secret1"}
    monkeypatch.setenv("TRANCHE_NATS_USER", "admin")
    monkeypatch.setenv("TRANCHE_NATS_PASSWORD", "Other2")
    assert credentials.operator_auth(tmp_path) == {"user": "admin", "password": "Other2"}


def test_a_url_carries_the_user_and_password() -> None:
    url = credentials.with_user("nats://127.0.0.1:4250", "admin", "Pass9")
    assert url == "nats://admin:Pass9@127.0.0.1:4250"
    assert credentials.server_env({"admin": "Pass9"}) == {"TRANCHE_NATS_PASSWORD_ADMIN": "Pass9"}


def test_safetys_signing_keys_are_made_once_per_data_dir_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    from shared.signing import Signer, Verifier

    private, public = credentials.signing_keys(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / credentials.SECRETS_DIR).stat().st_mode) == 0o700
    headers = Signer(private.read_text()).headers("s", b"{}")
    assert Verifier(public.read_text()).valid("s", b"{}", headers)
    again = credentials.signing_keys(tmp_path)  # a restart keeps the pair
    assert again[0].read_text() == private.read_text()


def test_the_cli_finds_safetys_public_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANCHE_SIGNING_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("TRANCHE_SIGNING_PUBLIC_KEY_FILE", raising=False)
    assert credentials.signing_public_key(tmp_path) is None
    _, public = credentials.signing_keys(tmp_path)
    assert credentials.signing_public_key(tmp_path) == public.read_text()
    monkeypatch.setenv("TRANCHE_SIGNING_PUBLIC_KEY", "given")
    assert credentials.signing_public_key(tmp_path) == "given"


@pytest.mark.parametrize(
    ("service", "variable", "kept"),
    [
        ("safety", "TRANCHE_SIGNING_KEY", credentials.signing_keys),
        ("executor", "TRANCHE_ORDER_SIGNING_KEY", credentials.order_signing_keys),
    ],
)
def test_an_outbox_replay_re_signs_each_signers_rows_with_its_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: str, variable: str, kept
) -> None:
    from shared.signing import SigningKeyError, Verifier
    from tranche.outbox_cli import signer_of

    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SigningKeyError, match=variable):
        signer_of(service, tmp_path)
    _, public = kept(tmp_path)  # what tranche up keeps
    headers = signer_of(service, tmp_path).headers("s", b"{}")
    assert Verifier(public.read_text()).valid("s", b"{}", headers)


def test_the_executors_key_pair_is_its_own_made_once_per_data_dir(tmp_path: Path) -> None:
    from shared.signing import Signer, Verifier

    private, public = credentials.order_signing_keys(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    headers = Signer(private.read_text()).headers("s", b"{}")
    assert Verifier(public.read_text()).valid("s", b"{}", headers)
    _, safetys = credentials.signing_keys(tmp_path)
    assert not Verifier(safetys.read_text()).valid("s", b"{}", headers)  # two pairs, not one
    assert credentials.order_signing_keys(tmp_path)[0].read_text() == private.read_text()


def test_the_embedded_stack_gives_each_private_key_to_its_signer_alone(tmp_path: Path) -> None:
    from tranche.stack import EmbeddedStack, StackConfig

    stack = EmbeddedStack(StackConfig(data_dir=tmp_path))
    private, public = credentials.order_signing_keys(tmp_path)
    for name in ("signal", "safety", "executor", "ledger", "dashboard"):
        env = stack.service_env(name)
        assert ("TRANCHE_SIGNING_KEY_FILE" in env) == (name == "safety"), name
        assert ("TRANCHE_ORDER_SIGNING_KEY_FILE" in env) == (name == "executor"), name
        assert "TRANCHE_ORDER_SIGNING_KEY" not in env  # the suite's own, not handed on
        if name == "executor":
            assert env["TRANCHE_ORDER_SIGNING_KEY_FILE"] == str(private)
        else:  # every reader of order events verifies with the executor's public key
            assert env["TRANCHE_ORDER_SIGNING_PUBLIC_KEY_FILE"] == str(public)
