"""Which HTTP stack for ganeti-rapi: stdlib threads vs aiohttp vs starlette+uvicorn.

Run:  .venv/bin/python test/bench/bench_rapi_stack.py [--quick] [--polls 200,1000]
The optional stacks are measured only when importable (they are not project
dependencies), e.g. ``python3.11 -m venv /tmp/stackvenv; /tmp/stackvenv/bin/pip
install aiohttp starlette uvicorn httptools uvloop`` and
``PYTHONPATH=/tmp/stackvenv/lib/python3.11/site-packages``.

Scenario, as RAPI sees it: N clients each hold a long poll open (a request
that answers after HOLD seconds, as /2/jobs/ID/wait does, then poll again)
while a few other clients send short GETs over kept-alive connections.
Reported: p50/p99 of the short GETs, the server's peak RSS and threads.
Every server speaks TLS with the same certificate, in its own process; the
load comes from an asyncio client in this process.  The stdlib server is the
one ganeti-rapi runs (ganeti.server.https), its long poll a blocking wait in
the connection's thread.  The asyncio servers are measured twice: with an
``await asyncio.sleep`` (an asyncio LUXI client, which the project does not
have) and with the blocking wait in a thread pool (the LUXI client we have).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOLD = 2.0
SHORT_CLIENTS = 8
SHORT_BODY = json.dumps({"name": "inst1", "status": "running"}).encode()
# handshakes in flight while the long polls connect (clients do not all come at once)
CONNECTING = 32
POOL_THREADS = 1100  # enough for every long poll: the pool must not be the limit


def _server_context(cert: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    return ctx


# --- servers (child processes) ----------------------------------------------------------

def _serve_stdlib(cert: str) -> None:
    import dataclasses
    import logging

    from ganeti.server import connlimit, https

    class Handler(https.GuardedHandler):
        def do_GET(self) -> None:
            self.request_read()
            if self.path.startswith("/poll"):
                time.sleep(HOLD)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(SHORT_BODY)))
            self.end_headers()
            self.wfile.write(SHORT_BODY)

    # the handshake deadline defends against abuse; here it would only cut the ramp short
    limits = connlimit.Limits(max_connections=4000, idle_timeout=60, request_timeout=30,
                              handshake_timeout=300)
    server = https.TlsHttpServer(("127.0.0.1", 0), _server_context(cert), Handler,
                                 dataclasses.replace(limits), "bench",
                                 logging.getLogger("bench"))
    server.request_queue_size = 2048
    print(server.port, flush=True)
    server.serve_forever()


def _serve_aiohttp(cert: str, blocking: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web  # type: ignore[import-not-found, unused-ignore]

    pool = ThreadPoolExecutor(POOL_THREADS)

    async def short(_request: Any) -> Any:
        return web.Response(body=SHORT_BODY, content_type="application/json")

    async def poll(_request: Any) -> Any:
        if blocking:
            await asyncio.get_running_loop().run_in_executor(pool, time.sleep, HOLD)
        else:
            await asyncio.sleep(HOLD)
        return web.Response(body=SHORT_BODY, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/short", short)
        app.router.add_get("/poll", poll)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_server_context(cert),
                           backlog=2048)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr, unused-ignore]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_starlette(cert: str, blocking: bool) -> None:
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn  # type: ignore[import-not-found, unused-ignore]
    from starlette.applications import Starlette  # type: ignore[import-not-found, unused-ignore]
    from starlette.responses import Response  # type: ignore[import-not-found, unused-ignore]
    from starlette.routing import Route  # type: ignore[import-not-found, unused-ignore]

    pool = ThreadPoolExecutor(POOL_THREADS)

    async def short(_request: Any) -> Any:
        return Response(SHORT_BODY, media_type="application/json")

    async def poll(_request: Any) -> Any:
        if blocking:
            await asyncio.get_running_loop().run_in_executor(pool, time.sleep, HOLD)
        else:
            await asyncio.sleep(HOLD)
        return Response(SHORT_BODY, media_type="application/json")

    app = Starlette(routes=[Route("/short", short), Route("/poll", poll)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=cert, ssl_keyfile=cert,
                            backlog=2048, limit_concurrency=None, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


SERVERS: dict[str, Any] = {
    "stdlib": lambda cert: _serve_stdlib(cert),
    "aiohttp": lambda cert: _serve_aiohttp(cert, blocking=False),
    "aiohttp+pool": lambda cert: _serve_aiohttp(cert, blocking=True),
    "starlette": lambda cert: _serve_starlette(cert, blocking=False),
    "starlette+pool": lambda cert: _serve_starlette(cert, blocking=True),
}
_NEEDS = {"aiohttp": "aiohttp", "aiohttp+pool": "aiohttp", "starlette": "uvicorn",
          "starlette+pool": "uvicorn"}


def available() -> list[str]:
    kinds = []
    for kind in SERVERS:
        module = _NEEDS.get(kind)
        if module is not None:
            try:
                __import__(module)
                if module == "uvicorn":
                    __import__("starlette")
            except ImportError:
                continue
        kinds.append(kind)
    return kinds


# --- load (this process) ------------------------------------------------------------------

def _client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   path: str) -> None:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:60].decode())


async def _poller(port: int, stop: float, ctx: ssl.SSLContext, counts: dict[str, int],
                  connecting: asyncio.Semaphore) -> None:
    try:
        async with connecting:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except OSError:
        counts["connect_errors"] += 1
        return
    counts["connected"] += 1
    try:
        while time.monotonic() < stop:
            await _request(reader, writer, "/poll")
            counts["polls"] += 1
    except (OSError, asyncio.IncompleteReadError, RuntimeError):
        counts["poll_errors"] += 1
    finally:
        writer.close()


async def _shorts(port: int, start: float, stop: float, ctx: ssl.SSLContext,
                  latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        while time.monotonic() < stop:
            began = time.perf_counter()
            await _request(reader, writer, "/short")
            if time.monotonic() >= start:
                latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.005)
    finally:
        writer.close()


def _proc_status(pid: int) -> tuple[int, int]:
    """(RSS in KiB, threads) of a process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


