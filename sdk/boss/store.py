"""Checkpoints and trial results in object storage, through fsspec URIs.

Checkpoints are safetensors files: loading one never unpickles anything, so a checkpoint
planted in shared storage cannot run code. Every checkpoint's SHA-256 goes into the
trial's result, and a teacher or student is only loaded when its bytes match.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

if TYPE_CHECKING:
    import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or not in the safe format."""


class StorageError(OSError):
    """Storage that kept failing after every retry."""


# answers that retrying cannot change
_FINAL = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, CheckpointError, ValueError,
          TypeError, AttributeError)  # the last two: a bug or a misconfiguration, not an outage


def to_uri(location: str | Path) -> str:
    """A URI for a storage location given as a URI or as a local path."""
    s = str(location)
    if "://" in s:
        return s.rstrip("/")
    return "file://" + str(Path(s).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True)
class Store:
    """Reads and writes bytes at URIs. `endpoint` points s3:// at an S3-compatible server.

    Object storage refuses or times out now and then: every operation is retried with
    exponential backoff (`backoff`, doubling, `attempts` in all) before it fails.
    """

    endpoint: str | None = None
    attempts: int = field(default_factory=lambda: int(os.environ.get("BOSS_STORAGE_ATTEMPTS", "6")))
    backoff: float = field(default_factory=lambda: float(os.environ.get("BOSS_STORAGE_BACKOFF", "0.5")))

    def _retry(self, what: str, uri: str, fn):
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except _FINAL:
                raise
            except Exception as e:
                if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                    raise StorageError(f"{uri}: {what} failed: {e} (set the storage Secret)") from None
                if attempt == self.attempts:
                    raise StorageError(f"{uri}: {what} failed after {attempt} attempts: {e}") from None
                print(f"boss: {what} {uri} failed ({e}); retrying in {delay:.1f}s", file=sys.stderr)
                time.sleep(delay)
                delay *= 2

    def _fs(self, uri: str) -> tuple[Any, str]:
        if not uri.startswith("s3://"):
            return fsspec.core.url_to_fs(uri)
        # one retry policy, ours (logged, configurable), not botocore's and s3fs's stacked under it
        # (botocore's "max_attempts" counts retries after the first try; "total_max_attempts" all tries)
        opts: dict[str, Any] = {"config_kwargs": {"retries": {"total_max_attempts": 1, "mode": "standard"},
                                                  "connect_timeout": 10, "read_timeout": 60}}
        if self.endpoint:
            opts["client_kwargs"] = {"endpoint_url": self.endpoint}
        fs, path = fsspec.core.url_to_fs(uri, **opts)
        fs.retries = 1  # s3fs would otherwise retry a dropped connection 5 times, silently
        # (aiohttp still resends an idempotent request once on a connection that closes under
        # it, as RFC 9112 allows for a stale keep-alive connection: immediate, not a policy)
        return fs, path

    def write(self, uri: str, data: bytes) -> None:
        """Write all of `data` or nothing: readers never see a half-written file."""
        self._retry("write", uri, lambda: self._write(uri, data))

    def _write(self, uri: str, data: bytes) -> None:
        fs, path = self._fs(uri)
        if getattr(fs, "protocol", None) in ("file", ("file", "local")) or uri.startswith("file://"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            fs.pipe_file(path, data)  # one PUT: an object store commits it whole

    def read(self, uri: str) -> bytes:
        try:
            return self._retry("read", uri, lambda: self._on(uri, "cat_file"))
        except FileNotFoundError:
            raise CheckpointError(f"{uri}: not found") from None

    def exists(self, uri: str) -> bool:
        return self._retry("check", uri, lambda: self._on(uri, "exists"))

    def delete(self, uri: str) -> None:
        """Remove an object; one that is already gone is fine."""
        try:
            self._retry("delete", uri, lambda: self._on(uri, "rm_file"))
        except FileNotFoundError:
            pass

    def _on(self, uri: str, method: str):
        fs, path = self._fs(uri)
        return getattr(fs, method)(path)

    def write_json(self, uri: str, obj: Any) -> None:
        self.write(uri, json.dumps(obj, indent=2, sort_keys=True).encode())

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read(uri))

    def save_checkpoint(self, uri: str, state_dict: dict[str, "torch.Tensor"], metadata: dict[str, Any]) -> str:
        """Save weights (safetensors) with JSON metadata; returns the file's SHA-256."""
        from safetensors.torch import save as st_save
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        data = st_save(tensors, metadata={"boss": json.dumps(metadata, sort_keys=True)})
        self.write(uri, data)
        return hashlib.sha256(data).hexdigest()

    def load_checkpoint(self, uri: str, sha256: str | None = None) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
        """Load weights; refuses bytes that do not match `sha256` or are not safetensors."""
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        data = self.read(uri)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointError(f"{uri}: checksum mismatch (truncated or corrupt checkpoint)")
        try:
            tensors = st_load(data)
            meta = _safetensors_metadata(data)
        except (SafetensorError, ValueError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{uri}: not a safetensors checkpoint ({e}); refusing to load it") from None
        return tensors, meta


def _safetensors_metadata(data: bytes) -> dict[str, Any]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    raw = (header.get("__metadata__") or {}).get("boss")
    return json.loads(raw) if raw else {}
