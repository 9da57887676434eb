"""The one validator for SQL identifiers that come from configuration (invariant I5).

Table, schema and column names from settings (an IO manager's ``table=``, a rows-mode column, a
queue name) enter SQL only after :func:`parse_table`, :func:`parse_column` or
:func:`validate_queue_name` accepted them, and they are rendered only with
``psycopg.sql.Identifier`` (:meth:`QualifiedName.sql`). Values are always bound parameters.

A name is accepted when every check passes, in this order (the first failure is the message):

1. it is a ``str``;
2. a table has one or two dot-separated parts (``name`` or ``schema.name``); a column, schema or
   queue name has exactly one;
3. every part matches ``^[a-z_][a-z0-9_]*$``: lowercase ASCII only, so look-alike letters such as
   the Cyrillic U+0430 (which looks like ``a``) are refused, and so is uppercase, because Postgres
   folds unquoted names to lowercase: ``Events`` would name another table in the user's own SQL;
4. every part fits Postgres' 63-byte limit (NAMEDATALEN - 1; longer names are silently truncated
   by the server, so two settings could name the same table);
5. sqlglot's Postgres tokenizer reads the raw text as plain words separated by dots and nothing
   else: no comments, quotes, parameters, operators or whitespace. This is an independent second
   check of what 2-4 already guarantee (defence in depth: loosening the regex by mistake does not
   open a hole);
6. sqlglot's Postgres parser reads the text as it will be rendered (each part double-quoted, which
   is exactly what ``psycopg.sql.Identifier`` produces for these names) as exactly one table
   reference, optionally schema-qualified (``exp.Table`` with no catalog part), or exactly one bare
   column (``exp.Column`` with no table part), without comments;
7. tables only: not in a system schema (``pg_*``, ``information_schema``) and not named ``pg_*``
   (an unqualified ``pg_authid`` resolves to ``pg_catalog.pg_authid``, which is searched first);
8. tables only: when an allow-list is given, the table is in it (the same schema and name; an
   unqualified entry matches only an unqualified table).

**Reserved words are allowed** (``select``, ``order``, ``user`` as a table or column name): the
name is always rendered quoted by ``psycopg.sql.Identifier`` (``"select"``), where a keyword is just
a name and cannot change the statement. Since every part is already lowercase, the quoted name is
the same name Postgres would use for the unquoted spelling, so a user's own SQL reaches the same
table (quoting it there is the user's business). This is also why check 5 tokenizes the raw text
instead of parsing it: sqlglot's parser refuses some keywords (``select``) as names but not others
(``order``), which would make the rule depend on sqlglot's grammar instead of on the text.

Every refusal raises :class:`~flowstone.errors.InvalidIdentifierError` whose message names the
setting, shows the value with ``repr`` (so control characters and look-alikes are visible) and
says why; ``context`` holds ``setting``, ``value`` and ``reason``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

import sqlglot
from psycopg import sql
from sqlglot import errors as sqlglot_errors
from sqlglot import exp

from flowstone import errors

__all__ = [
    "MAX_IDENTIFIER_BYTES",
    "MAX_QUEUE_NAME_BYTES",
    "QualifiedName",
    "parse_column",
    "parse_schema",
    "parse_table",
    "validate_queue_name",
]

MAX_IDENTIFIER_BYTES = 63
"""Postgres' identifier limit (NAMEDATALEN - 1): longer names are truncated by the server."""
MAX_QUEUE_NAME_BYTES = 40
"""Procrastinate builds a NOTIFY channel name (itself an identifier) from the queue name."""

# fullmatch, and ASCII classes only: `$` alone would also accept a trailing newline.
_PART = re.compile(r"[a-z_][a-z0-9_]*")
_SYSTEM_SCHEMA = re.compile(r"pg_.*|information_schema")
_DIALECT = sqlglot.Dialect.get_or_raise("postgres")
_KEYWORDS = frozenset(_DIALECT.tokenizer_class.KEYWORDS)


