"""A folder of image files (or single image files) as a job's input: what is an image file, how
a file's path becomes a safe sample key, how a folder is listed, and how its files are grouped
into tasks that stay the same when files are added or deleted. No Ray, no decoding.

* **Keys.** A file's sample key is a hash of its path relative to the folder (``file_key``):
  data, never a path, collision-free, with no dot (WebDataset splits member names on the first
  one). The relative path itself is kept in the private rows (``source_path``).
* **Listing.** Every file under the folder, recursively, in any directory layout: files whose
  names end in a known image suffix (any case) are inputs; hidden names (a segment starting
  with ``.``: our own temporaries, ``.DS_Store``, macOS ``._`` files) and other suffixes are
  skipped. Local folders are walked without following symlinked directories; a symlink to a
  regular file inside the folder is read through its target, one pointing outside the folder
  (or at a device, a FIFO, a directory) is an error row and never opened, as is a file whose
  relative name holds a control character, a backslash or bytes that are not UTF-8.
* **Groups.** Files sorted by relative path are cut into groups where a file's key falls on a
  boundary (about one in ``FILES_PER_TASK``): content-defined chunking, so adding or deleting a
  file changes only the group it falls in (a boundary file deleted merges two groups, one added
  splits one). Each group is one task with its own manifest row; its content version is a
  digest of its files' paths and versions, so an edited, added or deleted photo redoes its
  group only, and a no-op rerun costs one listing.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from typing import NamedTuple

import fsspec

from pipeline.errors import UNSAFE_KEY, UNSAFE_MEMBER
from pipeline.io.listing import content_version
from pipeline.io.sample_keys import printable_key, unsafe_name_reason

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")
# HEIC/HEIF decode only where the optional pillow-heif package is installed (not a dependency).
HEIF_SUFFIXES = (".heic", ".heif")
FILES_PER_TASK = 64            # mean files per task (group); a constant: changing it would regroup every folder
HEAD = "head"                  # the group before the first boundary file


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def image_suffixes() -> tuple[str, ...]:
    return IMAGE_SUFFIXES + (HEIF_SUFFIXES if heif_available() else ())


def register_optional_openers() -> None:
    """Let Pillow open HEIC/HEIF where pillow-heif is installed (a no-op otherwise)."""
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


def is_image_file(name: str) -> bool:
    return name.lower().endswith(image_suffixes())


def file_key(rel: str) -> str:
    """The sample key of the file at ``rel`` (relative to its folder): 32 hex characters of a
    SHA-256 of the path's bytes. Safe whatever the name holds, and the same on every run."""
    return hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def image_field_of(rel: str) -> str:
    """The field name a file's bytes get (its suffix, lowercased): decides the output's format
    (``pipeline.io.images.output_field``: jpg/jpeg/png/webp kept, anything else PNG)."""
    return posixpath.splitext(rel)[1].lower().lstrip(".") or "png"


# Output formats by input field: ``pipeline.io.images.output_field``'s rule, kept here without
# importing torch (the driver plans with this module; a test checks both agree).
WRITABLE_FIELDS = ("jpg", "jpeg", "png", "webp")


def output_field(field: str) -> str:
    return field if field in WRITABLE_FIELDS else "png"


def output_file_name(rel: str, key: str, keep: bool) -> str:
    """Where an output goes under ``files/``: by its name (a pseudonym) and the output format's
    suffix, or with ``keep`` at the input's own relative path (a path checked safe when listed),
    with ``.png`` appended where the output format differs from the input's (``scan.tif`` ->
    ``scan.tif.png``: never the name of another input, ``scan.png``)."""
    field = image_field_of(rel)
    out = output_field(field)
    if not keep:
        return f"{key}.{out}"
    return rel if out == field else f"{rel}.{out}"


class FileEntry(NamedTuple):
    """One listed file: its path relative to the folder, where to read it, its size and content
    version, or why it is refused (then it is an error row and never opened)."""
    rel: str
    url: str
    size: int | None
    version: str | None
    error_kind: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return file_key(self.rel)


class Listing(NamedTuple):
    entries: list[FileEntry]
    skipped: int               # files that are not images (by suffix) or hidden


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith(("file://", "local://"))


def local_path(url: str) -> str:
    return os.path.abspath(url.split("://", 1)[1] if "://" in url else url)


def list_image_files(root: str) -> Listing | None:
    """Every image file under ``root`` (a folder, or one image file), sorted by relative path;
    None when ``root`` does not exist."""
    if is_local(root):
        return _list_local(local_path(root))
    fs, path = fsspec.core.url_to_fs(root)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    protocol = root.split("://", 1)[0]
    if info.get("type") != "directory":
        return Listing([_remote_entry(posixpath.basename(path), info, protocol)], 0)
    fs.invalidate_cache(path)
    found = fs.find(path, detail=True)
    entries, skipped = [], 0
    for name, entry in found.items():
        rel = name[len(path.rstrip("/")) + 1:]
        if _hidden(rel) or not is_image_file(rel):
            skipped += 1
            continue
        entries.append(_remote_entry(rel, entry, protocol))
    return Listing(sorted(entries), skipped)