async def _scenario(port: int, pid: int, polls: int, window: float) -> dict[str, Any]:
    ctx = _client_context()
    counts = {"connected": 0, "connect_errors": 0, "polls": 0, "poll_errors": 0}
    ramp = time.monotonic()
    stop = ramp + window + 30.0  # the pollers stop at the end of the window, see below
    connecting = asyncio.Semaphore(CONNECTING)
    pollers = [asyncio.create_task(_poller(port, stop, ctx, counts, connecting))
               for _ in range(polls)]
    # measure once every poll connection is made (or failed)
    while counts["connected"] + counts["connect_errors"] < polls \
            and time.monotonic() - ramp < 60:
        await asyncio.sleep(0.05)
    ramp_time = time.monotonic() - ramp
    start = time.monotonic() + 0.5
    end = start + window
    latencies: list[float] = []
    shorts = [asyncio.create_task(_shorts(port, start, end, ctx, latencies))
              for _ in range(SHORT_CLIENTS)]
    peak_rss = peak_threads = 0
    while time.monotonic() < end:
        rss, threads = _proc_status(pid)
        peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
        await asyncio.sleep(0.25)
    await asyncio.gather(*shorts, return_exceptions=True)
    for task in pollers:
        task.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    latencies.sort()
    return {
        "short_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "short_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "shorts": len(latencies), "rss_mib": peak_rss / 1024, "threads": peak_threads,
        "ramp_s": ramp_time, **counts,
    }


def run(kind: str, polls: int, window: float, cert: str) -> dict[str, Any]:
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--cert", cert],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        time.sleep(0.3)
        idle_rss, idle_threads = _proc_status(proc.pid)
        result = asyncio.run(_scenario(port, proc.pid, polls, window))
        result.update(idle_rss_mib=idle_rss / 1024, idle_threads=idle_threads)
        return result
    finally:
        proc.terminate()
        proc.wait(10)


def _raise_fd_limit(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="50 polls, short window")
    parser.add_argument("--polls", default="200,1000", help="long polls held (list)")
    parser.add_argument("--window", type=float, default=6.0, help="seconds measured")
    parser.add_argument("--only", help="comma-separated stacks to measure")
    opts = parser.parse_args()
    _raise_fd_limit(8192)
    if opts.serve:
        SERVERS[opts.serve](opts.cert)
        return 0
    from ganeti import crypto

    polls = [50] if opts.quick else [int(p) for p in opts.polls.split(",")]
    window = 3.0 if opts.quick else opts.window
    kinds = available()
    if opts.only:
        kinds = [k for k in kinds if k in opts.only.split(",")]
    missing = sorted(set(SERVERS) - set(available()))
    if missing:
        print(f"not importable, not measured: {', '.join(missing)}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        cert = str(Path(tmp) / "rapi.pem")
        pem, key = crypto.generate_server_certificate("bench", ["localhost"], ["127.0.0.1"],
                                                      1)
        crypto.write_pem_pair(cert, pem, key)
        print(f"{'stack':16} {'polls':>5} {'p50 ms':>8} {'p99 ms':>8} {'shorts':>6}"
              f" {'RSS MiB':>8} {'threads':>7} {'idle MiB':>8} {'ramp s':>6} {'errors':>6}")
        for count in polls:
            for kind in kinds:
                r = run(kind, count, window, cert)
                errors = r["connect_errors"] + r["poll_errors"]
                p50 = f"{r['short_p50_ms']:.2f}" if r["short_p50_ms"] is not None else "-"
                p99 = f"{r['short_p99_ms']:.2f}" if r["short_p99_ms"] is not None else "-"
                print(f"{kind:16} {count:>5} {p50:>8} {p99:>8} {r['shorts']:>6}"
                      f" {r['rss_mib']:>8.1f} {r['threads']:>7} {r['idle_rss_mib']:>8.1f}"
                      f" {r['ramp_s']:>6.1f} {errors:>6}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
