"""Telling a PostgreSQL location from a file path, and reading it (timewheel/store/postgres_url.py,
pure): properties over generated keyword strings and URIs, no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.store import is_url, public_location
from timewheel.store.postgres_url import LIBPQ_KEYWORDS, is_postgres, parse

from .conftest import tally

pytestmark = pytest.mark.properties

VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                 max_size=30)
KEYS = st.sampled_from(sorted(LIBPQ_KEYWORDS - {"password", "sslpassword"}))


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=5), VALUES, st.booleans())
def test_keyword_strings_are_read_back_with_ours_taken_out(pairs, password, spaced) -> None:
    tally("postgres_url: keyword strings")
    password = "\u00a7pw" + password            # a marker no other generated value holds
    others = [(k, v.replace("\u00a7", "")) for k, v in pairs]
    pairs = [("host", "db.internal"), *others, ("password", password)]
    sep = " = " if spaced else "="
    text = "  ".join(f"{k}{sep}{_quoted(v)}" for k, v in pairs) + " schema=app lease=2.5 listen=0"
    assert is_postgres(text) and is_url(text)
    target = parse(text)
    assert (target.schema, target.lease, target.listen) == ("app", 2.5, False)
    assert "schema" not in target.conninfo and "listen" not in target.conninfo
    again = parse(target.conninfo)                                  # our own output parses alike
    assert again.conninfo == target.conninfo and again.schema is None
    assert "password=***" in target.public and "\u00a7" not in target.public


@given(st.sampled_from(["./", "/", "../"]), st.text(max_size=40))
def test_paths_are_never_connection_strings(start, rest) -> None:
    """A path that starts like one (./, /, ../) is a file, whatever follows."""
    tally("postgres_url: paths")
    assert not is_postgres(start + rest) and not is_url(start + rest)


@pytest.mark.parametrize("path", ["tasks.db", "/var/lib/app/tasks.db", "./host=x", "host", "a b=c",
                                  "dbname", "x=1", "host=", "host='open", "nothing=here"])
def test_these_are_file_paths(path) -> None:
    assert not is_postgres(path)


@given(VALUES.filter(lambda v: "@" not in v and "/" not in v and "?" not in v and "#" not in v))
def test_uri_passwords_are_hidden(password) -> None:
    tally("postgres_url: URIs")
    from urllib.parse import quote
    url = f"postgresql://app:{quote(password, safe='')}@db:5432/app?schema=s&sslpassword=zz"
    shown = public_location(url)
    assert shown.startswith("postgresql://app:***@db:5432/app?") and "sslpassword=***" in shown
    target = parse(url)
    query = target.conninfo.partition("?")[2]
    assert target.schema == "s" and "schema" not in query and query == "sslpassword=zz"


def test_bad_parameters_are_named() -> None:
    for text, what in (("postgresql://h/db?schema=1x", "schema"), ("host=h lease=-1", "lease"),
                       ("host=h listen=maybe", "listen"), ("postgres://h/db?lease=abc", "lease")):
        with pytest.raises(ValueError, match=what):
            parse(text)

