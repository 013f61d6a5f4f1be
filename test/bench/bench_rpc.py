"""Node RPC micro benchmark: stdlib ThreadingHTTPServer (ganeti-noded) vs aiohttp.

Run:  .venv/bin/python test/bench/bench_rpc.py [--quick]
The aiohttp server is measured only when aiohttp is importable (it is not a
project dependency; e.g. ``pip install --target DIR aiohttp`` and
``PYTHONPATH=DIR``).  Both servers run in their own process on 127.0.0.1 with
the same mutual-TLS material and the same backend procedures; the client is
always the project's RpcRunner (http.client, kept-alive connections).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import crypto, pathutils
from ganeti.rpc.client import RpcRunner, default_ssl_context_factory, static_resolver

NODED = Path(__file__).resolve().parents[2] / "daemons" / "ganeti-noded"


def _serve_aiohttp(root: str) -> None:
    """Child process: the same procedures behind aiohttp."""
    from aiohttp import web  # type: ignore[import-not-found, unused-ignore]

    from ganeti.backend import NodeContext
    from ganeti.server import noded

    paths = pathutils.Paths.for_root(root)
    ctx = NodeContext(paths=paths)
    ssl_ctx = crypto.server_ssl_context(paths.node_cert_file, paths.cluster_ca_file)
    fake = noded.NodeRpcServer.__new__(noded.NodeRpcServer)  # reuse dispatch() only
    fake.procedures = noded.TABLE
    fake.node_context = ctx
    blocking = {"test_delay", "upload_file", "hooks_runner", "write_ssconf_files"}

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["proc"]
        args = json.loads(await request.read())
        if name in blocking:
            loop = asyncio.get_running_loop()
            ok, payload = await loop.run_in_executor(None, fake.dispatch, name, args)
        else:
            ok, payload = fake.dispatch(name, args)
        return web.Response(body=json.dumps([ok, payload]).encode(),
                            content_type="application/json")

    async def main() -> None:
        # Blocking procedures need threads here too; size the pool like noded's
        # thread-per-connection model so that concurrency is compared fairly.
        from concurrent.futures import ThreadPoolExecutor

        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(128))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{proc}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]
        print(f"Listening on 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _setup(base: Path) -> tuple[pathutils.Paths, pathutils.Paths]:
    ca = crypto.generate_cluster_ca("bench", 2)
    result = []
    for name in ("master", "node"):
        paths = pathutils.Paths.for_root(base / name)
        cert, key = crypto.generate_node_certificate(ca[0], ca[1], name, ["127.0.0.1"], 2)
        crypto.write_pem_pair(paths.node_cert_file, cert, key)
        paths.cluster_ca_file.write_text(ca[0])
        result.append(paths)
    return result[0], result[1]


def _start(kind: str, node: pathutils.Paths) -> tuple[subprocess.Popen[str], int]:
    if kind == "stdlib":
        cmd = [sys.executable, str(NODED), "-f", "--root", str(node.root), "--bind",
               "127.0.0.1", "--port", "0"]
    else:
        cmd = [sys.executable, __file__, "--serve-aiohttp", str(node.root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Listening on" in line:
            port = int(line.split("Listening on ")[1].split()[0].rsplit(":", 1)[1])
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, port
    raise RuntimeError(f"{kind} server did not start")


def _timed(fn: Callable[[], Any], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _bench(kind: str, master: pathutils.Paths, node: pathutils.Paths,
           quick: bool) -> dict[str, float]:
    proc, port = _start(kind, node)
    scale = 4 if quick else 1
    figures: dict[str, float] = {}
    try:
        runner = RpcRunner(static_resolver({"n": ("127.0.0.1", port, False)}),
                           default_ssl_context_factory(master), paths=master)
        with runner:
            runner.call_ping(["n"])
            lat = _timed(lambda: runner.call_ping(["n"]), 2000 // scale)
            figures["ping_keepalive_p50_us"] = statistics.median(lat) * 1e6
            figures["ping_keepalive_p99_us"] = sorted(lat)[int(len(lat) * 0.99)] * 1e6

            ctx = default_ssl_context_factory(master)()

            def fresh() -> None:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
                conn.request("POST", "/ping", b"[]")
                conn.getresponse().read()
                conn.close()

            fresh_lat = _timed(fresh, 200 // scale)
            figures["ping_new_conn_p50_us"] = statistics.median(fresh_lat) * 1e6

            threads, per_thread = 16, 200 // scale

            def worker() -> None:
                for _ in range(per_thread):
                    runner.call_ping(["n"])

            start = time.perf_counter()
            pool = [threading.Thread(target=worker) for _ in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            figures["ping_16_clients_req_per_s"] = threads * per_thread / (
                time.perf_counter() - start)

            start = time.perf_counter()
            delay_threads = [threading.Thread(target=runner.call_test_delay, args=(["n"], 0.5))
                             for _ in range(50)]
            for t in delay_threads:
                t.start()
            for t in delay_threads:
                t.join()
            figures["50_concurrent_delay_0.5s_wall_s"] = time.perf_counter() - start

            src = master.cluster_conf_file
            src.write_bytes(os.urandom(3 * 1024 * 1024))
            up = _timed(lambda: runner.call_upload_file(["n"], src), 20 // scale)
            figures["upload_3MiB_MiB_per_s"] = 3 / statistics.median(up)
    finally:
        proc.terminate()
        proc.wait(30)
    return figures


def _validation_figures() -> dict[str, float]:
    """In-process cost of the boundary check (ganeti.rpc.contract) per call."""
    from ganeti.server import noded

    send = noded.TABLE["transfer_send_start"]
    args = ["t1", {"kind": "disk", "dev_type": "file", "logical_id": ["file", "/x"]},
            "127.0.0.1", 1234, "m" * 16, "zstd", {"bwlimit": 1000, "checksum": "blake3"}]
    ping = noded.TABLE["ping"]
    count = 20000
    start = time.perf_counter()
    for _ in range(count):
        send.validate(args)
    seven = (time.perf_counter() - start) / count
    start = time.perf_counter()
    for _ in range(count):
        ping.validate([])
    none = (time.perf_counter() - start) / count
    return {"validate_7_args_us": seven * 1e6, "validate_no_args_us": none * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve-aiohttp", metavar="ROOT")
    opts = parser.parse_args()
    if opts.serve_aiohttp:
        _serve_aiohttp(opts.serve_aiohttp)
        return
    kinds = ["stdlib"]
    try:
        import aiohttp

        kinds.append("aiohttp")
        print(f"aiohttp {aiohttp.__version__}")
    except ImportError:
        print("aiohttp not importable: measuring the stdlib server only")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="bench_rpc.") as tmp:
        master, node = _setup(Path(tmp))
        results = {kind: _bench(kind, master, node, opts.quick) for kind in kinds}
    names = list(results["stdlib"])
    print(f"{'figure':36}" + "".join(f"{k:>12}" for k in kinds))
    for name in names:
        print(f"{name:36}" + "".join(f"{results[k][name]:12.1f}" for k in kinds))
    for name, value in _validation_figures().items():
        print(f"{name:36}{value:12.2f}")


if __name__ == "__main__":
    main()
