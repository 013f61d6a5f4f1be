"""Build the tiny real kvm guest: a Debian cloud kernel and a busybox initramfs.

``ensure_guest()`` returns a :class:`GuestImage` (kernel, initrd, kernel
command line), building it on first use: ``apt-get download`` the kernel
package ``linux-image-cloud-amd64`` depends on and ``busybox-static`` (only
the package registries are contacted), ``dpkg -x`` them into a scratch
directory (nothing is installed on the host), and write a gzip'd newc cpio
initramfs with busybox, the virtio/ACPI modules the kernel has as modules (in
dependency order) and the init script below.  The result lives in the cache
directory (``GANETI_GUEST_CACHE``, default ``<checkout>/.cache/guest``) under
a key of the package versions and the init script's hash, so later runs reuse
it; a lock file keeps parallel builders from clashing.

The init writes the block format of :mod:`ganeti.hypervisor.guest_verify` to
every virtio disk and reports on the serial console (see doc/kvm.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ganeti import errors
from ganeti.hypervisor import guest_verify as fmt

CACHE_ENV = "GANETI_GUEST_CACHE"
SOURCE_TOP = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = SOURCE_TOP / ".cache" / "guest"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# modules init loads (with what they depend on) when the kernel has them as modules
MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "button", "evdev")
DEFAULT_BLOCKS = 64
DEFAULT_INTERVAL_MS = 10
PROGRESS_EVERY = 50
BUILD_VERSION = 1  # bump when the initramfs layout changes
META_FILE = "guest.json"
APT_TIMEOUT = 600.0

# Serial console lines (the e2e tests and kvmexport wait for these)
READY_LINE = "GUEST-READY"
VERIFY_OK = "GUEST-VERIFY ok"
VERIFY_FAILED = "GUEST-VERIFY FAILED"
PROGRESS_LINE = "GUEST-PROGRESS"
STOPPED_LINE = "GUEST-STOPPED"

INIT_TEMPLATE = r"""#!/bin/sh
# Init of the tiny kvm guest (ganeti.tools.guest_image); block format and rules
# in ganeti.hypervisor.guest_verify and doc/kvm.md.
PATH=/bin
export PATH
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
BLOCKS=@BLOCKS@
INTERVAL_MS=@INTERVAL_MS@
PROGRESS=@PROGRESS@
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        gntguest.blocks=*) BLOCKS=${arg#*=} ;;
        gntguest.interval_ms=*) INTERVAL_MS=${arg#*=} ;;
        gntguest.progress=*) PROGRESS=${arg#*=} ;;
    esac
done
idle() {  # nothing more to do; the power button still powers off
    while :; do
        [ -e /tmp/stop ] && poweroff -f
        sleep 1
    done
}
for m in @MODULES@; do
    insmod "/lib/modules/$m.ko" || echo "GUEST-ERROR insmod $m failed"
done
# the power button (system_powerdown) asks the writer to stop at a generation boundary
for ev in /sys/class/input/event*; do
    if [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ]; then
        ( dd if="/dev/input/${ev##*/}" of=/dev/null bs=24 count=1 status=none; : > /tmp/stop ) &
    fi
done
# wait until every virtio block device has its /dev node
want=0
for dev in /sys/bus/virtio/devices/*; do
    [ "$(cat "$dev/device" 2>/dev/null)" = 0x0002 ] && want=$((want + 1))
done
tries=0
while :; do
    DISKS=$(ls /sys/block | grep '^vd' | awk '{ print length($0) " " $0 }' | sort -n \
            | awk '{ print $2 }')
    have=0
    for d in $DISKS; do [ -b "/dev/$d" ] && have=$((have + 1)); done
    [ "$have" -ge "$want" ] && break
    tries=$((tries + 1))
    if [ "$tries" -gt 200 ]; then
        echo "GUEST-ERROR only $have of $want virtio disks appeared"
        break
    fi
    usleep 50000
done
N=$BLOCKS
for d in $DISKS; do
    fit=$(($(cat "/sys/block/$d/size") / 8))
    [ "$fit" -lt "$N" ] && N=$fit
done
if [ -z "$DISKS" ] || [ "$N" -lt 1 ]; then
    echo "GUEST-ERROR no usable virtio disk"
    echo "@READY@ disks= blocks=0 gen=0"
    idle
fi
make_payload() {  # generation disk index -> stdout (a builtin: no fork)
    t="gntguest:g=$1:d=$2:i=$3"
    printf '%-@LINE_WIDTH@s\n' @LINE_ARGS@
}
# boot check: rules 1 to 3 of guest_verify on our own disks, with a few processes per
# disk (each one costs under emulation): the data region must be exactly what the
# writer leaves after the highest generation its headers name
fail=""
pos=0
top=-1
for d in $DISKS; do
    dd if="/dev/$d" of=/tmp/img bs=@BLOCK_SIZE@ count="$N" iflag=direct status=none \
        || fail="$fail $d:read-error"
    tr -d '\000' < /tmp/img | grep -o "@MAGIC@ g=[0-9]* d=$pos i=[0-9]* n=$N sha256=[0-9a-f]*" \
        > /tmp/hdrs
    max=0
    while read -r magic gf df xf nf sf; do
        g=${gf#g=}
        x=${xf#i=}
        [ $(( (g - 1) % N )) -eq "$x" ] && [ "$g" -gt "$max" ] && max=$g
    done < /tmp/hdrs
    w=$N
    [ "$max" -lt "$N" ] && w=$max
    mkdir -p "/tmp/p$pos"
    i=0
    while [ "$i" -lt "$w" ]; do
        make_payload $((max - (max - 1 - i) % N)) "$pos" "$i" > "/tmp/p$pos/$i"
        i=$((i + 1))
    done
    if [ "$w" -gt 0 ]; then
        sha256sum "/tmp/p$pos"/* > /tmp/sums
        while read -r sum file; do eval "sum_${file##*/}=$sum"; done < /tmp/sums
    fi
    : > /tmp/exp
    i=0
    while [ "$i" -lt "$w" ]; do
        g=$((max - (max - 1 - i) % N))
        eval "sum=\$sum_$i"
        { printf '%-@HEADER_WIDTH@s\n' "@MAGIC@ g=$g d=$pos i=$i n=$N sha256=$sum"
          make_payload "$g" "$pos" "$i"; } >> /tmp/exp
        i=$((i + 1))
    done
    [ "$w" -lt "$N" ] && dd if=/dev/zero bs=@BLOCK_SIZE@ count=$((N - w)) status=none >> /tmp/exp
    if ! cmp -s /tmp/img /tmp/exp; then
        at=$(cmp /tmp/img /tmp/exp 2>/dev/null | sed -n 's/.*differ: [a-z]* \([0-9]*\).*/\1/p')
        [ -n "$at" ] || at=1
        fail="$fail $d:$(( (at - 1) / @BLOCK_SIZE@ )):damaged"
    fi
    if [ "$top" -lt 0 ]; then
        top=$max
        prev=$max
    elif [ "$max" -gt "$prev" ] || [ "$max" -lt $((top - 1)) ]; then
        fail="$fail $d:point-in-time"
    fi
    prev=$max
    pos=$((pos + 1))
