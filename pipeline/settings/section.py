"""Settings sections: every part of a configuration (the run, images, execution, a method,
publication, face regions, the privacy target, a metric) is a frozen dataclass that owns its
fields: each field's default, flag, help and hash rule are declared once, with ``setting``.
The command line of a job is generated from its sections (``add_flags``), flat keyword
settings (the Python API, tests) are routed to the section that owns each name, and the run
directory's hash is the union of what each section contributes (``hashed``). No heavy imports.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, ClassVar

from pipeline.errors import UserError

# How a field enters the hash of the directory its outputs go to.
ALWAYS = "always"                  # outputs depend on it
NEVER = "never"                    # execution only (batch size, workers, where the secret file lives)
UNLESS_DEFAULT = "unless-default"  # a cap added later: at its default it is left out, so older directories keep their hash


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, type=None,
            nargs: str | None = None, choices=None, metavar: str | None = None, action: str | None = None,
            hash: str = ALWAYS, cli: bool = True) -> Any:
    """A field of a settings section. ``flag`` defaults to ``--name-with-dashes``; ``cli=False``
    keeps it off the command line (set by the driver, e.g. a fingerprint); ``action`` is
    argparse's (``store_true`` for switches, ``store_false`` for ``--no-...`` switches)."""
    if hash not in (ALWAYS, NEVER, UNLESS_DEFAULT):
        raise ValueError(f"hash rule {hash!r}")
    metadata = {"help": help, "flag": flag, "type": type, "nargs": nargs, "choices": choices, "metavar": metavar,
                "action": action, "hash": hash, "cli": cli}
    return dataclasses.field(default=default, metadata=metadata)


class Settings:
    """Base of every settings section (subclasses are frozen dataclasses)."""
    title: ClassVar[str] = ""          # the --help group ("" puts its flags in the main list)

    def check(self, job) -> None:
        """Raise UserError for values this section cannot run with; ``job`` is the whole
        configuration, for rules that span sections."""

    def hashed(self, job) -> dict:
        """What this section adds to the run directory's hash (field name -> value)."""
        out = {}
        for f in dataclasses.fields(self):
            rule, value = f.metadata.get("hash", ALWAYS), getattr(self, f.name)
            if rule == NEVER or (rule == UNLESS_DEFAULT and value == f.default):
                continue
            out[f.name] = value
        return out

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, values: dict, defaults: dict | None = None):
        """An instance from flat values (lists become tuples where the field holds a tuple);
        ``defaults`` override the declared ones for names not given (a job kind's own)."""
        defaults = defaults or {}
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                kwargs[f.name] = _as_field_value(values[f.name], f)
            elif f.name in defaults:
                kwargs[f.name] = defaults[f.name]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise UserError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def add_flags(cls, ap: argparse.ArgumentParser, defaults: dict | None = None) -> None:
        """One flag per field that is on the command line, in a group named by ``title``."""
        defaults = defaults or {}
        group = ap.add_argument_group(cls.title) if cls.title else ap
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if not meta.get("cli", True):
                continue
            flag = meta.get("flag") or "--" + f.name.replace("_", "-")
            default = defaults.get(f.name, f.default)
            kwargs: dict[str, Any] = {"dest": f.name, "help": _help(meta.get("help", ""), default, meta)}
            if meta.get("action"):
                kwargs["action"] = meta["action"]
            else:
                if default is dataclasses.MISSING:
                    kwargs["required"] = True
                else:
                    kwargs["default"] = list(default) if isinstance(default, tuple) else default
                value_type = meta.get("type") or _element_type(f, default)
                if value_type is not None:
                    kwargs["type"] = value_type
                nargs = meta.get("nargs") or ("+" if isinstance(f.default, tuple) else None)
                if nargs:
                    kwargs["nargs"] = nargs
                for name in ("choices", "metavar"):
                    if meta.get(name) is not None:
                        kwargs[name] = meta[name]
            group.add_argument(flag, **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace, defaults: dict | None = None):
        """The section from parsed flags (fields not on the command line keep their defaults)."""
        return cls.build({f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)},
                         defaults)


def _help(text: str, default, meta) -> str:
    if meta.get("action") in ("store_true", "store_false") or default in (None, "", ()) \
            or default is dataclasses.MISSING:
        return text
    shown = " ".join(str(v) for v in default) if isinstance(default, tuple) else default
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def _element_type(f: dataclasses.Field, default):
    """argparse's type for a field without one declared: the type of its default (or of the
    default's first element); None for strings, switches and empty or None defaults."""
    sample = default[0] if isinstance(default, tuple) and default else default
    if isinstance(sample, bool) or not isinstance(sample, (int, float)):
        return None
    return type(sample)


def _as_field_value(value, f: dataclasses.Field):
    if isinstance(value, list) and isinstance(f.default, tuple):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def route(values: dict, sections: dict[str, type[Settings]]) -> dict[str, dict]:
    """Split flat settings among sections by field name ({section name: {field: value}});
    an unknown name is a UserError listing the known ones."""
    owner = {}
    for section_name, cls in sections.items():
        for name in cls.names():
            owner.setdefault(name, section_name)
    routed: dict[str, dict] = {name: {} for name in sections}
    unknown = sorted(k for k in values if k not in owner)
    if unknown:
        raise UserError(f"unknown setting(s) {unknown}; known: {', '.join(sorted(owner))}")
    for name, value in values.items():
        routed[owner[name]][name] = value
    return routed
