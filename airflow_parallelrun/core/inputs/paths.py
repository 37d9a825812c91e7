"""Keep templated paths inside the folders their DAG author wrote.

A template such as ``"/data/in/{{ params.folder }}"`` pins its literal folder, ``/data/in/``;
whatever a Param or macro renders, the result must stay inside it. ``..`` segments and control
characters are refused in every rendered path, templated or not.
"""

from __future__ import annotations

import os
import posixpath
import re

from airflow_parallelrun.core.errors import ConfigError

_TEMPLATE_START = re.compile(r"{{|{%")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_protocol(url: str) -> tuple[str, str]:
    """Split ``url`` into its protocol prefix and path.

    >>> split_protocol("s3://bucket/a/b")
    ('s3://', 'bucket/a/b')
    >>> split_protocol("/data/in")
    ('', '/data/in')
    """
    if "://" in url:
        protocol, _, rest = url.partition("://")
        return protocol + "://", rest
    return "", url


def template_anchor(template: str) -> str | None:
    """Return the literal folder a template pins, or None when nothing before the template is a folder.

    >>> template_anchor("/data/in/{{ params.folder }}/x")
    '/data/in'
    >>> template_anchor("s3://bucket/scores/{{ run_id }}")
    's3://bucket/scores'
    >>> template_anchor("{{ params.path }}") is None
    True
    >>> template_anchor("/data/plain") is None
    True
    """
    match = _TEMPLATE_START.search(template)
    if match is None:
        return None
    prefix = template[: match.start()]
    protocol, path = split_protocol(prefix)
    folder = path.rpartition("/")[0]
    if not folder.strip("/"):
        return None
    return protocol + folder


def has_parent_segment(path: str) -> bool:
    """Tell whether ``path`` has a ``..`` segment.

    >>> has_parent_segment("/data/../etc"), has_parent_segment("/data/a..b")
    (True, False)
    """
    return ".." in split_protocol(path)[1].replace("\\", "/").split("/")


def is_relative_glob(pattern: object) -> bool:
    """Tell whether ``pattern`` is a glob relative to its folder: not empty, no root, URL or ``..``.

    >>> [is_relative_glob(p) for p in ("**/*.png", "", "/etc/*", "s3://b/*", "../*", None)]
    [True, False, False, False, False, False]
    """
    return (
        isinstance(pattern, str)
        and bool(pattern)
        and not pattern.startswith(("/", "\\"))
        and "://" not in pattern
        and not has_parent_segment(pattern)
    )


def check_path(field: str, rendered: str, template: str | None = None) -> str:
    """Return ``rendered`` if it is safe to use; else raise ``ConfigError`` naming the field and value."""
    if _CONTROL.search(rendered):
        raise ConfigError(
            f"{field}={rendered!r} holds a control character; a path must be printable text. "
            "Check the Param or template that produced it"
        )
    if has_parent_segment(rendered):
        raise ConfigError(
            f"{field}={rendered!r} has a '..' segment, which could leave the folder the DAG names; "
            "give the path without '..'"
        )
    anchor = template_anchor(template) if template is not None else None
    if anchor is not None and not is_within(rendered, anchor):
        raise ConfigError(
            f"{field}={rendered!r} is outside {anchor!r}, the folder its template {template!r} pins; "
            "a Param or macro may only choose a path inside it"
        )
    return rendered


def is_within(path: str, folder: str) -> bool:
    """Tell whether ``path`` is ``folder`` or inside it, comparing normalised paths of one protocol.

    >>> is_within("/data/in/a.png", "/data/in"), is_within("/data/inx/a.png", "/data/in")
    (True, False)
    """
    p_protocol, p_path = split_protocol(path)
    f_protocol, f_path = split_protocol(folder)
    if p_protocol != f_protocol:
        return False
    p_norm, f_norm = posixpath.normpath(p_path), posixpath.normpath(f_path)
    return p_norm == f_norm or p_norm.startswith(f_norm.rstrip("/") + "/")


def local_escape(path: str, folder: str) -> str | None:
    """Return where a local ``path`` inside ``folder`` really leads when a symlink takes it out, else None.

    Remote paths (with a protocol other than ``file://``) have no symlinks and return None; so do
    paths that do not exist (reading them fails later with its own message).

    >>> local_escape("s3://bucket/in/a.png", "s3://bucket/in") is None
    True
    """
    protocol, local = split_protocol(path)
    f_protocol, local_folder = split_protocol(folder)
    if protocol not in ("", "file://") or f_protocol not in ("", "file://") or not os.path.lexists(local):
        return None
    real, root = os.path.realpath(local), os.path.realpath(local_folder)
    return None if is_within(real, root) else real