done
if [ -n "$fail" ]; then
    echo "@VERIFY_FAILED@ gen=$top:$fail"
    echo "@READY@ disks=$(echo $DISKS | tr ' ' ,) blocks=$N gen=$top writing=no"
    idle
fi
echo "@VERIFY_OK@ gen=$top"
# continue with the last generation (completing it on the disks that missed it)
g=$top
[ "$g" -lt 1 ] && g=1
echo "@READY@ disks=$(echo $DISKS | tr ' ' ,) blocks=$N gen=$g writing=yes"
while :; do
    i=$(( (g - 1) % N ))
    pos=0
    for d in $DISKS; do
        make_payload "$g" "$pos" "$i" > /tmp/p
        sum=$(sha256sum /tmp/p)
        { printf '%-@HEADER_WIDTH@s\n' "@MAGIC@ g=$g d=$pos i=$i n=$N sha256=${sum%% *}"
          make_payload "$g" "$pos" "$i"; } > /tmp/b
        if ! dd if=/tmp/b of="/dev/$d" bs=@BLOCK_SIZE@ seek="$i" count=1 oflag=direct \
                conv=notrunc status=none; then
            echo "GUEST-ERROR write of $d block $i failed at gen=$g"
            idle
        fi
        pos=$((pos + 1))
    done
    [ $((g % PROGRESS)) -eq 0 ] && echo "@PROGRESS_LINE@ gen=$g"
    if [ -e /tmp/stop ]; then
        echo "@STOPPED@ gen=$g"
        sync
        poweroff -f
        idle
    fi
    g=$((g + 1))
    [ "$INTERVAL_MS" -gt 0 ] && usleep $((INTERVAL_MS * 1000))
