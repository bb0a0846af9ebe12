"""The dashboard's HTTP server (aiohttp): the page, JSON of the studies, and Server-Sent Events.

Live updates cost little: each open page holds one event stream; the server checks, twice a
second for a run folder (a stat of state.json and of the logs the page watches) and once a second
for a cluster (a GET of the study object), whether anything changed, and only then sends one small
event; the page re-reads what the event says changed. No page polls.

Every read of a source runs in one worker thread (file reads and the blocking Kubernetes client
stay off the event loop); the importance fit runs in another, so it never delays an update.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from .sources import ClusterSource, LocalSource, SourceError

log = logging.getLogger("boss.ui")
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
DEFAULT_PORT = 8765
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream (proxies close silent ones)


def _asset(name: str) -> bytes:
    return resources.files("boss.ui").joinpath("static", name).read_bytes()


def _ints(text: str | None, limit: int = 32) -> list[int]:
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if part.isdigit():
            out.append(int(part))
    return out[:limit]


class Dashboard:
    """One source, served: the routes and the two worker threads."""

    def __init__(self, source: LocalSource | ClusterSource):
        self.source = source
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="boss-ui-read")
        self.fitter = ThreadPoolExecutor(1, thread_name_prefix="boss-ui-fit")
        self.poll = 0.5 if source.kind == "local" else ClusterSource.POLL
        self._encoded: dict[str, tuple[int, bytes]] = {}  # the last study JSON sent, by id
        self._importance: dict[str, tuple[Any, dict]] = {}
        self._said: set[str] = set()  # messages logged already (a page retrying repeats none)
        self.assets = {name: _asset(name) for name in STATIC}

    async def read(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.reader, fn, *args)

    def problem(self, request: web.Request, e: SourceError) -> web.Response:
        line = str(e)
        if line not in self._said:  # once per distinct message: the page's retries add no noise
            self._said.add(line)
            log.warning("%s: %s", request.path_qs, line)
        return web.json_response({"error": line}, status=e.status)

    # ---- routes ----------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.assets["index.html"], content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=self.assets[name], content_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": self.source.kind, "where": self.source.describe()})

    async def studies(self, request: web.Request) -> web.Response:
        try:
            rows = await self.read(self.source.studies)
        except SourceError as e:
            return self.problem(request, e)
        return web.json_response({"studies": rows, "where": self.source.describe(),
                                  "empty": None if rows else self.source.empty_message()})

    def _sid(self, request: web.Request) -> str:
        sid = request.query.get("id")
        if not sid:
            raise SourceError("which study? (?id=...)", 400)
        return sid

    async def study(self, request: web.Request) -> web.Response:
        try:
            sid = self._sid(request)
            view = await self.read(self.source.study, sid)
        except SourceError as e:
            return self.problem(request, e)
        cached = self._encoded.get(sid)
        if cached is None or cached[0] != id(view):
            cached = (id(view), json.dumps(view, separators=(",", ":"), allow_nan=False).encode())
            self._encoded[sid] = cached
            while len(self._encoded) > 8:
                self._encoded.pop(next(iter(self._encoded)))
        return web.Response(body=cached[1], content_type="application/json")

    async def trial(self, request: web.Request) -> web.Response:
        try:
            sid = self._sid(request)
            index = _ints(request.query.get("i"), 1)
            if not index:
                raise SourceError("which trial? (&i=N)", 400)
            detail = await self.read(self.source.trial, sid, index[0])
        except SourceError as e:
            return self.problem(request, e)
        return web.json_response(detail, dumps=lambda v: json.dumps(v, default=str))

    async def curves(self, request: web.Request) -> web.Response:
        try:
            sid = self._sid(request)
            got = await self.read(self.source.curves, sid, _ints(request.query.get("trials"), 12))
        except SourceError as e:
            return self.problem(request, e)
        return web.json_response(got)

    async def importance(self, request: web.Request) -> web.Response:
        from .importance import importance

        try:
            sid = self._sid(request)
            view = await self.read(self.source.study, sid)
        except SourceError as e:
            return self.problem(request, e)
        done = sum(t["state"] == "succeeded" for t in view["trials"])
        hit = self._importance.get(sid)
        if hit is None or hit[0] != done:  # refit when a trial succeeded, not on every change
            result = await asyncio.get_running_loop().run_in_executor(self.fitter, importance, view["space"], view["trials"])
            hit = self._importance[sid] = (done, result)
        return web.json_response(hit[1])

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `{"token": ...}` when what the page shows changed, `{"error": ...}`
        when it cannot be read (once, until it can again)."""
        sid = request.query.get("id") or None
        watched = _ints(request.query.get("watch"), 16)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        last, quiet = None, 0.0
        try:
            while True:
                try:
                    payload = {"token": await self.read(self.source.token, sid, watched)}
                except SourceError as e:
                    payload = {"error": str(e)}
                text = json.dumps(payload, default=str, separators=(",", ":"))
                if text != last:
                    await resp.write(f"data: {text}\n\n".encode())
                    last, quiet = text, 0.0
                elif quiet >= KEEPALIVE:
                    await resp.write(b": still here\n\n")
                    quiet = 0.0
                await asyncio.sleep(self.poll)
                quiet += self.poll
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/", self.page), web.get("/static/{name}", self.static), web.get("/api/info", self.info),
            web.get("/api/studies", self.studies), web.get("/api/study", self.study), web.get("/api/trial", self.trial),
            web.get("/api/curves", self.curves), web.get("/api/importance", self.importance),
            web.get("/api/events", self.events),
        ])

        async def close(app: web.Application) -> None:
            self.reader.shutdown(wait=False, cancel_futures=True)
            self.fitter.shutdown(wait=False, cancel_futures=True)

        app.on_cleanup.append(close)
        return app


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def _serve(dashboard: Dashboard, host: str, port: int, ready=None) -> None:
    runner = web.AppRunner(dashboard.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(source: LocalSource | ClusterSource, host: str = "127.0.0.1", port: int | None = None, ready=None) -> None:
    """Serve the dashboard until interrupted. `port` None: 8765, or a free one if that is taken."""
    if port is None:
        port = DEFAULT_PORT if _free(host, DEFAULT_PORT) else 0
    asyncio.run(_serve(Dashboard(source), host, port, ready))


def run_cli(target: str | None, cluster: bool, namespace: str | None, all_namespaces: bool,
            host: str, port: int | None) -> int:
    """`boss ui`: one line and exit 2 for a path that is not there; else serve and print the URL."""
    logging.basicConfig(level=logging.INFO, format="boss ui: %(message)s", stream=sys.stderr)
    if cluster and target:
        print(f"error: {target}: give a run folder or --cluster, not both", file=sys.stderr)
        return 2
    try:
        if cluster:
            source: LocalSource | ClusterSource = ClusterSource(namespace=namespace, all_namespaces=all_namespaces)
            try:
                source._connect()
            except SourceError as e:  # the page says it too, and the server stays up for a retry
                log.warning("%s", e)
        else:
            source = LocalSource(Path(target or "runs"))
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def ready(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"boss ui: serving {source.describe()} at http://{shown}:{bound}/ (Ctrl-C stops)", flush=True)

    try:
        serve(source, host, port, ready)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
