"""Ganeti 3.0.2 itself as a test oracle: its Debian packages, unpacked, never installed.

The compatibility tests (test/compat/) run Ganeti's own gnt-* scripts and pure
functions against ours.  ``fetch()`` downloads the Debian bookworm packages
with ``apt-get download``, unpacks them with ``dpkg -x`` and makes a venv with
what Ganeti's Python needs.  Nothing of Ganeti is committed or installed: the
unpack lives in a cache directory (``$GANETI_ORACLE_DIR``, default
``.cache/ganeti-3.0`` in the checkout) and is reused by later runs.

``tools/ganeti-oracle`` does the same from the command line (and retries
at once after a failure); ``tools/run-tests`` calls it once before
pytest so that parallel workers find it ready.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ganeti.tools.local_cluster import LocalCluster

PACKAGES = ("ganeti-3.0", "ganeti-testsuite", "python3-ganeti-rapi", "ganeti-doc")
# what Ganeti 3.0's Python imports beyond the standard library (Debian's Depends); pyparsing
# at bookworm's version, whose parse trees differ from 3.3's (ParseFilter wraps subfilters)
PYTHON_DEPS = ("pyOpenSSL", "simplejson", "bitarray", "pycurl", "pyparsing==3.0.9", "psutil")
READY_FILE = "READY"
# a failed fetch is remembered this long, so that every test process does not retry it
UNAVAILABLE_FILE = "UNAVAILABLE"
RETRY_AFTER = 600.0
_TOP = Path(__file__).resolve().parents[2]


class OracleUnavailable(Exception):
    """Ganeti's packages cannot be had here; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("GANETI_ORACLE_DIR") or _TOP / ".cache" / "ganeti-3.0")


@dataclass(frozen=True)
class Ganeti3:
    """One unpacked Ganeti 3.0 and the interpreter that runs it."""

    base: Path
    python: Path
    versions: dict[str, str]

    @property
    def share(self) -> Path:
        """PYTHONPATH of Ganeti's package; also holds the gnt-* scripts."""
        return self.base / "usr" / "share" / "ganeti" / "3.0"

    @property
    def testsuite(self) -> Path:
        return self.base / "usr" / "share" / "ganeti" / "testsuite"

    @property
    def rapi_client(self) -> Path:
        """PYTHONPATH of python3-ganeti-rapi alone (``ganeti.rapi.client``), as installed."""
        return self.base / "usr" / "lib" / "python3" / "dist-packages"

    @property
    def pycache(self) -> Path:
        """Where Ganeti's interpreter keeps its bytecode (PYTHONPYCACHEPREFIX)."""
        return self.base.parent / "pycache"

    @property
    def docs(self) -> Path:
        return self.base / "usr" / "share" / "doc" / "ganeti-doc"

    def env(self, cluster: LocalCluster | None = None, **extra: str) -> dict[str, str]:
        """Our environment for Ganeti's code: its package first, pointed at ``cluster``
        only through Ganeti's own variables (GANETI_ROOTDIR, GANETI_HOSTNAME)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("GANETI_ROOT", "PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = str(self.share)
        # compiled once into the cache, never next to the unpacked sources: each run
        # of a 3.0 client otherwise compiles all of Ganeti's modules again (about half
        # of its start-up time)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        if cluster is not None:
            master = cluster.nodes[0]
            env["GANETI_ROOTDIR"] = str(Path(master.root))
            env["GANETI_HOSTNAME"] = master.name
        env.update(extra)
        return env

    def run(self, cluster: LocalCluster, script: str, *args: str, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one of Ganeti's scripts (``gnt-job``, ...) against ``cluster``."""
        path = self.share / script
        if not path.is_file():
            raise FileNotFoundError(f"Ganeti 3.0 has no script {script} ({path})")
        return subprocess.run([str(self.python), str(path), *args], env=self.env(cluster),
                              input=input, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def eval(self, code: str, timeout: float = 60, rapi_client: bool = False) -> Any:
        """Run ``code`` in Ganeti's interpreter; it sets ``result`` (JSON), returned here.

        With ``rapi_client`` only python3-ganeti-rapi is importable (``from
        ganeti.rapi import client``), as on a machine with just the client library.
        """
        runner = ("import json, sys\nns = {}\nexec(compile(sys.stdin.read(), '<oracle>',"
                  " 'exec'), ns)\nsys.stdout.write(json.dumps(ns['result']))\n")
        env = self.env(PYTHONPATH=str(self.rapi_client)) if rapi_client else self.env()
        proc = subprocess.run([str(self.python), "-c", runner], env=env, input=code,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"Ganeti code failed ({proc.returncode}):\n{proc.stderr}")
        return json.loads(proc.stdout)


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise OracleUnavailable(f"{argv[0]}: {err}") from None
    if proc.returncode != 0:
        raise OracleUnavailable(f"{' '.join(argv)} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _download(debs: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise OracleUnavailable("apt-get and dpkg are needed to fetch Ganeti's Debian"
                                " packages; this is not a Debian system")
    try:
        _run(["apt-get", "download", *PACKAGES], cwd=debs)
    except OracleUnavailable:
        if os.geteuid() != 0:
            raise
        # a fresh machine may have no package lists yet
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "download", *PACKAGES], cwd=debs)