done
"""

def render_init(modules: Sequence[str] = ()) -> str:
    """The init script, with the block format's constants filled in."""
    values = {
        "BLOCKS": str(DEFAULT_BLOCKS), "INTERVAL_MS": str(DEFAULT_INTERVAL_MS),
        "PROGRESS": str(PROGRESS_EVERY), "MODULES": " ".join(modules),
        "BLOCK_SIZE": str(fmt.BLOCK_SIZE), "PAYLOAD_SIZE": str(fmt.PAYLOAD_SIZE),
        "LINE_WIDTH": str(fmt.LINE_SIZE - 1), "HEADER_WIDTH": str(fmt.HEADER_SIZE - 1),
        "LINE_ARGS": " ".join(['"$t"'] * fmt.PAYLOAD_LINES), "MAGIC": fmt.MAGIC,
        "READY": READY_LINE, "VERIFY_OK": VERIFY_OK, "VERIFY_FAILED": VERIFY_FAILED,
        "PROGRESS_LINE": PROGRESS_LINE, "STOPPED": STOPPED_LINE,
    }
    text = INIT_TEMPLATE
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise AssertionError(f"unfilled init placeholders: {leftover}")
    return text


def kernel_args(blocks: int = DEFAULT_BLOCKS, interval_ms: int = DEFAULT_INTERVAL_MS) -> str:
    """The guest's kernel command line (no commas: it goes through ``-H k=v,...``)."""
    return (f"console=ttyS0 quiet panic=-1 gntguest.blocks={blocks}"
            f" gntguest.interval_ms={interval_ms}")


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_args: str
    blocks: int
    versions: dict[str, str]
    key: str

    def hvparams(self) -> dict[str, str]:
        """The kvm hypervisor parameters that boot this guest."""
        return {"kernel_path": str(self.kernel), "initrd_path": str(self.initrd),
                "kernel_args": self.kernel_args}

    def cli_hvparams(self) -> str:
        """The same as ``gnt-instance add -H`` / ``gnt-cluster modify -H`` text."""
        return "kvm:" + ",".join(f"{k}={v}" for k, v in self.hvparams().items())

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result.update(kernel=str(self.kernel), initrd=str(self.initrd))
        return result


# --- the serial console ----------------------------------------------------------

