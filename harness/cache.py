"""Content-addressed cache of trained models (baselines, teachers, fine-tuned results).

An entry's key is the SHA-256 of the lineage of the model, everything that
determines it, written as canonical JSON (see ``CellRun.lineage_root`` and
``CellRun.apply_step`` in the worker):

- the root: the model, the data set and its parameters, the training budget,
  the seed, the versions of torch, torchvision and benchharness and this
  module's ``FORMAT_VERSION``, and the code fingerprints of the model family
  and of the data set;
- one entry per technique step up to that point: the step's name, its config
  and its technique's code fingerprint (a baseline step is cached as the
  implicit train step, so it carries that step's fingerprint).

A code fingerprint (``benchharness.host.code_fingerprint``) is the plugin, its
distribution, the distribution's version and the SHA-256 of the source file of
the module defining the item's class. So a fixed technique, model or loader
never reuses weights its old code produced, whether or not its version was
bumped. The device is deliberately not part of the key, so that CPU cells
measure the model trained on the GPU in the same run.

Entries are written atomically with the SHA-256 and size of their payload. The
hash catches accidental damage, not tampering (whoever can write the cache can
write a matching hash); payloads load with ``weights_only=True``, so a
malicious file cannot run code, though it can hold other weights. An entry
that cannot be used is evicted with a :class:`CacheWarning` and rebuilt by
the cell that needed it, never loaded; ``cache list`` and ``cache clear``
never fail on one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

CACHE_ENV = "BENCHHARNESS_CACHE_DIR"
FORMAT_VERSION = 4
PAYLOAD = "state.pt"
META = "meta.json"


def default_cache_dir() -> Path:
    """``$BENCHHARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/benchharness``, else ``~/.cache/benchharness``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "benchharness"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, Any]:
    """Versions that change what training produces."""
    import torch

    return {"torch": torch.__version__, "torchvision": _version("torchvision"), "benchharness": _version("benchharness"), "format": FORMAT_VERSION}


