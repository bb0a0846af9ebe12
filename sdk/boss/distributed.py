"""Several processes per trial (`trainer.gpus: N`): torchrun starts N copies of the trial.

Who this process is (torchrun's environment), the process group, and the split of every
batch between the processes. The split keeps the trial's meaning: each global batch is the
one a one-process run draws (same seed, same order), and rank r trains on its share of it,
so `batch_size` stays the global batch and DDP's averaged gradient is the full batch's.

`python -m boss.distributed N` is the command of such a trial: torchrun (standalone, N
processes, each `python -m boss.trial`) that exits with the failing process's own exit code
and leaves its one-line message, so a dead rank fails the trial as cleanly as one process.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as td
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from .trialspec import write_error_file  # noqa: F401  (torchrun's error file; named here as before)

TIMEOUT_ENV = "BOSS_DIST_TIMEOUT"  # seconds a process waits for its peers before failing (default 30 min)
DEFAULT_TIMEOUT = 1800.0
PEER_LOST = "lost its peer processes"  # marks a failure that only follows another rank's


@dataclass(frozen=True)
class Dist:
    """This process's place in the trial: rank 0 of 1 when not under torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(env: Mapping[str, str] = os.environ) -> Dist:
    """torchrun's WORLD_SIZE/RANK/LOCAL_RANK (MASTER_ADDR/PORT are read by init_process_group).
    Lightning's DDP launcher sets no RANK (one node: the rank is LOCAL_RANK)."""
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist()
    rank = env.get("RANK") or env.get("LOCAL_RANK") or "0"
    return Dist(rank=int(rank), world=world, local_rank=int(env.get("LOCAL_RANK", rank)))


def timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT))


def setup(dist: Dist) -> torch.device:
    """Join the process group (NCCL on GPUs, one per local rank; else gloo on the CPU) and
    return this process's device. Without torchrun nothing is set up."""
    if not torch.cuda.is_available():
        device = torch.device("cpu")
    elif dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cuda")
    if dist.enabled and not td.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend, timeout=timeout(),
                              **({"device_id": device} if device.type == "cuda" else {}))
    return device


def teardown() -> None:
    """Leave the process group together (a barrier first), so that no rank destroys its context
    while a peer still talks to it. The SIGABRT seen after finished two-process trials came from
    interpreter finalization, which boss.trial now skips for such ranks; this alone did not stop it."""
    if td.is_available() and td.is_initialized():
        td.barrier()
        td.destroy_process_group()


def prepare(model: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch where the backend can (SyncBatchNorm needs GPUs); the
    parameters stay the same objects and the state-dict keys the same names."""
    if dist.enabled and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    """The module the training steps run: DDP (which starts every rank from rank 0's weights)
    or, in one process, the model itself. Save and evaluate `model`, never the wrapper: its
    keys carry a `module.` prefix."""
    if not dist.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return t.tolist()


def from_main(obj: Any, dist: Dist) -> Any:
    """Rank 0's `obj`, on every rank: what all must agree on (the epoch's metrics)."""
    if not dist.enabled:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, dist: Dist) -> list[Any]:
    """Every rank's `obj`, on every rank."""
    if not dist.enabled:
        return [obj]
    out: list[Any] = [None] * dist.world
    td.all_gather_object(out, obj)
    return out


# ---- the split of each global batch --------------------------------------------------------------

def _bounds(n: int, dist: Dist) -> tuple[int, int]:
    return n * dist.rank // dist.world, n * (dist.rank + 1) // dist.world


class _Shares:
    """Rank r's part of each index batch the loader's own batch sampler draws (from torch's global
    RNG, seeded alike on every rank); batches smaller than the world are left out."""

    def __init__(self, batch_sampler: Iterable, dist: Dist, totals: collections.deque, skipped: list[int]):
        self.batch_sampler, self.dist, self.totals, self.skipped = batch_sampler, dist, totals, skipped

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.batch_sampler:
            idx = list(idx)
            if len(idx) < self.dist.world:
                self.skipped.append(len(idx))
                continue
            lo, hi = _bounds(len(idx), self.dist)
            self.totals.append(len(idx))
            yield idx[lo:hi]

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]


def _take(x: Any, lo: int, hi: int) -> Any:
    if isinstance(x, torch.Tensor):
        return x[lo:hi]
    if isinstance(x, Mapping):
        return {k: _take(v, lo, hi) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_take(v, lo, hi) for v in x)
    raise TypeError(f"cannot split inputs of type {type(x).__name__} between processes; "
                    "yield tensors (or dicts/tuples of tensors), or return a torch DataLoader")