def console_fields(line: str) -> dict[str, str]:
    """``GUEST-READY disks=vda,vdb gen=3`` -> {"disks": "vda,vdb", "gen": "3"}."""
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def wait_for_line(log: str | Path, prefixes: Sequence[str], timeout: float,
                  offset: int = 0) -> tuple[str, int]:
    """The first complete console line at or after byte ``offset`` starting with one of
    ``prefixes``, and the offset after it; HypervisorError (with the log's tail) on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = Path(log).read_bytes()[offset:]
        except FileNotFoundError:
            data = b""
        pos = 0
        while (end := data.find(b"\n", pos)) >= 0:
            line = data[pos:end].decode("utf-8", "replace").strip()
            pos = end + 1
            if line.startswith(tuple(prefixes)):
                return line, offset + pos
        if time.monotonic() >= deadline:
            tail = data[-2000:].decode("utf-8", "replace")
            raise errors.HypervisorError(
                f"no line starting with {' or '.join(prefixes)} in {log} within"
                f" {timeout:.0f}s; its end: {tail!r}")
        time.sleep(0.1)


# --- newc cpio -------------------------------------------------------------------

class Cpio:
    """A newc ("070701") archive written in memory; no cpio tool, no root needed."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self._ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(head + name.encode() + b"\0")
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self._out.write(b"\0" * (-self._out.tell() % 512))
        return self._out.getvalue()


# --- kernel modules ---------------------------------------------------------------

