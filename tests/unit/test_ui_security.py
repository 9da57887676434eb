"""The UI's security decisions that need no server: which bind addresses need authentication, whom
a trusted header names, CSRF token comparison, where a form may send the browser next, and that
the core never loads the ``ui`` extra."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from flowstone import cli, errors
from flowstone.ui import security

ANY = "0.0.0.0"  # noqa: S104 - the address whose refusal is tested


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_addresses_need_no_authentication(host):
    auth = security.Auth.for_host(host, local_actor="me", trust_header=None, trusted_proxies=[])
    assert auth.user({}, "127.0.0.1") == "me"


@pytest.mark.parametrize("host", [ANY, "192.0.2.7", "example.org", "::"])
def test_other_addresses_are_refused_without_an_authentication_mode(host):
    with pytest.raises(errors.ConfigurationError, match="without authentication"):
        security.Auth.for_host(host, local_actor="me", trust_header=None, trusted_proxies=[])


def test_a_trusted_header_needs_its_proxy_and_is_believed_only_from_it():
    with pytest.raises(errors.ConfigurationError, match="--trusted-proxy"):
        security.Auth.for_host(ANY, local_actor="me", trust_header="X-Forwarded-User", trusted_proxies=[])
    auth = security.Auth.for_host(
        ANY, local_actor="me", trust_header="X-Forwarded-User", trusted_proxies=["192.0.2.1"]
    )
    assert auth.user({"x-forwarded-user": "carol"}, "192.0.2.1") == "carol"
    with pytest.raises(security.AuthError) as forged:
        auth.user({"x-forwarded-user": "carol"}, "192.0.2.99")
    assert forged.value.status == 403
    with pytest.raises(security.AuthError) as anonymous:
        auth.user({}, "192.0.2.1")
    assert anonymous.value.status == 401


def test_csrf_tokens_compare_exactly_and_never_match_empty():
    token = security.new_token()
    assert security.same_token(token, token)
    assert not security.same_token(token[:-1] + "x", token)
    assert not security.same_token("", "")
    assert not security.same_token(None, token)


def test_the_next_page_stays_on_this_site():
    from flowstone.ui import app  # noqa: PLC0415

    assert app._next("/runs?status=failed") == "/runs?status=failed"
    for hostile in ["//evil.example/x", "https://evil.example", "/\\evil.example", "", None]:
        assert app._next(hostile) == "/"


def test_the_cli_refuses_a_public_address_before_opening_anything(capsys):
    assert cli.main(["ui", "--host", ANY, "--database-url", "postgresql://nobody@127.0.0.1:1/x"]) == 1
    assert "without authentication" in capsys.readouterr().err


def test_the_core_and_the_cli_never_load_the_ui_extra():
    code = (
        "import sys, flowstone, flowstone.cli\n"
        "extra = ('starlette', 'uvicorn', 'jinja2', 'grandalf', 'flowstone.ui')\n"
        "loaded = [m for m in extra if m in sys.modules]\n"
        "assert loaded == [], loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_users_file_holds_argon2_hashes_and_checks_passwords(tmp_path):
    hashed = security.hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert security.hash_password("s3cret") != hashed  # salted
    path = tmp_path / "users"
    path.write_text(f"# operators\nalice:{hashed}\n\n")
    users = security.Users.load(path)
    assert users.check("alice", "s3cret")
    assert users.check("alice", "s3cret")  # remembered, still right
    assert not users.check("alice", "wrong")
    assert not users.check("mallory", "s3cret")
    auth = security.Auth.for_host(
        ANY, local_actor="me", trust_header=None, trusted_proxies=[], users_file=path
    )
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert auth.user({"authorization": basic}, "192.0.2.9") == "alice"
    for bad in ["", "Basic !!!", "Basic " + base64.b64encode(b"alice:nope").decode(), "Bearer x"]:
        with pytest.raises(security.AuthError) as refused:
            auth.user({"authorization": bad}, "192.0.2.9")
        assert refused.value.status == 401


def test_a_malformed_or_empty_users_file_and_two_modes_are_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("alice:plaintext\n")
    with pytest.raises(errors.ConfigurationError, match="bad:1: expected name:"):
        security.Users.load(bad)
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n")
    with pytest.raises(errors.ConfigurationError, match="names no user"):
        security.Users.load(empty)
    with pytest.raises(errors.ConfigurationError, match="not both"):
        security.Auth.for_host(
            ANY, local_actor="me", trust_header="X-User", trusted_proxies=["192.0.2.1"], users_file=bad
        )


def test_the_cli_prints_a_password_hash_for_the_users_file():
    done = subprocess.run(
        [sys.executable, "-m", "flowstone.cli", "ui", "--hash-password"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    hashed = done.stdout.strip()
    assert hashed.startswith("$argon2id$")
    from argon2 import PasswordHasher  # noqa: PLC0415

    assert PasswordHasher().verify(hashed, "s3cret")


def test_calendar_cells_are_escaped():
    from flowstone.ui import app  # noqa: PLC0415

    html = str(app._calendar_cells([{"state": 'x"><script>', "x": 1, "y": 2, "label": "<img onerror=1>"}]))
    assert html == '<rect class="c-x&#34;&gt;&lt;script&gt;" x="1" y="2" data-p="&lt;img onerror=1&gt;"/>'
