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
measure the model trained on the GPU in the same run. Entries are written
atomically with the SHA-256 of their payload; a payload whose hash does not
match is deleted and rebuilt, never loaded. Payloads load with
``weights_only=True``, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
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


@dataclass
class CacheEntry:
    """What ``cache list`` shows of an entry."""

    key: str
    description: str
    size_bytes: int
    created_at: str


class ArtifactCache:
    """A directory of cached model states, addressed by key."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load(self, key: str) -> dict[str, Any] | None:
        """The cached state for ``key``, or None when absent or corrupt (a corrupt entry is removed)."""
        folder = self._dir(key)
        try:
            meta = json.loads((folder / META).read_text())
            payload = (folder / PAYLOAD).read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
            shutil.rmtree(folder, ignore_errors=True)
            return None
        import torch

        try:
            return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def save(self, key: str, state: dict[str, Any], description: str) -> None:
        """Store ``state`` under ``key`` atomically (a concurrent writer of the same key is harmless)."""
        import torch

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
        folder = self._dir(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key[:8]}-"))
        try:
            (staging / PAYLOAD).write_bytes(payload)
            (staging / META).write_text(json.dumps(meta, indent=2))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)

    def entries(self) -> list[CacheEntry]:
        """Every readable entry, newest first."""
        found = []
        for meta_path in self.root.glob(f"*/*/{META}"):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            found.append(CacheEntry(meta["key"], meta.get("description", ""), meta.get("size_bytes", 0), meta.get("created_at", "")))
        return sorted(found, key=lambda entry: entry.created_at, reverse=True)

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        count = len(self.entries())
        if self.root.exists():
            for child in self.root.iterdir():
                if child.is_dir() and len(child.name) == 2:
                    shutil.rmtree(child, ignore_errors=True)
        return count
