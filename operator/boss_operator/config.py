"""The operator's own settings, from its environment (the Helm chart sets them).

What a study may point at: the operator contacts a metrics URL (Pushgateway, Prometheus) only
if the cluster admin configured it (`BOSS_PUSHGATEWAY`, `BOSS_PROMETHEUS`) or listed it in
`BOSS_ALLOWED_METRICS_URLS`; a study may name a storage endpoint for its trials only if it is
the admin's (`BOSS_STORAGE_ENDPOINT`) or in `BOSS_ALLOWED_STORAGE_ENDPOINTS`. A study that names
another is refused (InvalidSpec). `*` in a list allows any URL. The operator itself never
contacts storage.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

ANY = "*"


def normalize_url(url: str) -> str | None:
    """scheme://host:port/path of an http(s) URL, for comparing URLs as a client would reach them
    (host case and the default port do not matter, a trailing slash neither); None if the URL is
    not a plain http(s) URL (credentials, a query or a fragment in it: never equal to an allowed one)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}{parts.path.rstrip('/')}"


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(u for u in re.split(r"[\s,]+", text or "") if u)


def _allows(url: str, own: tuple[str | None, ...], allowed: tuple[str, ...]) -> bool:
    if ANY in allowed:
        return True
    want = normalize_url(url)
    return want is not None and want in {normalize_url(u) for u in (*own, *allowed) if u}


@dataclass(frozen=True)
class OperatorConfig:
    trainer_image: str | None = None  # for studies that name none (the chart's trainer.image): no public default
    pushgateway: str | None = None  # used when a study names none; the operator cross-checks objectives here
    prometheus: str | None = None  # read objectives from this server (it scrapes the Pushgateway)
    storage_uri: str | None = None  # for the trials: the operator never reads or writes storage
    storage_endpoint: str | None = None
    storage_secret: str | None = None  # the name of the Secret a trial gets by reference, in its namespace
    allowed_metrics_urls: tuple[str, ...] = ()  # besides pushgateway and prometheus, what a study may name
    allowed_storage_endpoints: tuple[str, ...] = ()  # besides storage_endpoint
    poll_seconds: float = 60.0  # the safety poll: finished Jobs and edits wake a study at once
    retry_seconds: float = 1.0  # a finished trial whose result is not readable yet is asked again after this
    history_chunk: int = 100  # finished trials per history ConfigMap (history.py); the status holds fewer
    backoff_limit: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        e = os.environ if env is None else env
        return cls(
            trainer_image=e.get("BOSS_TRAINER_IMAGE") or None,
            pushgateway=e.get("BOSS_PUSHGATEWAY") or None,
            prometheus=e.get("BOSS_PROMETHEUS") or None,
            storage_uri=e.get("BOSS_STORAGE_URI") or None,
            storage_endpoint=e.get("BOSS_STORAGE_ENDPOINT") or None,
            storage_secret=e.get("BOSS_STORAGE_SECRET") or None,
            allowed_metrics_urls=_list(e.get("BOSS_ALLOWED_METRICS_URLS")),
            allowed_storage_endpoints=_list(e.get("BOSS_ALLOWED_STORAGE_ENDPOINTS")),
            poll_seconds=float(e.get("BOSS_POLL_SECONDS", cls.poll_seconds)),
            retry_seconds=float(e.get("BOSS_RETRY_SECONDS", cls.retry_seconds)),
            history_chunk=max(1, int(e.get("BOSS_HISTORY_CHUNK", cls.history_chunk))),
            backoff_limit=int(e.get("BOSS_JOB_BACKOFF_LIMIT", cls.backoff_limit)),
        )

    def allows_metrics_url(self, url: str) -> bool:
        """Whether a study may name `url` as its Pushgateway or Prometheus (the operator may contact it)."""
        return _allows(url, (self.pushgateway, self.prometheus), self.allowed_metrics_urls)

    def allows_storage_endpoint(self, url: str) -> bool:
        """Whether a study may name `url` as the storage endpoint its trials use."""
        return _allows(url, (self.storage_endpoint,), self.allowed_storage_endpoints)
