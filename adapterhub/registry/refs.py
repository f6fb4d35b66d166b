"""Adapter names, tags and references (``name``, ``name@3``, ``name@latest``, ``name@tag``).

>>> parse_ref("legal@3")
('legal', 3)
>>> parse_ref("legal")
('legal', 'latest')
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import InvalidNameError
from .files import shorten

LATEST = "latest"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # always fullmatch: "$" would accept a trailing newline


def validate_name(name: Any, *, what: str = "adapter name") -> str:
    """Return ``name`` if it is a safe adapter/tag/domain name, else raise.

    Allowed: 1-100 characters of letters, digits, ``.``, ``_`` and ``-``,
    starting with a letter or digit, without ``..``.

    Raises:
        InvalidNameError: empty, path separators, ``..``, spaces, ``@`` or other characters.

    >>> validate_name("legal-v2")
    'legal-v2'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {what} {shorten(repr(name), 120)}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no spaces, path separators, '@' or '..'), e.g. 'legal-contracts'")
    return name


def validate_tag(tag: Any) -> str:
    """Like :func:`validate_name`, and not all digits nor ``latest`` (those mean versions).

    >>> validate_tag("prod")
    'prod'
    """
    validate_name(tag, what="tag")
    if tag.isdigit() or tag == LATEST:  # ASCII only: validate_name allows nothing else
        raise InvalidNameError(f"invalid tag {tag!r}: plain numbers and 'latest' already select versions; "
                               "pick a word such as 'prod' or 'candidate'")
    return tag


def parse_ref(ref: Any) -> tuple[str, int | str]:
    """Split ``name``, ``name@N``, ``name@latest`` or ``name@tag`` into ``(name, selector)``.

    The selector is an ``int`` version, ``"latest"`` or a tag.

    Raises:
        InvalidNameError: malformed reference.
    """
    if not isinstance(ref, str):
        raise InvalidNameError(f"invalid adapter reference {ref!r}: use 'name', 'name@3', 'name@latest' or 'name@tag'")
    name, sep, selector = ref.partition("@")
    validate_name(name)
    if not sep:
        return name, LATEST
    if selector.isascii() and selector.isdigit() and int(selector) > 0:
        return name, int(selector)
    if selector == LATEST:
        return name, LATEST
    try:
        return name, validate_tag(selector)
    except InvalidNameError:
        raise InvalidNameError(f"invalid adapter reference {ref!r}: after '@' put a version >= 1, "
                               "'latest' or a tag, e.g. 'legal@3' or 'legal@prod'") from None
