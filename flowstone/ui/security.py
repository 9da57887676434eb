"""Who is asking, and whether a state-changing request really comes from our own page.

- **Who**: on a loopback address the UI acts as the local user (the runtime's actor). Bound
  elsewhere it needs ``--trust-header``: the user named by a header that an authenticating proxy
  (oauth2-proxy and the like) sets; a request carrying it from any address but a
  ``--trusted-proxy`` is refused, so a client cannot name itself.
- **CSRF**: every POST carries a token equal to the ``flowstone_csrf`` cookie (a form field, or the
  ``X-CSRF-Token`` header for JSON clients; double-submit), and a browser's ``Origin``, when sent,
  must be this server's own. The cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field

from flowstone import errors

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Auth", "is_loopback", "new_token", "same_token"]

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


@dataclass(frozen=True)
class Auth:
    """How the UI learns the user: the local actor, or a header from trusted proxies."""

    local_actor: str
    trust_header: str | None = None
    trusted_proxies: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_host(
        cls, host: str, *, local_actor: str, trust_header: str | None, trusted_proxies: list[str]
    ) -> Auth:
        """The mode for a bind address; refuses a non-loopback address without an authentication
        mode, and a trusted header without the proxies allowed to set it."""
        if trust_header is not None and not trusted_proxies:
            raise errors.ConfigurationError(
                "--trust-header needs --trusted-proxy ADDRESS (the proxy that sets the header)"
            )
        if trust_header is None and not is_loopback(host):
            raise errors.ConfigurationError(
                f"refusing to serve on {host} without authentication: anyone who reaches it could "
                "approve and cancel. Put an authenticating proxy in front and pass --trust-header "
                "X-Forwarded-User --trusted-proxy ADDRESS, or bind 127.0.0.1"
            )
        return cls(local_actor, trust_header, frozenset(trusted_proxies))

    def user(self, headers: dict[str, str], client_host: str | None) -> str:
        """The user a request acts as (headers by lower-case name)."""
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
