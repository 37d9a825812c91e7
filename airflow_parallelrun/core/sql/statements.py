"""Tell a read-only query from one that is not, by its text, before it reaches a database.

The check is the first of two guards: what passes it still runs inside a read-only transaction
(see :mod:`airflow_parallelrun.core.sql.transaction`), so a data-modifying CTE
(``WITH d AS (DELETE ... RETURNING *) SELECT ...``) fails in the database without changing it.
"""

from __future__ import annotations

import re

from airflow_parallelrun.core.errors import ConfigError

_READ_ONLY_STARTS = ("SELECT", "WITH")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*")
_DOLLAR_TAG = re.compile(r"\$[A-Za-z_0-9]*\$")


def _skip_quoted(text: str, i: int) -> int:
    """Return the index after the quoted string, identifier or comment starting at ``i`` (or ``i``)."""
    c, two = text[i], text[i : i + 2]
    if two == "--" or c == "#":
        end = text.find("\n", i)
        return len(text) if end == -1 else end + 1
    if two == "/*":
        end = text.find("*/", i + 2)
        return len(text) if end == -1 else end + 2
    if c in "'\"`":
        j = i + 1
        while j < len(text):
            if text[j] == "\\" and c == "'":
                j += 2
                continue
            if text[j] == c:
                if text[j + 1 : j + 2] == c:  # a doubled quote stands for itself
                    j += 2
                    continue
                return j + 1
            j += 1
        return len(text)
    if c == "$" and (tag := _DOLLAR_TAG.match(text, i)):
        end = text.find(tag.group(), tag.end())
        return len(text) if end == -1 else end + len(tag.group())
    return i


def top_level_words(query: str) -> tuple[list[str], bool]:
    """Return the query's words outside strings, quoted names and comments, and whether a ``;`` ends
    a statement that another follows.

    >>> top_level_words("-- note\\nSELECT 'a;b' AS \\"x;\\" FROM t; ")
    (['SELECT', 'AS', 'FROM', 't'], False)
    >>> top_level_words("SELECT 1; DROP TABLE x")[1]
    True
    """
    words: list[str] = []
    i, ended, second = 0, False, False
    while i < len(query):
        after = _skip_quoted(query, i)
        if after != i:
            i = after
            continue
        if query[i] == ";":
            ended = True
        elif (word := _WORD.match(query, i)) is not None:
            second = second or ended
            words.append(word.group())
            i = word.end()
            continue
        elif not query[i].isspace():
            second = second or ended
        i += 1
    return words, second


def check_read_only(query: str, *, named: str = "query") -> str:
    """Return ``query`` without a trailing ``;``; raise ``ConfigError`` unless it is one read-only query.

    It must start with SELECT or WITH (after comments), hold one statement, and select into no
    table or file (``SELECT ... INTO``).

    >>> check_read_only("/* nightly */ select id from customers;")
    '/* nightly */ select id from customers'
    >>> check_read_only("UPDATE customers SET score = 0")
    Traceback (most recent call last):
    ...
    airflow_parallelrun.core.errors.ConfigError: query='UPDATE customers SET score = 0' is not read-only: ...
    """
    shown = query if len(query) <= 200 else query[:200] + "..."
    if not isinstance(query, str) or not query.strip():
        raise ConfigError(f"{named}={query!r} is empty; give a SELECT (or WITH ... SELECT) query")
    words, second = top_level_words(query)
    first = words[0].upper() if words else ""
    why = ""
    if first not in _READ_ONLY_STARTS:
        why = f"it starts with {first or 'nothing but comments'!r}, not SELECT or WITH"
    elif second:
        why = "it holds more than one statement (a ';' followed by more)"
    elif "INTO" in (w.upper() for w in words):
        why = "it selects INTO a table or a file"
    if why:
        raise ConfigError(
            f"{named}={shown!r} is not read-only: {why}. A SqlDataset reads with one SELECT (or "
            "WITH ... SELECT) query; write scores with output=SqlTable(...) instead"
        )
    return query.strip().rstrip(";").rstrip()