@dataclass(frozen=True, slots=True)
class QualifiedName:
    """A validated table name, optionally schema-qualified. Build it with :func:`parse_table`."""

    schema: str | None
    name: str

    def sql(self) -> sql.Identifier:
        """The name as a ``psycopg.sql.Identifier`` (``"schema"."name"``): the only way it reaches SQL."""
        if self.schema is None:
            return sql.Identifier(self.name)
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


def parse_table(value: object, *, setting: str, allowed: Collection[str] | None = None) -> QualifiedName:
    """Validate a configured table name (``name`` or ``schema.name``) and return it parsed.

    ``setting`` names where the value came from (e.g. ``"PostgresIOManager table"``) for the error
    message. With ``allowed``, the table must be one of those names (each validated the same way).
    Raises :class:`~flowstone.errors.InvalidIdentifierError`.
    """
    parts = _parts(value, setting=setting, max_parts=2, what="a table")
    _check_sqlglot(value, parts, setting=setting, into=exp.Table)
    table = QualifiedName(parts[0], parts[1]) if len(parts) == 2 else QualifiedName(None, parts[0])
    if table.schema is not None and _SYSTEM_SCHEMA.fullmatch(table.schema):
        raise _refuse(value, setting, f"{table.schema!r} is a system schema")
    if table.name.startswith("pg_"):
        raise _refuse(
            value,
            setting,
            "table names starting with 'pg_' are reserved for the system catalogs (an unqualified "
            "one resolves to pg_catalog first)",
        )
    if allowed is not None:
        permitted = [parse_table(entry, setting=f"{setting} allow-list") for entry in allowed]
        if table not in permitted:
            names = ", ".join(repr(str(p)) for p in permitted) or "nothing"
            raise _refuse(value, setting, f"it is not in the allowed tables ({names})")
    return table


def parse_column(value: object, *, setting: str) -> str:
    """Validate a configured column name (one part, no table prefix) and return it.

    Raises :class:`~flowstone.errors.InvalidIdentifierError` naming ``setting``.
    """
    parts = _parts(value, setting=setting, max_parts=1, what="a column name")
    _check_sqlglot(value, parts, setting=setting, into=exp.Column)
    return parts[0]


def parse_schema(value: object, *, setting: str) -> str:
    """Validate a configured schema name (one part; not a system schema) and return it."""
    parts = _parts(value, setting=setting, max_parts=1, what="a schema name")
    # A schema is one bare name: sqlglot reads it as a table reference of one part.
    _check_sqlglot(value, parts, setting=setting, into=exp.Table)
    if _SYSTEM_SCHEMA.fullmatch(parts[0]):
        raise _refuse(value, setting, f"{parts[0]!r} is a system schema")
    return parts[0]


def validate_queue_name(value: object, *, setting: str) -> str:
    """Validate a queue name: the column-name rules, and at most 40 bytes.

    Procrastinate builds a NOTIFY channel name from the queue name, and that channel is itself an
    identifier limited to 63 bytes.
    """
    parts = _parts(value, setting=setting, max_parts=1, what="a queue name")
    _check_sqlglot(value, parts, setting=setting, into=exp.Column)
    name = parts[0]
    if len(name.encode()) > MAX_QUEUE_NAME_BYTES:
        raise _refuse(
            value,
            setting,
            f"it is {len(name.encode())} bytes; a queue name is at most {MAX_QUEUE_NAME_BYTES} bytes "
            "(Procrastinate builds a NOTIFY channel name from it)",
        )
    return name


# -- checks -----------------------------------------------------------------------------------


def _parts(value: object, *, setting: str, max_parts: int, what: str) -> list[str]:
    if not isinstance(value, str):
        raise _refuse(value, setting, f"it must be a string, not {type(value).__name__}")
    if value == "":
        raise _refuse(value, setting, "it is empty")
    parts = value.split(".")
    if "" in parts:
        raise _refuse(value, setting, "it has an empty part (a leading, trailing or doubled dot)")
    if len(parts) > max_parts:
        shape = "'name' or 'schema.name'" if max_parts == 2 else "one name without a dot"
        raise _refuse(value, setting, f"{what} is {shape}, but it has {len(parts)} dot-separated parts")
    for part in parts:
        if _PART.fullmatch(part) is None:
            raise _refuse(value, setting, _why_not_a_part(part))
        size = len(part.encode())
        if size > MAX_IDENTIFIER_BYTES:
            raise _refuse(
                value,
                setting,
                f"{_short(part)} is {size} bytes; Postgres identifiers are at most "
                f"{MAX_IDENTIFIER_BYTES} bytes (longer ones are truncated)",
            )
    return parts