def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` of a module's ``.modinfo`` ELF section (64-bit little endian)."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2 or ko[5] != 1:
        raise errors.HypervisorError("not a 64-bit little-endian ELF module")
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", ko, base)
        offset, size = struct.unpack_from("<QQ", ko, base + 0x18)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for index in range(shnum):
        name_off, offset, size = section(index)
        end = ko.index(b"\0", str_off + name_off)
        if ko[str_off + name_off:end] == b".modinfo":
            for item in ko[offset:offset + size].split(b"\0"):
                if item.startswith(b"depends="):
                    value = item[len(b"depends="):].decode()
                    return [d for d in value.split(",") if d]
            return []
    return []


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in (".xz", ".gz", ".zst"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise errors.HypervisorError(f"zstd-compressed kernel module {path} not supported")
    return data


def resolve_modules(moddir: Path, wanted: Sequence[str]) -> list[tuple[str, bytes]]:
    """The wanted modules and their dependencies, dependencies first; built-ins skipped."""
    builtin_file = moddir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {_module_name(Path(line)) for line in builtin_file.read_text().split()}
    files = {_module_name(p): p for p in (moddir / "kernel").rglob("*.ko*")}
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name in chain:
            raise errors.HypervisorError(f"module dependency cycle: {(*chain, name)}")
        if name not in files:
            raise errors.HypervisorError(f"kernel module {name} not found under {moddir}")
        data = _read_module(files[name])
        for dep in modinfo_depends(data):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append((name, data))

    for name in wanted:
        visit(name, ())
    return order


def build_initramfs(busybox: bytes, modules: Sequence[tuple[str, bytes]]) -> bytes:
    """The gzip'd newc initramfs (reproducible: fixed mtimes)."""
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"):
        archive.directory(directory)
    archive.chardev("dev/console", 5, 1)
    archive.chardev("dev/null", 1, 3)
    archive.file("bin/busybox", busybox, 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", render_init([n for n, _ in modules]).encode(), 0o755)
    for name, data in modules:
        archive.file(f"lib/modules/{name}.ko", data)
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


# --- packages --------------------------------------------------------------------

def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=APT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise errors.HypervisorError(f"{args[0]} failed: {err}") from None
    if result.returncode != 0:
        raise errors.HypervisorError(
            f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def kernel_package() -> str:
    """The versioned kernel package the cloud meta-package depends on."""
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    for line in out.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if match:
            return match.group(1)
    raise errors.HypervisorError(f"{KERNEL_META_PACKAGE} depends on no linux-image package"
                                 " (is the apt package list up to date?)")


def candidate_version(package: str) -> str:
    out = _run(["apt-cache", "policy", package])
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match.group(1) == "(none)":
        raise errors.HypervisorError(f"Debian package {package} is not available"
                                     " (apt-get update?)")
    return match.group(1)


def _download(package: str, version: str, debs: Path) -> Path:
    """``apt-get download`` into ``debs`` unless that version is already there."""
    pattern = f"{package}_*.deb"
    quoted = version.replace(":", "%3a")
    for existing in debs.glob(pattern):
        if f"_{quoted}_" in existing.name or f"_{version}_" in existing.name:
            return existing
    args = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:  # apt's sandbox user could not write into our cache
        args += ["-o", "APT::Sandbox::User=root"]
    _run([*args, f"{package}={version}"], cwd=debs)
    for existing in debs.glob(pattern):
        if f"_{quoted}_" in existing.name or f"_{version}_" in existing.name:
            return existing
    raise errors.HypervisorError(f"apt-get download {package}={version} left no .deb")


def resolve_cache_dir(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE


def _key(versions: dict[str, str]) -> str:
    text = json.dumps({"versions": versions, "init": render_init(MODULES),
                       "modules": MODULES, "build": BUILD_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(entry: Path) -> GuestImage | None:
    try:
        meta = json.loads((entry / META_FILE).read_text())
        image = GuestImage(kernel=entry / meta["kernel"], initrd=entry / meta["initrd"],
                           kernel_args=str(meta["kernel_args"]), blocks=int(meta["blocks"]),
                           versions=dict(meta["versions"]), key=str(meta["key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (image.kernel.is_file() and image.initrd.is_file()):
        return None
    return image


def _build(root: Path, entry: Path, packages: dict[str, str], key: str) -> None:
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    files = {pkg: _download(pkg, ver, debs) for pkg, ver in packages.items()}
    with tempfile.TemporaryDirectory(prefix="build-", dir=root) as scratch_name:
        scratch = Path(scratch_name)
        tree = scratch / "tree"
        for deb in files.values():
            _run(["dpkg-deb", "-x", str(deb), str(tree)])
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        moddirs = sorted((tree / "lib" / "modules").glob("*"))
        busybox = tree / "bin" / "busybox"
        if len(kernels) != 1 or len(moddirs) != 1 or not busybox.is_file():
            raise errors.HypervisorError(
                f"unexpected package contents: kernels {kernels}, module dirs {moddirs},"
                f" busybox {busybox.is_file()}")
        modules = resolve_modules(moddirs[0], MODULES)
        out = scratch / "out"
        out.mkdir()
        shutil.copyfile(kernels[0], out / "vmlinuz")
        (out / "initrd.gz").write_bytes(build_initramfs(busybox.read_bytes(), modules))
        meta = {"kernel": "vmlinuz", "initrd": "initrd.gz", "kernel_args": kernel_args(),
                "blocks": DEFAULT_BLOCKS, "versions": packages, "key": key,
                "modules": [name for name, _ in modules]}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        out.rename(entry)


def ensure_guest(cache_dir: str | Path | None = None) -> GuestImage:
    """The built guest, building it (once per package versions + init script) if needed."""
    root = resolve_cache_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    kernel_pkg = kernel_package()
    packages = {kernel_pkg: candidate_version(kernel_pkg),
                BUSYBOX_PACKAGE: candidate_version(BUSYBOX_PACKAGE)}
    key = _key(packages)
    entry = root / key
    with _locked(root):
        image = _load(entry)
        if image is not None:
            return image
        if entry.exists():  # a broken entry (e.g. copied without its files)
            shutil.rmtree(entry)
        for stale in root.glob("build-*"):  # a builder killed mid-way (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        _build(root, entry, packages, key)
    image = _load(entry)
    if image is None:
        raise errors.HypervisorError(f"guest build in {entry} left no usable image")
    return image


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-guest", description="Build (or find in the cache) the tiny kvm guest and"
        " print its kernel, initrd and kernel arguments as JSON")
    parser.add_argument("--cache-dir", default=None,
                        help=f"cache directory (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    parser.add_argument("--hvparams", action="store_true",
                        help="print the gnt-instance add -H text instead")
    args = parser.parse_args(argv)
    try:
        image = ensure_guest(args.cache_dir)
    except errors.GenericError as err:
        print(f"build-guest: {err}", file=sys.stderr)
        return 1
    if args.hvparams:
        print(image.cli_hvparams())
    else:
        print(json.dumps(image.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
