"""NATS users of a Tranche deployment (deploy/nats/permissions.conf) and their passwords.

The embedded stack makes a fresh random password per user at every start, gives the NATS server
all of them (its environment) and each service only its own (``TRANCHE_NATS_USER`` and
``TRANCHE_NATS_PASSWORD``), and writes them to ``<data dir>/secrets/nats-<user>`` (mode 0600),
where the operator's commands (``tranche signal``, ``tranche halt``, the live view) read the
``operator`` one. ``admin`` (the whole JetStream API) only provisions the streams and is for
backups and repairs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import string
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

SERVICE_USERS = ("signal", "safety", "executor", "ledger", "dashboard")
USERS = (*SERVICE_USERS, "operator", "admin")
SECRETS_DIR = "secrets"


def new_password(length: int = 32) -> str:
    """Letters and digits, starting with a letter: NATS reads an environment value that starts
    with a digit or '-' as a number and refuses the config."""
    alphabet = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(
        secrets.choice(alphabet) for _ in range(length - 1)
    )


def new_passwords() -> dict[str, str]:
    return {user: new_password() for user in USERS}


def server_env(passwords: dict[str, str]) -> dict[str, str]:
    """What the NATS server's environment needs for permissions.conf."""
    return {f"TRANCHE_NATS_PASSWORD_{user.upper()}": pw for user, pw in passwords.items()}


def password_file(data_dir: Path, user: str) -> Path:
    return data_dir / SECRETS_DIR / f"nats-{user}"


def write_passwords(data_dir: Path, passwords: dict[str, str]) -> None:
    """One file per user, readable by the owner only, in a directory only the owner can list."""
    folder = data_dir / SECRETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for user, password in passwords.items():
        path = password_file(data_dir, user)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(password)
        path.chmod(0o600)  # an older file keeps its mode through O_CREAT


SIGNING_KEY = "signing-key.pem"
SIGNING_PUBLIC_KEY = "signing-public-key.pem"
ORDER_SIGNING_KEY = "order-signing-key.pem"
ORDER_SIGNING_PUBLIC_KEY = "order-signing-public-key.pem"


def signing_keys(data_dir: Path) -> tuple[Path, Path]:
    """Safety's Ed25519 key pair of this data directory (shared/signing.py); see
    :func:`key_pair`. Returns (private key file, public key file)."""
    return key_pair(data_dir, SIGNING_KEY, SIGNING_PUBLIC_KEY)


def order_signing_keys(data_dir: Path) -> tuple[Path, Path]:
    """The executor's own Ed25519 key pair of this data directory, which signs its order events
    (shared/signing.py); see :func:`key_pair`. Returns (private key file, public key file)."""
    return key_pair(data_dir, ORDER_SIGNING_KEY, ORDER_SIGNING_PUBLIC_KEY)


def key_pair(data_dir: Path, private_name: str, public_name: str) -> tuple[Path, Path]:
    """A key pair in ``<data dir>/secrets/``: made once, kept across restarts (messages stored
    in the streams stay verifiable), readable by the owner only."""
    from shared.signing import new_key_pair

    folder = data_dir / SECRETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    private, public = folder / private_name, folder / public_name
    if not private.is_file() or not public.is_file():
        private_pem, public_pem = new_key_pair()
        descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(private_pem)
        public.write_text(public_pem)
    private.chmod(0o600)
    public.chmod(0o600)
    return private, public


def signing_public_key(data_dir: str | Path | None = None) -> str | None:
    """Safety's public key for the operator's commands: ``TRANCHE_SIGNING_PUBLIC_KEY``, else
    the file ``TRANCHE_SIGNING_PUBLIC_KEY_FILE`` names, else the embedded stack's, else none."""
    given = os.environ.get("TRANCHE_SIGNING_PUBLIC_KEY")
    if given:
        return given
    named = os.environ.get("TRANCHE_SIGNING_PUBLIC_KEY_FILE")
    folder = Path(data_dir or os.environ.get("TRANCHE_DATA_DIR") or "var")
    path = Path(named) if named else folder / SECRETS_DIR / SIGNING_PUBLIC_KEY
    return path.read_text() if path.is_file() else None


def with_user(nats_url: str, user: str, password: str) -> str:
    """``nats://user:password@host:port`` (for tests and tools that take one URL)."""
    parts = urlsplit(nats_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def operator_auth(data_dir: str | Path | None = None, user: str = "operator") -> dict[str, str]:
    """Connect options for the operator's commands: ``TRANCHE_NATS_USER`` and
    ``TRANCHE_NATS_PASSWORD`` when set (compose, Kubernetes), else ``user``'s password the
    embedded stack wrote into its data directory (``TRANCHE_DATA_DIR``, default ``var``), else
    none (a NATS server without users). A command that reads what one service reads (``tranche
    ledger rebuild``) logs in as that service's user."""
    given, password = os.environ.get("TRANCHE_NATS_USER"), os.environ.get("TRANCHE_NATS_PASSWORD")
    if given:
        return {"user": given, "password": password or ""}
    folder = Path(data_dir or os.environ.get("TRANCHE_DATA_DIR") or "var")
    path = password_file(folder, user)
    if path.is_file():
        return {"user": user, "password": path.read_text().strip()}
    return {}


CONNECT_S = 2.0
"""How long an operator command waits for NATS before it says the stack is not running."""


async def operator_connect(
    nats_url: str, data_dir: str | Path | None = None, user: str = "operator"
):
    """A NATS connection for one operator command (no reconnects), as :func:`operator_auth`'s
    user. Raises ``ConnectionError`` with one sentence within :data:`CONNECT_S`, never a
    traceback on the terminal (nats-py alone retries a refused connection for ever)."""
    import asyncio

    import nats

    auth = operator_auth(data_dir, user)
    refusals: list[Exception] = []
    refused = asyncio.Event()

    async def on_error(error: Exception) -> None:
        refusals.append(error)
        refused.set()

    connecting = asyncio.ensure_future(
        nats.connect(
            nats_url,
            connect_timeout=CONNECT_S,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=on_error,
            **auth,
        )
    )
    waiting = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait({connecting, waiting}, timeout=CONNECT_S, return_when="FIRST_COMPLETED")
    finally:
        waiting.cancel()
    if connecting.done() and connecting.exception() is None:
        return connecting.result()
    error: BaseException | None = None
    if connecting.done():
        error = connecting.exception()
    else:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
    if any("authorization" in str(seen).lower() for seen in [*refusals, error]):
        who = f"user {auth['user']}" if auth else "a connection without a user"
        raise ConnectionError(
            f"NATS refused {who}: set TRANCHE_NATS_USER and TRANCHE_NATS_PASSWORD, or "
            "TRANCHE_DATA_DIR to the data directory of the running tranche up"
        )
    raise ConnectionError(not_running(nats_url))


def not_running(nats_url: str) -> str:
    """The one sentence for a NATS server that does not answer."""
    address = urlsplit(nats_url)
    return (
        f"cannot reach NATS at {address.hostname}:{address.port or 4222}: is the stack running"
        " (tranche up)?"
    )