def _why_not_a_part(part: str) -> str:
    rule = "use lowercase ASCII letters, digits and '_', starting with a letter or '_'"
    if part[0].isascii() and part[0].isdigit():
        return f"{rule}; it starts with the digit {part[0]!r}"
    bad = next(c for c in part if not (c.isascii() and (c.islower() or c.isdigit() or c == "_")))
    found = f"{bad!r} (U+{ord(bad):04X} {unicodedata.name(bad, 'control character')})"
    if bad.isascii() and bad.isupper():
        return f"{rule}; found {found}: Postgres folds unquoted names to lowercase, use the lowercase name"
    return f"{rule}; found {found}"


def _check_sqlglot(value: object, parts: list[str], *, setting: str, into: type[exp.Expression]) -> None:
    text = str(value)
    # 5. The raw text is plain words separated by dots: each token's exact source span is the
    # word itself (a quoted identifier's span includes its quotes), spans are contiguous and
    # cover the text, and no token carries a comment.
    try:
        tokens = _DIALECT.tokenize(text)
    except sqlglot_errors.SqlglotError as exc:
        raise _refuse(value, setting, f"sqlglot cannot tokenize it ({exc})") from None
    expected: list[tuple[str, bool]] = []
    for i, part in enumerate(parts):
        if i:
            expected.append((".", True))
        expected.append((part, False))
    position = 0
    plain = len(tokens) == len(expected)
    for token, (word, is_dot) in zip(tokens, expected, strict=False):
        span = text[token.start : token.end + 1]
        if (
            token.start != position
            or span != word
            or token.text != word
            or token.comments
            or (token.token_type == sqlglot.TokenType.DOT) != is_dot
            or (not is_dot and not _is_word(token))
        ):
            plain = False
            break
        position = token.end + 1
    if not plain or position != len(text):
        raise _refuse(value, setting, "sqlglot does not read it as plain names separated by dots")
    # 6. What Postgres will receive ("schema"."name") is exactly one table / column reference.
    rendered = ".".join(f'"{part}"' for part in parts)
    try:
        parsed = sqlglot.parse_one(rendered, into=into, read="postgres")
    except sqlglot_errors.SqlglotError as exc:
        raise _refuse(
            value, setting, f"sqlglot does not parse it as a {into.__name__.lower()}: {exc}"
        ) from None
    if not _is_plain_reference(parsed, parts, into):
        raise _refuse(value, setting, f"sqlglot does not parse it as exactly one {into.__name__.lower()}")


def _is_word(token: sqlglot.Token) -> bool:
    """A name (VAR) or a keyword spelled as a name (``select``); not an operator or a symbol."""
    if token.token_type == sqlglot.TokenType.VAR:
        return True
    return token.text.upper() in _KEYWORDS and token.text.isidentifier()


def _is_plain_reference(parsed: exp.Expression, parts: list[str], into: type[exp.Expression]) -> bool:
    if type(parsed) is not into or parsed.comments:
        return False
    args = {key: arg for key, arg in parsed.args.items() if arg is not None}
    if into is exp.Table:
        wanted = {"this": parts[-1], **({"db": parts[0]} if len(parts) == 2 else {})}
    else:
        wanted = {"this": parts[0]}
    if set(args) != set(wanted):
        return False
    return all(
        isinstance(args[key], exp.Identifier) and args[key].this == name and args[key].quoted
        for key, name in wanted.items()
    )


def _short(text: str) -> str:
    return repr(text) if len(text) <= 24 else repr(text[:20] + "...")


def _refuse(value: object, setting: str, reason: str) -> errors.InvalidIdentifierError:
    shown = repr(value)
    return errors.InvalidIdentifierError(
        f"{setting} {shown} is not an allowed SQL identifier: {reason}",
        context={"setting": setting, "value": shown, "reason": reason},
    )