class RankBatches:
    """This rank's (inputs, targets, global batch size) for each global batch of `loader`.

    A plain `torch.utils.data.DataLoader` over a map-style dataset is rebuilt with the same
    settings around a batch sampler that hands rank r its share of the indices: each rank loads
    only its examples. Any other iterable is read whole on every rank (all draw the same batches)
    and each keeps its slice. `unpack` checks a batch is an (inputs, targets) pair."""

    def __init__(self, loader: Iterable, dist: Dist, unpack: Callable[[Any], tuple[Any, Any]]):
        self.loader, self.dist, self.unpack = loader, dist, unpack
        self.totals: collections.deque[int] = collections.deque()
        self.skipped: list[int] = []
        self.rebuilt = self._rebuild(loader) if dist.enabled else None

    def _rebuild(self, dl: Any) -> DataLoader | None:
        if type(dl) is not DataLoader or isinstance(dl.dataset, IterableDataset) or dl.batch_sampler is None:
            return None
        kw: dict[str, Any] = dict(num_workers=dl.num_workers, collate_fn=dl.collate_fn, pin_memory=dl.pin_memory,
                                  timeout=dl.timeout, worker_init_fn=dl.worker_init_fn,
                                  multiprocessing_context=dl.multiprocessing_context, generator=dl.generator,
                                  persistent_workers=dl.persistent_workers, pin_memory_device=dl.pin_memory_device)
        if dl.num_workers > 0:
            kw["prefetch_factor"] = dl.prefetch_factor
        # in_order (the default) keeps batches in the sampler's order: totals are matched by position
        return DataLoader(dl.dataset, batch_sampler=_Shares(dl.batch_sampler, self.dist, self.totals, self.skipped),
                          **kw)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Any, Any, int]]:
        self.totals.clear()
        if not self.dist.enabled:
            for batch in self.loader:
                inputs, targets = self.unpack(batch)
                yield inputs, targets, len(targets)
        elif self.rebuilt is not None:
            for batch in self.rebuilt:
                inputs, targets = self.unpack(batch)
                yield inputs, targets, self.totals.popleft()
        else:
            for batch in self.loader:
                inputs, targets = self.unpack(batch)
                n = len(targets)
                if n < self.dist.world:
                    self.skipped.append(n)
                    continue
                lo, hi = _bounds(n, self.dist)
                yield _take(inputs, lo, hi), targets[lo:hi], n


# ---- the launcher ---------------------------------------------------------------------------------

def _root_cause(failures: Mapping[int, Any]) -> tuple[int, Any]:
    """The failure that explains the others: a rank that knows it will fail again (exit 3) or
    was given a bad spec (2), then one that failed on its own, then one killed by a signal
    (SIGKILL: out of memory), then one that lost its peers, and last one that torchrun stopped
    (SIGTERM) because another had failed; the lowest rank among equals."""
    def key(item: tuple[int, Any]) -> tuple[int, int]:
        rank, f = item
        if f.exitcode in (2, 3):
            order = 0
        elif f.exitcode > 0:
            order = 3 if PEER_LOST in str(f.message) else 1
        else:
            order = 4 if -f.exitcode == signal.SIGTERM else 2
        return order, rank
    return min(failures.items(), key=key)


def main(argv: list[str] | None = None) -> int:
    """`python -m boss.distributed N`: run the trial in $BOSS_TRIAL as N processes."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from .trialspec import ENV, EXIT_BAD_SPEC, EXIT_FAILED, _failed

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m boss.distributed NPROC (the trial spec is in $BOSS_TRIAL)", file=sys.stderr)
        return EXIT_BAD_SPEC
    try:
        index = json.loads(os.environ.get(ENV) or "{}").get("index", "?")
    except ValueError:
        index = "?"
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={int(argv[0])}", "--module", "boss.trial"]))
    except ChildFailedError as e:
        rank, f = _root_cause(e.failures)
        if f.exitcode < 0:
            why = f"process {rank} of {argv[0]} was killed by {f.signal_name()}"
        elif f.message and not str(f.message).startswith("To enable traceback"):
            why = str(f.message).removeprefix("boss.trial: ")
        else:
            why = f"process {rank} of {argv[0]} exited with code {f.exitcode} (its output is in the trial's log)"
        _failed(f"boss.trial: {why}" if why.startswith(f"trial {index} failed") else
                f"boss.trial: trial {index} failed: {why}")
        return f.exitcode if f.exitcode in (2, 3) else EXIT_FAILED
    except SignalException as e:  # stopped (SIGTERM): torchrun has stopped the processes
        print(f"boss.trial: trial {index} stopped by {e.sigval.name}", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    from boss.distributed import main as _main  # the imported module, not __main__ (see boss.trial)

    sys.exit(_main())
