"""Published names that cannot be traced back without a secret: a keyed HMAC of the input key.

An anonymized dataset whose outputs keep their source's file names is matched to the
(public) originals by name alone, and CelebA's identity file then names the person. So
``anonymize`` names each output ``HMAC-SHA256(secret, key)`` (hex, 128 bits): the same secret
gives the same names, so reruns stay incremental; without the secret nobody can recompute
the mapping from public names, and the secret never enters the run directory (only a
fingerprint of it, so a run made with another secret lands in another directory).

The secret is a local file on the machine that submits the job (the driver), kept outside
the output; it is created, readable by its owner only, when absent.

The same secret gives the same name to the same key in every run, whatever its t: a weak
release (small t, faces still recognisable) and a strong one of the same dataset then name
each person's outputs alike, and the weak one identifies the strong one's. ``--release NAME``
salts the names per release: ``HMAC(K_release, key)`` with ``K_release = HMAC(secret,
context || NAME)``, a key of its own per release, so releases with different names share no
output name, while a rerun of one release keeps its names.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import stat
import sys
from pathlib import Path

from pipeline.errors import UserError

SECRET_BYTES = 32
PSEUDONYM_HEX = 32                 # 128 bits: collisions are out of reach for any dataset
DEFAULT_SECRET_FILE = "~/.config/diffusion-anonymizer/pseudonym.key"


def default_secret_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME")
    return str(Path(base) / "diffusion-anonymizer" / "pseudonym.key") if base else str(Path(DEFAULT_SECRET_FILE).expanduser())


def load_or_create_secret(path: str, *, output: str | None = None) -> bytes:
    """The secret in ``path`` (hex), created with mode 0600 when absent. Refused when others
    can read it, when it is too short, or when it lies inside ``output`` (whatever is there
    may be published)."""
    if "://" in path and not path.startswith("file://"):
        raise UserError(f"--key-secret {path}: the secret must be a local file on the submitting machine")
    file = Path(path.removeprefix("file://")).expanduser().resolve()
    out = local_output_dir(output) if output is not None else None
    if out is not None and (file == out or out in file.parents):
        raise UserError(f"--key-secret {file} lies inside --output {out}: keep the secret outside anything "
                        f"that may be published")
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:       # another run created it meanwhile: use theirs
            return load_or_create_secret(str(file), output=output)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
        print(f"created the pseudonym secret {file} (mode 600): keep it, and keep it private; the same secret "
              f"gives the same output names on every rerun", file=sys.stderr, flush=True)
    mode = file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"--key-secret {file} is readable by others (mode {stat.filemode(mode)}): chmod 600 it")
    try:
        secret = bytes.fromhex(file.read_text().strip())
    except ValueError:
        raise UserError(f"--key-secret {file} is not a hex secret (delete it to have a new one made)") from None
    if len(secret) < 16:
        raise UserError(f"--key-secret {file} holds {len(secret)} bytes; at least 16 are needed")
    return secret


def local_output_dir(output: str) -> Path | None:
    """The local directory an ``--output`` writes to, resolved as the writers resolve it
    (fsspec: ``file://``, ``local://``, a chained ``simplecache::file://``, ``~`` and relative
    paths), symlinks followed; None for object stores and other remote filesystems."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    target = output.split("::")[-1]          # a chained URL writes to its last target
    if fsspec.utils.get_protocol(target) not in ("file", "local"):
        return None
    fs, local = fsspec.core.url_to_fs(target)
    return Path(local).resolve() if isinstance(fs, LocalFileSystem) else None


_RELEASE_CONTEXT = b"diffusion-anonymizer release\x00"


@functools.lru_cache(maxsize=8)
def release_secret(secret: bytes, release: str) -> bytes:
    """The per-release naming key: the fixed context, then the release name, is the whole
    HMAC message, so two names never derive the same key."""
    return hmac.new(secret, _RELEASE_CONTEXT + release.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


def pseudonym(secret: bytes, key: str, release: str | None = None) -> str:
    """The published name of the sample ``key`` (in the release ``release``: ``--release``;
    None, the default, keeps the names runs have always had)."""
    named_by = secret if release is None else release_secret(secret, release)
    return hmac.new(named_by, key.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def secret_fingerprint(secret: bytes) -> str:
    """Names the secret in the (hashed) configuration without revealing it or any pseudonym."""
    return hmac.new(secret, b"diffusion-anonymizer secret fingerprint", hashlib.sha256).hexdigest()[:16]
