"""The fast path for inventory files: yaml-rs (a YAML 1.2 parser in Rust) builds plain Python
data about ten times faster than PyYAML's constructor, and keeps no node per value.

PyYAML (the located loader in :mod:`replicator.inputs.yamlread`) stays the reference: whatever
yaml-rs might read differently is left to it. yaml-rs follows YAML 1.2 and PyYAML YAML 1.1, so a
file is taken from yaml-rs only when it has none of:

- the plain scalars the two resolve differently: ``yes``/``no``/``on``/``off``, ``0777``,
  ``1e3``, ``1:20``, ``_1``, an unquoted timestamp;
- a merge key (``<<``), a tag, an anchor or alias, a block scalar, a complex key (``?``), a
  directive, an empty key or a collection as a key;
- a tab, a ``...`` document end, a line break of YAML 1.1 only (U+2028), a character PyYAML's
  reader refuses;

and only when yaml-rs parses it without an error and gives as many documents as its ``---``
markers say. Everything else is read by the located loader, exactly as before; so is a file in
which anything is wrong (see :func:`replicator.inputs.loader.load_objects`): its problems are the
located loader's, with its lines. The guard is conservative: a false alarm only costs speed.
"""

from __future__ import annotations

import re
from typing import Any

import yaml_rs

# Plain scalars that YAML 1.1 (PyYAML) and YAML 1.2 (yaml-rs) resolve differently, as a whole
# token: after the start of a line, white space, a flow indicator or a quoted key's colon, and
# before the end of the line, a comment or a flow indicator (a key's ``:`` too).
_END = r"(?=[ \t]*(?:$|[,\]}:#]))"
_START = r"(?:^|(?<=[\s\[{,])|(?<=[\"']:))"
_DIVERGES = re.compile(
    "|".join(
        (
            # 1.1 booleans (1.2 keeps them text); merge keys; the 1.1 `value` key
            _START + r"(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|<<|=)" + _END,
            # numbers: a leading zero (1.1 octal or text, 1.2 decimal), 0o, an exponent without
            # 1.1's dot and sign, sexagesimal, underscores
            _START
            + r"[-+]?(?:0[0-9_]+|0o[0-7_]+|[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+"
            + r"|[0-9][0-9_]*(?::[0-9_]+)+(?:\.[0-9_]*)?|[0-9.]*_[0-9_.]*)"
            + _END,
            # a timestamp (PyYAML makes a date or datetime of a plain one; yaml-rs, told not to
            # read any, keeps all as text, quoted ones too, as PyYAML does)
            _START + r"[0-9]{4}-[0-9][0-9]?-[0-9][0-9]?(?![0-9])",
            # a tag (yaml-rs drops unknown ones, PyYAML refuses them), an anchor or alias, a block
            # scalar, a complex key, a directive, a reserved indicator
            r"(?:^|(?<=[\s\[{,:]))[!&*|>?%@`]",
            r"^\.\.\.|\t",  # a document end; a tab (the two differ on where one may stand)
            # an empty key, a collection as a key, a colon before a flow indicator
            r"(?:^|(?<=[\[{,-]))[ ]*:|[\]}][ ]*:|:(?=[,\[\]{}])",
            "[\x85\u2028\u2029]",  # line breaks in YAML 1.1, not in 1.2
            # a character PyYAML's reader refuses (its NON_PRINTABLE)
            "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]",
        )
    ),
    re.MULTILINE,
)


# A text's bytes by class, for finding where the guard must look without a regex over all of it:
# boundaries, flow indicators, other indicators, digits, signs, the letters of yes/no/on/off, ...
def _table(*classes: tuple[bytes, bytes]) -> bytes:
    """A ``bytes.translate`` table: each byte of a class's characters to its name, the others to
    ``a``; a name ``""`` keeps the characters, in lower case."""
    table = bytearray(b"a" * 256)
    for chars, name in classes:
        for c in chars:
            table[c] = name[0] if name else bytes([c]).lower()[0]
    return bytes(table)


# Two views of a text's bytes by class, where the guard's regex might match: a suspect token's
# start after a boundary (an indicator, a digit, ...; yes/no/on/off; a tab or control character),
# and the colons (an empty key, a collection as a key, a colon before a flow indicator).
_TOKENS = _table(
    (b" \n\r[{,:", b"S"),
    (b"!&*|>?%@`0123456789_.<=", b"x"),  # `_1` is a number to yaml-rs
    (b"+-", b"+"),
    (b"yYnNoOeEsSfF", b""),
    (bytes([*range(9), 9, 11, 12, *range(14, 32), 127]), b"t"),
)
_TOKEN_SUSPECTS = (b"Sx", b"S+x", b"Sye", b"Sno", b"Son", b"Sof", b"t")
_COLONS = _table((b" \n\r", b"S"), (b"[{,-", b"F"), (b"]}", b"]"), (b":", b""))
_COLON_SUSPECTS = (b"S:", b"F:", b"]:", b":F", b":]")
_WINDOW = 80
_LONG_LINE = 1_000
"""A suspect this far into its line is not looked at closely: the located loader reads the file."""


def _diverges(text: str) -> bool:
    """Whether ``text`` has anything the two parsers might read differently (:data:`_DIVERGES`)."""
    if not text.isascii():
        return _DIVERGES.search(text) is not None  # slower, and rarer
    raw = text.encode("ascii")
    for table, suspects in ((_TOKENS, _TOKEN_SUSPECTS), (_COLONS, _COLON_SUSPECTS)):
        classes = b"S" + raw.translate(table)  # index i + 1 is text[i]
        if _suspect(text, classes, suspects):
            return True
    return False


def _suspect(text: str, classes: bytes, suspects: tuple[bytes, ...]) -> bool:
    for suspect in suspects:
        at = classes.find(suspect)
        while at >= 0:
            line = text.rfind("\n", 0, at) + 1  # from the line's start, for the regex's ^
            if at - line > _LONG_LINE or _DIVERGES.search(text, line, at + _WINDOW):
                return True
            at = classes.find(suspect, at + 1)
    return False


def fast_documents(text: str) -> list[Any] | None:
    """The documents of ``text`` (YAML without a nesting deeper than the located loader allows),
    read by yaml-rs; None when the located loader must read it (see the module's docstring)."""
    if _diverges(text):
        return None
    try:
        data = yaml_rs.loads(text, parse_datetime=False)
    except (yaml_rs.YAMLDecodeError, ValueError, RecursionError, OverflowError):
        return None
    expected = _document_count(text)
    if expected == 0:
        return [] if data is None else None
    if expected == 1:
        return [data]
    if isinstance(data, list) and len(data) == expected:
        return data
    return None


_MARKER = re.compile(r"\n---(?=[ \t\r\n]|$)")
_CONTENT = re.compile(r"^[ \t]*[^\s#]", re.MULTILINE)


def _document_count(text: str) -> int:
    """Documents in ``text``: one per ``---`` marker, plus one for content before the first."""
    first = 0 if text.startswith("---") and text[3:4] in ("", " ", "\t", "\r", "\n") else None
    markers = sum(1 for _ in _MARKER.finditer(text)) + (first is not None)
    if first is None:
        m = _MARKER.search(text)
        first = m.start() if m else len(text)
    return markers + (1 if _CONTENT.search(text, 0, first) else 0)
