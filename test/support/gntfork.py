"""gnt-* commands for the e2e tests, forked from a server that has imported the CLI.

A gnt-* process spends most of its CPU importing the client (ganeti.cli, the
opcodes and objects: about 0.7 s), and the e2e tests run well over a thousand
of them.  The server imports those modules once; each command is then a fork
of it running the real script (``runpy``, as ``__main__``) in its own process,
with the caller's argv, environment, working directory and stdin/stdout/stderr
(passed as file descriptors), and its own exit code.  Commands run side by
side as separate processes do.  What a command does is unchanged; only its
interpreter start-up is skipped.

GANETI_TEST_GNT_FORK=0 turns it off (every command a new interpreter again).

The wire: the client connects to the server's Unix socket and sends one JSON
request with the three descriptors; a handler process forks the command,
answers ``{"pid": N}`` at once and ``{"status": S}`` (a waitpid status) when it
ends.
"""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ENV_SWITCH = "GANETI_TEST_GNT_FORK"
# what every gnt-* script imports; the server imports it once
PRELOAD = ("ganeti.cli", "ganeti.opcodes", "ganeti.objects", "ganeti.luxi",
           "ganeti.client.gnt_backup", "ganeti.client.gnt_cluster", "ganeti.client.gnt_debug",
           "ganeti.client.gnt_instance", "ganeti.client.gnt_job", "ganeti.client.gnt_node")
_START_TIMEOUT = 120.0


def _send_json(sock: socket.socket, obj: Any) -> None:
    sock.sendall(json.dumps(obj).encode() + b"\n")


def _recv_line(reader: Any) -> Any:
    """One JSON line (None at EOF); buffered, as both lines may come in one read."""
    data = reader.readline()
    if not data.endswith(b"\n"):
        return None
    return json.loads(data)


# --- the server side (runs in its own interpreter: python gntfork.py SOCKET) ---------


def _run_command(request: dict[str, Any]) -> int:
    """In the forked command process: become the script and run it; its exit code."""
    import runpy
    import traceback

    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    os.chdir(request["cwd"])
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(script)
    code: int
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as done:
        if done.code is None:
            code = 0
        elif isinstance(done.code, int):
            code = done.code
        else:
            print(done.code, file=sys.stderr)
            code = 1
    except BaseException:  # as the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    return code


def _handle(conn: socket.socket) -> None:
    """In the handler process: fork the command, report its pid and its end."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while not msg.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            os._exit(1)
        msg += more
    request = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            code = _run_command(request)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                pass
            try:
                atexit._run_exitfuncs()
            finally:
                os._exit(code & 0xFF)
    for fd in fds:
        os.close(fd)
    _send_json(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    _send_json(conn, {"status": status})


def serve(path: str) -> None:
    for name in PRELOAD:
        __import__(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(5)
    parent = os.getppid()
    print("ready", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:   # the test process is gone (killed): so are we
                os._exit(0)
            continue
        conn.setblocking(True)
        if os.fork() == 0:
            listener.close()
            try:
                _handle(conn)
            finally:
                os._exit(0)
        conn.close()


# --- the client side (the test process) ----------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="gntfork-")
        self.path = os.path.join(self.dir, "sock")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError("the gnt-* fork server did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: _Server | None = None
_server_lock = threading.Lock()
_server_failed = False


def _get_server() -> _Server | None:
    global _server, _server_failed
    with _server_lock:
        if _server is None and not _server_failed:
            try:
                _server = _Server()
            except (OSError, RuntimeError):
                _server_failed = True
                return None
            atexit.register(_server.close)
        return _server


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def _decode(data: bytes) -> str:
    """As subprocess's text mode does (locale encoding, universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding=locale.getpreferredencoding(False)
                            ).read()


def run(argv: list[str], env: dict[str, str], timeout: float | None,
        input_text: str | None) -> subprocess.CompletedProcess[str] | None:
    """Run ``argv`` (the interpreter, a script and its arguments) like
    ``subprocess.run(argv, capture_output=True, text=True)``; None when there is no
    server (the caller runs a process itself)."""
    server = _get_server() if enabled() else None
    if server is None:
        return None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if input_text is not None else (None, None)
    stdin_fd = in_r if in_r is not None else 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(server.path)
        request = json.dumps({"argv": argv[1:], "env": env, "cwd": os.getcwd()}).encode() + b"\n"
        socket.send_fds(sock, [request], [stdin_fd, out_w, err_w])
    except OSError:
        for fd in (out_r, out_w, err_r, err_w, in_r, in_w):
            if fd is not None:
                os.close(fd)
        sock.close()
        return None
    for fd in (out_w, err_w, in_r):
        if fd is not None:
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        with open(fd, "rb", buffering=0, closefd=True) as pipe:
            while block := pipe.read(65536):
                chunks[fd].append(block)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in chunks]
    for reader in readers:
        reader.start()
    if in_w is not None:
        def feed(fd: int = in_w, text: str = input_text or "") -> None:
            with open(fd, "wb", closefd=True) as pipe:
                try:
                    pipe.write(text.encode(locale.getpreferredencoding(False)))
                except BrokenPipeError:
                    pass
        threading.Thread(target=feed, daemon=True).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    pid = None
    try:
        try:
            sock.settimeout(timeout)
            lines = sock.makefile("rb")
            started = _recv_line(lines)
            pid = None if started is None else int(started["pid"])
            if deadline is not None:
                sock.settimeout(max(0.0, deadline - time.monotonic()))
            ended = _recv_line(lines)
        except TimeoutError:
            if pid is not None:
                _kill(pid)
            for reader in readers:
                reader.join(5)
            raise subprocess.TimeoutExpired(argv, timeout or 0.0,
                                            b"".join(chunks[out_r]),
                                            b"".join(chunks[err_r])) from None
    finally:
        sock.close()
    for reader in readers:
        reader.join()
    if ended is None:
        returncode = -int(signal.SIGKILL)     # the handler vanished
    else:
        returncode = os.waitstatus_to_exitcode(int(ended["status"]))
    return subprocess.CompletedProcess(argv, returncode, _decode(b"".join(chunks[out_r])),
                                       _decode(b"".join(chunks[err_r])))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass



def run_python(argv: list[str], env: dict[str, str], timeout: float | None = None,
               input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, env=env, capture_output=True, text=True, timeout=...)`` for
    ``argv`` = [sys.executable, script, args...], forked from the server when it runs."""
    proc = run(argv, env, timeout, input_text)
    if proc is None:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=timeout, input=input_text, check=False)
    return proc


if __name__ == "__main__":
    serve(sys.argv[1])
