"""The content-addressed bundle cache: a folder, or any fsspec URL (``s3://bucket/prefix``, ``gs://…``).

Layout under the root::

    objects/<id>/<target>/…     one built bundle, uploaded in full first
    keys/<key>.json             the commit record, written last in one operation: {"object": "objects/<id>", …}

An entry exists only once its ``keys/<key>.json`` does; that file is written by one atomic rename (folders) or one
PUT (object stores), after every byte of its object. A cell killed while uploading leaves an orphan under
``objects/`` that no key points to — never a half entry. A bundle taken from the cache is used only after
``edgepack verify`` passes on it (``pipeline.build`` of a cell whose cached bundle was tampered with is the fallback).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from edgepack.errors import ConfigError, MissingDependency


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


class Cache:
    """One cache root; folders go through the file system, URLs through fsspec (the ``scale`` extra)."""

    def __init__(self, location: str) -> None:
        self.location = location
        if _is_url(location):
            try:
                import fsspec
            except ImportError:
                raise MissingDependency("a cache URL needs fsspec (and s3fs/gcsfs for its protocol)",
                                        hint="pip install -c constraints.txt -e '.[scale]'") from None
            try:
                self.fs, self.root = fsspec.core.url_to_fs(location)
            except (ImportError, ValueError) as e:
                raise ConfigError(f"cannot open the cache {location}: {e}",
                                  hint="install the fsspec implementation of its protocol (s3fs for s3://)") from None
            self.local = False
        else:
            self.root = str(Path(location.removeprefix("file://")).resolve())
            Path(self.root, "keys").mkdir(parents=True, exist_ok=True)
            Path(self.root, "objects").mkdir(parents=True, exist_ok=True)
            self.local = True

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The commit record of ``key``, or None when it is not cached."""
        path = self._path("keys", f"{key}.json")
        try:
            if self.local:
                text = Path(path).read_text()
            else:
                text = self.fs.cat_file(path).decode()
        except (FileNotFoundError, OSError):
            return None
        try:
            record = json.loads(text)
        except ValueError:
            return None
        obj = record.get("object", "") if isinstance(record, dict) else ""
        if not (isinstance(obj, str) and obj.startswith("objects/") and ".." not in obj):
            return None
        return record

    def fetch(self, record: dict[str, Any], dest: Path) -> Path:
        """Copy the cached object into the new folder ``dest`` (its bundle is then at ``dest/<target>``)."""
        src = self._path(record["object"])
        if self.local:
            shutil.copytree(src, dest, symlinks=True)
        else:
            dest.mkdir(parents=True)
            self.fs.get(src.rstrip("/") + "/", str(dest) + "/", recursive=True)
        return dest

    def publish(self, key: str, folder: Path, record: dict[str, Any]) -> str:
        """Upload ``folder`` as a new object, then commit ``keys/<key>.json`` pointing at it (last, atomically)."""
        obj = f"objects/{uuid.uuid4().hex}"
        body = json.dumps({**record, "object": obj}, sort_keys=True).encode()
        if self.local:
            tmp = Path(self._path("objects", f".tmp-{uuid.uuid4().hex}"))
            shutil.copytree(folder, tmp, symlinks=True)
            os.replace(tmp, self._path(obj))
            key_tmp = Path(self._path("keys", f".tmp-{key}-{uuid.uuid4().hex}"))
            key_tmp.write_bytes(body)
            os.replace(key_tmp, self._path("keys", f"{key}.json"))
        else:
            self.fs.put(str(folder).rstrip("/") + "/", self._path(obj) + "/", recursive=True)
            self.fs.pipe_file(self._path("keys", f"{key}.json"), body)  # one PUT: the commit
        return obj

    def forget(self, key: str) -> None:
        """Drop a key whose object failed verification (the object stays as an orphan)."""
        path = self._path("keys", f"{key}.json")
        try:
            if self.local:
                Path(path).unlink(missing_ok=True)
            else:
                self.fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass

    def keys(self) -> list[str]:
        """Every committed key."""
        d = self._path("keys")
        names = [p.name for p in Path(d).glob("*.json")] if self.local else \
            [p.rsplit("/", 1)[-1] for p in self.fs.glob(d + "/*.json")]
        return sorted(n[:-5] for n in names if not n.startswith(".tmp-"))


__all__ = ["Cache"]
