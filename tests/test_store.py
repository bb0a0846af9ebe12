"""The checkpoint store: file:// and a real S3 server; checksums; no unpickling, ever."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
import torch
from boss.store import CheckpointError, Store, to_uri


def state():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    return m.state_dict()


def roundtrip(store: Store, uri: str) -> None:
    s = state()
    sha = store.save_checkpoint(uri, s, {"trial": 3, "config": {"lr": 0.1}})
    assert len(sha) == 64
    loaded, meta = store.load_checkpoint(uri, sha)
    assert meta == {"trial": 3, "config": {"lr": 0.1}}
    assert loaded.keys() == s.keys()
    assert all(torch.equal(loaded[k], s[k]) for k in s)
    assert hashlib.sha256(store.read(uri)).hexdigest() == sha


def test_file_store(tmp_path):
    store = Store()
    uri = to_uri(tmp_path / "a" / "b" / "model.safetensors")
    assert uri.startswith("file:///")
    roundtrip(store, uri)
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["model.safetensors"]  # no temp left
    store.write_json(to_uri(tmp_path / "r.json"), {"x": 1})
    assert store.read_json(to_uri(tmp_path / "r.json")) == {"x": 1}


def test_s3_store(s3_server, s3_bucket):
    store = Store(endpoint=s3_server)
    uri = f"s3://{s3_bucket}/study/trial-0001/model.safetensors"
    roundtrip(store, uri)
    assert store.exists(uri)
    import boto3

    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["study/trial-0001/model.safetensors"]
    with pytest.raises(CheckpointError, match="not found"):
        store.read(f"s3://{s3_bucket}/nothing-here")


def test_truncated_checkpoint_is_detected(tmp_path):
    store = Store()
    uri = to_uri(tmp_path / "m.safetensors")
    sha = store.save_checkpoint(uri, state(), {})
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        store.load_checkpoint(uri, sha)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        store.load_checkpoint(uri)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/boss-pwned",))


def test_planted_pickle_is_refused(tmp_path):
    """A torch.save/pickle file in storage never runs: it is refused before any unpickling."""
    marker = "/tmp/boss-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": Boom()}))
    with pytest.raises(CheckpointError, match="refusing to load"):
        Store().load_checkpoint(to_uri(path))
    torch.save({"weight": Boom()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        Store().load_checkpoint(to_uri(path))
    assert not os.path.exists(marker)