def _remote_entry(rel: str, entry: dict, protocol: str) -> FileEntry:
    url = f"{protocol}://{entry['name']}"
    reason = unsafe_name_reason(rel)
    if reason is not None:
        return FileEntry(rel, url, None, None, UNSAFE_KEY, f"unsafe file name: {reason}")
    return FileEntry(rel, url, entry.get("size"), content_version(entry))


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _stat_version(st: os.stat_result) -> str | None:
    """The same version ``io.listing.content_version`` gives a local file's listing entry."""
    return content_version({"mtime": st.st_mtime, "created": st.st_ctime, "ino": st.st_ino, "size": st.st_size})


def _list_local(root: str) -> Listing | None:
    if not os.path.exists(root):          # a dangling symlink included
        return None
    if not os.path.isdir(root):
        # One image file given by name: itself, read through a symlink if it is one (the user named it).
        real = os.path.realpath(root)
        name = os.path.basename(root)
        target = os.stat(real)
        if not stat.S_ISREG(target.st_mode):
            return Listing([FileEntry(name, real, None, None, UNSAFE_MEMBER, "not a regular file")], 0)
        return Listing([_local_entry(name, real, target)], 0)
    real_root = os.path.realpath(root)
    entries, skipped = [], 0
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        for d in list(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d.startswith("."):
                dirnames.remove(d)
            elif os.path.islink(os.path.join(directory, d)):
                entries.append(FileEntry(rel, os.path.join(directory, d), None, None, UNSAFE_MEMBER,
                                         "a symlinked directory: not followed"))
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name.startswith(".") or not is_image_file(name):
                skipped += 1
                continue
            entries.append(_checked_local(rel, os.path.join(directory, name), real_root))
    return Listing(sorted(entries), skipped)


def _checked_local(rel: str, path: str, real_root: str) -> FileEntry:
    reason = unsafe_name_reason(rel)
    if reason is not None:
        return FileEntry(rel, path, None, None, UNSAFE_KEY, f"unsafe file name {printable_key(rel)!r}: {reason}")
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path)
            if os.path.commonpath([real, real_root]) != real_root:
                return FileEntry(rel, path, None, None, UNSAFE_MEMBER, "a symlink pointing outside the folder: not read")
            path, st = real, os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            return FileEntry(rel, path, None, None, UNSAFE_MEMBER, "not a regular file (a device, FIFO or directory): "
                                                                   "not read")
    except OSError as exc:                 # gone since the walk, a dangling link: an error row, not a crash
        return FileEntry(rel, path, None, None, UNSAFE_MEMBER, f"cannot be read: {type(exc).__name__}")
    return _local_entry(rel, path, st)


def _local_entry(rel: str, path: str, st: os.stat_result) -> FileEntry:
    return FileEntry(rel, path, st.st_size, _stat_version(st))


def is_boundary(key: str) -> bool:
    return int(key[:8], 16) % FILES_PER_TASK == 0


class FileGroup(NamedTuple):
    """One task's files: ``gid`` is ``head`` or the first 16 hex digits of its first file's key."""
    gid: str
    entries: tuple[FileEntry, ...]

    @property
    def version(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for e in self.entries:
            h.update(f"{e.rel}\x00{e.version}\x00{e.error_kind}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    @property
    def size(self) -> int:
        return sum(e.size or 0 for e in self.entries)


def group_files(entries: list[FileEntry]) -> list[FileGroup]:
    """Content-defined groups of the sorted entries (see the module's docstring)."""
    groups: list[tuple[str, list[FileEntry]]] = []
    for entry in sorted(entries):
        key = entry.key
        if not groups or is_boundary(key):
            gid = key[:16] if is_boundary(key) else HEAD
            groups.append((gid, []))
        groups[-1][1].append(entry)
    return [FileGroup(gid, tuple(members)) for gid, members in groups]


def root_label(root: str) -> str:
    """A readable, safe prefix for the files a folder's tasks write: its base name's safe
    characters and a hash of the whole URL (two folders of one name do not share tasks)."""
    base = posixpath.basename(root.rstrip("/")) or "input"
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_")[:40] or "input"
    return f"{safe}-{hashlib.blake2b(root.encode('utf-8', 'surrogateescape'), digest_size=4).hexdigest()}"


GROUP_SEPARATOR = "#"


def group_url(root: str, gid: str) -> str:
    """How manifests name a group: ``<root>#<gid>`` (never opened: split back by ``split_group_url``)."""
    return f"{root}{GROUP_SEPARATOR}{gid}"


def split_group_url(url: str) -> tuple[str, str] | None:
    root, sep, gid = url.rpartition(GROUP_SEPARATOR)
    if not sep or not re.fullmatch(r"head|[0-9a-f]{16}", gid):
        return None
    return root, gid
