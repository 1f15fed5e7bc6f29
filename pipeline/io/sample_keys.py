"""Sample keys are data from strangers, never paths.

A key becomes an output member name (``<key>.png`` in a published tar) and appears in rows
and logs, so a key that an extractor would follow out of its directory, that two extractors
would map to the same file, or that a terminal would interpret, is refused: the sample is an
error row with ``error_kind`` ``unsafe_key``. Where a key must name a file of our own (the
interpolation cache), the file is named by a hash of the key, never by the key.
"""
from __future__ import annotations

import hashlib
import unicodedata

# Keys up to this many UTF-8 bytes are written (in PAX tar headers, which hold any length);
# longer ones are error rows. Room is left for the augment suffix (``_t0300_v12``).
KEY_MAX_BYTES = 1000


def unsafe_key_reason(key: str) -> str | None:
    """Why ``key`` cannot be used as a sample key (a member name stem), or None if it can."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:    # tarfile hands undecodable bytes over as surrogate escapes
        return "key is not valid UTF-8"
    if size > KEY_MAX_BYTES:
        return f"key is {size} bytes long (at most {KEY_MAX_BYTES})"
    return unsafe_name_reason(key)


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` (a key, a field name or a whole member name) is not a safe relative
    path, or None: the rules without the length limit, which PAX headers do not need."""
    if not name:
        return "empty name"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if name.startswith("/"):
        return "absolute path"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        return f"contains the control or format character U+{ord(bad):04X}"
    if "\\" in name:
        return "contains a backslash (a path separator on Windows)"
    segments = name.split("/")
    if ".." in segments:
        return "contains a '..' segment"
    if "" in segments or "." in segments:
        return "contains an empty or '.' segment (two names would extract to the same file)"
    return None


def printable_key(key: str) -> str:
    """``key`` as it may be stored in a row and printed: unchanged when safe, else with
    control characters and undecodable bytes escaped (and cut to a readable length)."""
    if unsafe_key_reason(key) is None:
        return key
    raw = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in raw)
    return escaped if len(escaped) <= 200 else f"{escaped[:200]}...({len(escaped)} chars)"


def key_file_name(key: str, suffix: str) -> str:
    """A file name standing for ``key`` that no key can steer: a hash of its bytes."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{digest}{suffix}"
