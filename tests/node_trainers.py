"""Trainers that check, from inside the trial's container, what the real node gave it
(tests/test_node.py): they fail the trial with the reason when something is not as promised."""

import os
from pathlib import Path

from boss.trainers.digits import DigitsTrainer
from torch.utils.data import DataLoader


def _status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"/proc/self/status has no {field}")


class Confined(DigitsTrainer):
    """Runs only as the restricted profile promises: uid/gid 1000, no capabilities, no new
    privileges, a seccomp filter, a read-only root filesystem, a writable /tmp."""

    def configure_model(self):
        problems = []
        if (os.getuid(), os.getgid()) != (1000, 1000):
            problems.append(f"uid/gid {os.getuid()}/{os.getgid()}, not 1000/1000")
        if int(_status("CapEff"), 16) != 0:
            problems.append(f"effective capabilities {_status('CapEff')}")
        if _status("NoNewPrivs") != "1":
            problems.append("new privileges allowed")
        if _status("Seccomp") != "2":
            problems.append(f"seccomp mode {_status('Seccomp')}, not a filter")
        try:
            Path("/opt/boss-probe").write_text("x")
            problems.append("the root filesystem is writable")
        except OSError:
            pass
        Path(os.environ["TMPDIR"], "probe").write_text("x")  # the scratch emptyDir is writable
        if problems:
            raise RuntimeError("not confined: " + "; ".join(problems))
        print("confined: uid 1000, no capabilities, seccomp filter, read-only root", flush=True)
        return super().configure_model()


class WorkerLoader(DigitsTrainer):
    """Trains from a DataLoader with args.workers worker processes, which pass batches through
    /dev/shm (the pod's memory-backed emptyDir)."""

    def train_dataloader(self):
        x, y = self._splits()[0]
        from torch.utils.data import TensorDataset

        workers = int(self.args.get("workers", 2))
        print(f"DataLoader workers: {workers}; /dev/shm: {os.statvfs('/dev/shm').f_blocks * os.statvfs('/dev/shm').f_frsize >> 20} MiB",
              flush=True)
        return DataLoader(TensorDataset(x, y), batch_size=int(self.config.get("batch_size", 64)), shuffle=True,
                          num_workers=workers, persistent_workers=False)