def cache_key(parts: Any) -> str:
    """The SHA-256 of ``parts`` written as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CacheWarning(UserWarning):
    """An unusable cache entry was evicted; the cell that needed it rebuilds it."""


@dataclass
class CacheEntry:
    """What ``cache list`` shows of an entry."""

    key: str
    description: str
    size_bytes: int
    created_at: str


@dataclass
class UnusableEntry:
    """An entry that cannot be loaded or listed, and why: ``cache clear`` removes it, a run rebuilds it."""

    path: Path
    reason: str


META_FIELDS: dict[str, type] = {"key": str, "description": str, "sha256": str, "size_bytes": int, "created_at": str}
KEY = re.compile(r"[0-9a-f]{64}")


def _meta_problem(meta: Any, name: str) -> str | None:
    """Why ``meta``, the parsed meta.json of the entry folder ``name``, is not what ``save`` writes; None if it is."""
    if not isinstance(meta, dict):
        return f"{META} holds a JSON {type(meta).__name__}, not an object"
    for field, kind in META_FIELDS.items():
        value = meta.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{META} has no {kind.__name__} {field!r}"
    if meta["key"] != name:
        return f"{META}'s 'key' is {meta['key'][:12]}…, not its folder's name"
    return None


def _remove(path: Path) -> None:
    """Delete an entry folder, or the link or file in its place (never what a link points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class ArtifactCache:
    """A directory of cached model states, addressed by key.

    An entry that cannot be used (a malformed meta.json, a payload that does not match its hash
    or cannot be loaded, a state its technique cannot restore) is evicted with a
    :class:`CacheWarning` and treated as a miss; ``evicted`` lists each ``(key, reason)``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.evicted: list[tuple[str, str]] = []

    def _dir(self, key: str) -> Path:
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ValueError(f"cache key {key!r} is not a SHA-256 hex digest: make keys with benchharness.cache.cache_key")
        return self.root / key[:2] / key

    def _inspect(self, folder: Path) -> tuple[dict[str, Any] | None, str | None]:
        """The entry folder's meta and None, or None and why the entry is unusable (its payload is not read)."""
        if folder.is_symlink() or not folder.is_dir():
            return None, "not an entry folder"
        if not KEY.fullmatch(folder.name) or folder.parent.name != folder.name[:2]:
            return None, "not an entry: its name is not a key under the key's first two characters"
        try:
            meta = json.loads((folder / META).read_text())
        except FileNotFoundError:
            return None, f"{META} is missing"
        except OSError as error:
            return None, f"{META} cannot be read: {error.strerror}"
        except (ValueError, RecursionError):
            return None, f"{META} is not valid JSON"
        problem = _meta_problem(meta, folder.name)
        if problem:
            return None, problem
        try:
            size = (folder / PAYLOAD).stat().st_size
        except OSError:
            return None, f"{PAYLOAD} is missing"
        if size != meta["size_bytes"]:
            return None, f"{PAYLOAD} has {size} bytes where {META} says {meta['size_bytes']}"
        return meta, None

    def load(self, key: str, fields: dict[str, type] | None = None) -> dict[str, Any] | None:
        """The cached payload for ``key``, or None when absent or unusable (an unusable entry is evicted).

        ``fields`` names the items the payload must hold and their types, e.g.
        ``{"state": dict, "notes": dict}``; a payload without them is unusable too.
        """
        folder = self._dir(key)
        if not os.path.lexists(folder):
            return None
        payload, problem = self._read(folder, fields or {})
        if problem:
            self.evict(key, problem)
        return payload

    def _read(self, folder: Path, fields: dict[str, type]) -> tuple[dict[str, Any] | None, str | None]:
        """The entry's payload and None, or None and why it is unusable."""
        meta, problem = self._inspect(folder)
        if problem:
            return None, problem
        try:
            data = (folder / PAYLOAD).read_bytes()
        except OSError as error:
            return None, f"{PAYLOAD} cannot be read: {error.strerror}"
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            return None, f"{PAYLOAD} does not match the SHA-256 in {META} (it was damaged after it was written)"
        import torch

        try:
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as error:
            return None, f"{PAYLOAD} cannot be loaded with weights_only=True ({_first_line(error)})"
        if not isinstance(payload, dict):
            return None, f"{PAYLOAD} holds {type(payload).__name__}, not a dict"
        for field, kind in fields.items():
            if not isinstance(payload.get(field), kind):
                return None, f"{PAYLOAD} has no {kind.__name__} {field!r}"
        return payload, None

    def evict(self, key: str, reason: str) -> None:
        """Delete the unusable entry ``key`` with a :class:`CacheWarning` that says why; its cell rebuilds it.

        Callers that find a loaded entry unusable (a state that does not fit the model) call this too.
        """
        folder = self._dir(key)
        _remove(folder)
        self.evicted.append((key, reason))
        warnings.warn(f"{folder}: unusable cache entry evicted, to be rebuilt: {reason}", CacheWarning, stacklevel=2)

    def save(self, key: str, state: dict[str, Any], description: str) -> None:
        """Store ``state`` under ``key`` atomically (a concurrent writer of the same key is harmless).

        A cache that cannot be written costs a :class:`CacheWarning`, never the cell.
        """
        import torch

        folder = self._dir(key)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        meta = {
            "key": key,
            "description": description,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size_bytes": len(payload),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        staging = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key[:8]}-"))
            (staging / PAYLOAD).write_bytes(payload)
            (staging / META).write_text(json.dumps(meta, indent=2))
            if os.path.lexists(folder):
                _remove(folder)
            os.replace(staging, folder)
        except OSError as error:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if not os.path.lexists(folder):  # else a concurrent writer stored the same entry
                warnings.warn(f"{folder}: {description} not cached ({error}); the next run that needs it trains it again", CacheWarning, stacklevel=2)

    def _folders(self) -> list[Path]:
        """Every entry folder (or stray item) under the two-character folders; staging folders excluded."""
        found: list[Path] = []
        if not self.root.is_dir():
            return found
        for prefix in sorted(self.root.iterdir()):
            if len(prefix.name) == 2 and prefix.is_dir():
                found.extend(sorted(path for path in prefix.iterdir() if not path.name.startswith(".")))
        return found

    def scan(self) -> tuple[list[CacheEntry], list[UnusableEntry]]:
        """The usable entries, newest first, and the unusable ones with why (their payloads are not hashed)."""
        usable, unusable = [], []
        for folder in self._folders():
            meta, problem = self._inspect(folder)
            if problem:
                unusable.append(UnusableEntry(folder, problem))
            else:
                usable.append(CacheEntry(meta["key"], meta["description"], meta["size_bytes"], meta["created_at"]))
        return sorted(usable, key=lambda entry: entry.created_at, reverse=True), unusable

    def entries(self) -> list[CacheEntry]:
        """Every usable entry, newest first (see :meth:`scan` for the unusable ones)."""
        return self.scan()[0]

    def clear(self) -> int:
        """Delete every entry, usable or not, and any half-written one; returns how many entries were removed."""
        folders = self._folders()
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir() and len(child.name) == 2:
                    shutil.rmtree(child, ignore_errors=True)
        return sum(not os.path.lexists(folder) for folder in folders)