def _make_venv(target: Path) -> None:
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    _install_deps(target)


def _install_deps(target: Path) -> None:
    """PYTHON_DEPS in the venv; again only when the list changed since the last time."""
    stamp = target / "oracle-deps"
    wanted = "\n".join(PYTHON_DEPS) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    _run([str(target / "bin" / "python"), "-m", "pip", "install", "-q",
          "--disable-pip-version-check", *PYTHON_DEPS])
    stamp.write_text(wanted)


def fetch(log: Any = None, retry: bool = False) -> Ganeti3:
    """The unpacked packages and their venv, made on first use (one process at a time).

    A failure is remembered for ``RETRY_AFTER`` seconds unless ``retry``.
    """
    top = cache_dir()
    top.mkdir(parents=True, exist_ok=True)
    with open(top.with_name(top.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = top / READY_FILE
        failed = top / UNAVAILABLE_FILE
        if not ready.exists():
            if failed.exists() and not retry and \
                    time.time() - failed.stat().st_mtime < RETRY_AFTER:
                raise OracleUnavailable(failed.read_text().strip())
            try:
                _build(top, log)
            except OracleUnavailable as err:
                failed.write_text(f"{err}\n")
                raise
            failed.unlink(missing_ok=True)
        _install_deps(top / "venv")
        versions = json.loads(ready.read_text())
    return Ganeti3(top / "root", top / "venv" / "bin" / "python", versions)


def _build(top: Path, log: Any) -> None:
    """Download, unpack and make the venv; READY last, so a half-made cache is redone."""
    for part in ("debs", "root", "venv"):
        shutil.rmtree(top / part, ignore_errors=True)
    debs = top / "debs"
    debs.mkdir()
    if log:
        log(f"downloading {', '.join(PACKAGES)} into {debs}")
    _download(debs)
    versions = {}
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(top / "root")])
        name, version = deb.name.split("_")[:2]
        versions[name] = version
    if log:
        log(f"making the venv {top / 'venv'} ({', '.join(PYTHON_DEPS)})")
    _make_venv(top / "venv")
    (top / READY_FILE).write_text(json.dumps(versions, indent=1) + "\n")


@functools.cache
def ganeti3() -> Ganeti3:
    """The oracle for this process; OracleUnavailable("why") when it cannot be had."""
    oracle = fetch()
    if not (oracle.share / "ganeti" / "__init__.py").is_file():
        raise OracleUnavailable(f"{oracle.share} holds no Ganeti package")
    return oracle


def main(argv: list[str]) -> int:
    if argv[1:] != ["fetch"]:
        sys.stderr.write("usage: ganeti-oracle fetch\n")
        return 2
    try:
        oracle = fetch(log=lambda msg: print(msg, flush=True), retry=True)
    except OracleUnavailable as err:
        sys.stderr.write(f"Ganeti 3.0 is unavailable: {err}\n")
        return 1
    print(f"Ganeti 3.0 ({', '.join(f'{k} {v}' for k, v in oracle.versions.items())})"
          f" in {oracle.base}; python {oracle.python}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
