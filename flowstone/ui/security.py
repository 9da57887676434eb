"""Who is asking, and whether a state-changing request really comes from our own page.

- **Who**: on a loopback address the UI acts as the local user (the runtime's actor). Bound
  elsewhere it needs an authentication mode: ``--users-file`` (``name:argon2-hash`` lines; HTTP
  Basic authentication, verified with argon2 once per process for each user and password), or
  ``--trust-header``: the user named by a header that an authenticating proxy (oauth2-proxy and
  the like) sets; a request carrying it from any address but a ``--trusted-proxy`` is refused, so a
  client cannot name itself.
- **CSRF**: every POST carries a token equal to the ``flowstone_csrf`` cookie (a form field, or the
  ``X-CSRF-Token`` header for JSON clients; double-submit), and a browser's ``Origin``, when sent,
  must be this server's own. The cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flowstone import errors

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "Auth",
    "Users",
    "hash_password",
    "is_loopback",
    "new_token",
    "same_token",
]

CSRF_COOKIE = "flowstone_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No inline script or style anywhere: injected markup cannot run even if escaping failed."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh CSRF token (32 random bytes)."""
    return secrets.token_urlsafe(32)


def same_token(sent: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


class AuthError(errors.FlowStoneError):
    """A request whose user could not be established (401) or may not be believed (403)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted), for a line ``name:HASH`` of the users file."""
    from argon2 import PasswordHasher  # noqa: PLC0415 - the `ui` extra

    return PasswordHasher().hash(password)


class Users:
    """The users file: ``name:argon2-hash`` per line, ``#`` comments. A verified (user, password)
    is remembered for the life of the process under a keyed digest (never the password), so that
    argon2's deliberate slowness is paid once, not on every request."""

    def __init__(self, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> Users:
        """Read a users file; a malformed line or an empty file is refused."""
        hashes: dict[str, str] = {}
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise errors.ConfigurationError(f"cannot read the users file {path}: {exc}") from exc
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, hashed = line.partition(":")
            if not sep or not name.strip() or not hashed.startswith("$argon2"):
                raise errors.ConfigurationError(
                    f"{path}:{number}: expected name:$argon2id$... "
                    "(make a hash with `flowstone ui --hash-password`)"
                )
            hashes[name.strip()] = hashed.strip()
        if not hashes:
            raise errors.ConfigurationError(f"the users file {path} names no user")
        return cls(hashes)

    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s."""
        hashed = self.hashes.get(name)
        if hashed is None:
            return False
        digest = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if digest in self._verified:
                return True
        from argon2 import PasswordHasher  # noqa: PLC0415 - the `ui` extra
        from argon2.exceptions import VerificationError, VerifyMismatchError  # noqa: PLC0415

        try:
            PasswordHasher().verify(hashed, password)
        except (VerifyMismatchError, VerificationError):
            return False
        with self._lock:
            self._verified.add(digest)
        return True


@dataclass(frozen=True)
class Auth:
    """How the UI learns the user: the local actor, a users file, or a header from trusted proxies."""

    local_actor: str
    trust_header: str | None = None
    trusted_proxies: frozenset[str] = field(default_factory=frozenset)
    users: Users | None = None

    @classmethod
    def for_host(
        cls,
        host: str,
        *,
        local_actor: str,
        trust_header: str | None,
        trusted_proxies: list[str],
        users_file: str | Path | None = None,
    ) -> Auth:
        """The mode for a bind address; refuses a non-loopback address without an authentication
        mode, two modes at once, and a trusted header without the proxies allowed to set it."""
        if trust_header is not None and users_file is not None:
            raise errors.ConfigurationError("pass --users-file or --trust-header, not both")
        if trust_header is not None and not trusted_proxies:
            raise errors.ConfigurationError(
                "--trust-header needs --trusted-proxy ADDRESS (the proxy that sets the header)"
            )
        if trust_header is None and users_file is None and not is_loopback(host):
            raise errors.ConfigurationError(
                f"refusing to serve on {host} without authentication: anyone who reaches it could "
                "approve and cancel. Pass --users-file FILE (name:argon2-hash lines), or put an "
                "authenticating proxy in front and pass --trust-header X-Forwarded-User "
                "--trusted-proxy ADDRESS, or bind 127.0.0.1"
            )
        users = Users.load(users_file) if users_file is not None else None
        return cls(local_actor, trust_header, frozenset(trusted_proxies), users)

    def user(self, headers: dict[str, str], client_host: str | None) -> str:
        """The user a request acts as (headers by lower-case name)."""
        if self.users is not None:
            return self._basic(headers.get("authorization", ""))
        if self.trust_header is None:
            return self.local_actor
        if client_host not in self.trusted_proxies:
            raise AuthError(
                f"requests must come through the trusted proxy; {client_host} is not one", status=403
            )
        name = headers.get(self.trust_header.lower(), "").strip()
        if not name:
            raise AuthError(f"no {self.trust_header} header: the proxy did not authenticate", status=401)
        return name

    def _basic(self, header: str) -> str:
        assert self.users is not None  # noqa: S101 - the caller checked
        scheme, _, encoded = header.partition(" ")
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep or not self.users.check(name, password):
            raise AuthError("sign in with a user of the users file", status=401)
        return name
