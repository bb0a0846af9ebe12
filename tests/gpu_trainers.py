"""A trainer that needs what a GPU cluster's pod template gives it: its dataset on a volume, its
settings from a ConfigMap, shared memory at /dev/shm (tests/test_gpu_cluster.py)."""

import os
from pathlib import Path

from boss.trainers.digits import DigitsTrainer


class ReadsItsDataset(DigitsTrainer):
    """Fails unless $DATASET_DIR/name.txt (the PVC) says $DATASET_NAME (the ConfigMap), and $SHM_DIR
    (the pod's /dev/shm) is a writable folder on the node's tmpfs."""

    def configure_model(self):
        marker = Path(os.environ["DATASET_DIR"]) / "name.txt"
        if marker.read_text().strip() != os.environ["DATASET_NAME"]:
            raise RuntimeError(f"{marker} does not name dataset {os.environ['DATASET_NAME']!r}")
        shm = Path(os.environ["SHM_DIR"])
        (shm / "probe").write_bytes(b"x" * 4096)
        if os.stat(shm).st_dev != os.stat("/dev/shm").st_dev:
            raise RuntimeError(f"{shm} is not on the node's shared-memory tmpfs")
        return super().configure_model()
