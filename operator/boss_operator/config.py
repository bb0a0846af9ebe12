"""The operator's own settings, from its environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    trainer_image: str = "ghcr.io/boss-automl/boss-trainer:0.1.0"
    pushgateway: str | None = None  # used when a study names none
    prometheus: str | None = None  # read objectives from this server (it scrapes the Pushgateway)
    storage_uri: str | None = None
    storage_endpoint: str | None = None
    storage_secret: str | None = None
    poll_seconds: float = 5.0
    max_trials: int = 2000  # trials live in the study's status; etcd caps an object near 1.5 MB
    backoff_limit: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        e = os.environ if env is None else env
        return cls(
            trainer_image=e.get("BOSS_TRAINER_IMAGE", cls.trainer_image),
            pushgateway=e.get("BOSS_PUSHGATEWAY") or None,
            prometheus=e.get("BOSS_PROMETHEUS") or None,
            storage_uri=e.get("BOSS_STORAGE_URI") or None,
            storage_endpoint=e.get("BOSS_STORAGE_ENDPOINT") or None,
            storage_secret=e.get("BOSS_STORAGE_SECRET") or None,
            poll_seconds=float(e.get("BOSS_POLL_SECONDS", cls.poll_seconds)),
            max_trials=int(e.get("BOSS_MAX_TRIALS", cls.max_trials)),
            backoff_limit=int(e.get("BOSS_JOB_BACKOFF_LIMIT", cls.backoff_limit)),
        )
