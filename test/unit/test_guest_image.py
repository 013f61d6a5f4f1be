"""The tiny kvm guest: its builder's pieces (no downloads) and the disk verifier."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.hypervisor import guest_verify as gv
from ganeti.tools import guest_image as gi

BS = gv.BLOCK_SIZE


# --- synthetic guest disks ----------------------------------------------------------

def write_guest(paths: list[Path], generation: int, split: int | None = None,
                blocks: int = 8, size_blocks: int = 32) -> None:
    """Disks as the guest leaves them after finishing disk ``split - 1`` of ``generation``
    (``split`` None: all disks have it)."""
    split = len(paths) if split is None else split
    for position, path in enumerate(paths):
        last = generation if position < split else generation - 1
        image = bytearray(size_blocks * BS)
        for g in range(1, last + 1):
            index = (g - 1) % blocks
            image[index * BS:(index + 1) * BS] = gv.block(g, position, index, blocks)
        path.write_bytes(bytes(image))


def put_block(path: Path, index: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(index * BS)
        f.write(data)


@pytest.fixture
def disks(tmp_path: Path) -> list[Path]:
    return [tmp_path / "disk0", tmp_path / "disk1"]


def test_block_layout() -> None:
    raw = gv.block(9, 1, 0, 8)
    assert len(raw) == BS
    assert raw.startswith(b"GNTBLK1 g=9 d=1 i=0 n=8 sha256=")
    assert raw[gv.HEADER_SIZE - 1:gv.HEADER_SIZE] == b"\n"
    assert gv.payload(9, 1, 0) != gv.payload(10, 1, 0) != gv.payload(9, 0, 0)


@pytest.mark.parametrize("generation,split", [(0, None), (3, None), (8, None), (21, None),
                                              (21, 1), (1, 1)])
def test_consistent_points(disks: list[Path], generation: int, split: int | None) -> None:
    write_guest(disks, generation, split)
    report = gv.verify_guest_disks(disks)
    assert report.consistent, report.to_dict()
    assert report.generation == generation
    assert report.disks_at_generation == (2 if split is None else split)
    assert [d.max_generation for d in report.disks] == (
        [generation] * 2 if split is None else [generation, generation - 1])


def test_torn_payload(disks: list[Path]) -> None:
    write_guest(disks, 20)
    index = (20 - 1) % 8
    raw = bytearray(gv.block(20, 1, index, 8))
    old = gv.block(12, 1, index, 8)
    raw[2048:] = old[2048:]  # the second half of the write never arrived
    put_block(disks[1], index, bytes(raw))
    report = gv.verify_guest_disks(disks)
    assert not report.consistent
    assert report.disks[0].ok
    assert any("torn" in e for e in report.disks[1].errors), report.disks[1].errors


def test_torn_header(disks: list[Path]) -> None:
    write_guest(disks, 5)
    put_block(disks[0], 4, b"\xff" * 100)
    report = gv.verify_guest_disks(disks)
    assert not report.consistent
    assert report.disks[0].errors[0].startswith("block 4: ")


def test_garbage_in_unwritten_block(disks: list[Path]) -> None:
    write_guest(disks, 3)
    put_block(disks[1], 6, b"hello")
    assert not gv.verify_guest_disks(disks).consistent


def test_payload_of_other_generation(disks: list[Path]) -> None:
    """A well-formed header whose checksum matches but whose payload is someone else's."""
    write_guest(disks, 3)
    body = gv.payload(99, 0, 2)
    put_block(disks[0], 2, gv.header(3, 0, 2, 8, body) + body)
    errors_ = gv.verify_guest_disks(disks).disks[0].errors
    assert errors_ == ["block 2: payload does not match its generation"]


def test_stale_block(disks: list[Path]) -> None:
    """A write lost within one disk: block 2 still has generation 3 where 11 belongs."""
    write_guest(disks, 12)
    put_block(disks[0], 2, gv.block(3, 0, 2, 8))
    report = gv.verify_guest_disks(disks)
    assert not report.consistent
    assert any("lost or stale" in e for e in report.disks[0].errors)


@pytest.mark.parametrize("second", [14, 13, 10])
def test_not_one_point_in_time(disks: list[Path], second: int) -> None:
    """Disk 1 ahead of disk 0, or more than one generation behind."""
    write_guest(disks[:1], 12)
    write_guest([disks[0].parent / "scratch", disks[1]], second)
    report = gv.verify_guest_disks(disks)
    assert all(d.ok for d in report.disks)
    assert not report.consistent
    assert "not one point in time" in report.errors[0]


def test_three_disks_split_in_the_middle(tmp_path: Path) -> None:
    paths = [tmp_path / f"d{i}" for i in range(3)]
    write_guest(paths, 30, split=2)
    report = gv.verify_guest_disks(paths)
    assert report.consistent and report.disks_at_generation == 2
    # disk 2 at 30 while disk 1 is at 29: disk 2 cannot be ahead of disk 1
    write_guest(paths, 30, split=1)
    write_guest([tmp_path / "x", tmp_path / "y", paths[2]], 30)
    assert not gv.verify_guest_disks(paths).consistent


def test_disks_swapped(disks: list[Path]) -> None:
    write_guest(disks, 4)
    report = gv.verify_guest_disks(list(reversed(disks)))
    assert not report.consistent
    assert "written for disk 1, found on disk 0" in report.disks[0].errors[0]


def test_missing_disk_and_short_disk(tmp_path: Path, disks: list[Path]) -> None:
    write_guest(disks, 4, size_blocks=8)
    disks[1].write_bytes(disks[1].read_bytes()[:4 * BS])
    report = gv.verify_guest_disks([*disks, tmp_path / "nope"])
    assert "disk ends at block 4 of 8" in report.disks[1].errors
    assert report.disks[2].errors[0].startswith("cannot open")
    assert not gv.verify_guest_disks([]).consistent


def test_cli(disks: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    write_guest(disks, 7)
    assert gv.main([str(d) for d in disks]) == 0
    assert json.loads(capsys.readouterr().out)["consistent"] is True
    put_block(disks[1], 0, b"x" * 10)
    assert gv.main([str(d) for d in disks]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["consistent"] is False and out["disks"][1]["ok"] is False


# --- the init script ----------------------------------------------------------------

def test_init_rendered() -> None:
    text = gi.render_init(["virtio", "virtio_blk"])
    assert not re.findall(r"@[A-Z_]+@", text)
    assert "for m in virtio virtio_blk; do" in text
    assert "oflag=direct" in text  # completion of each block write means on the disk
    assert f"bs={BS} " in text
    assert gi.READY_LINE in text and gi.VERIFY_OK in text and gi.VERIFY_FAILED in text


def _function(text: str, name: str) -> str:
    match = re.search(rf"^{name}\(\) {{.*?^}}$", text, re.S | re.M)
    assert match, name
    return match.group(0)


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_init_writes_the_verifier_format(tmp_path: Path) -> None:
    """The shell code the guest runs produces exactly the blocks the verifier expects."""
    text = gi.render_init([])
    loop = re.search(r"^        make_payload \"\$g\" \"\$pos\" \"\$i\" > /tmp/p\n.*?; } > /tmp/b",
                     text, re.S | re.M)
    assert loop
    script = (_function(text, "make_payload").replace("/tmp/", f"{tmp_path}/") + "\n"
              + "g=13; pos=1; i=4; N=9\n"
              + loop.group(0).replace("/tmp/", f"{tmp_path}/") + "\n")
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    assert (tmp_path / "b").read_bytes() == gv.block(13, 1, 4, 9)


def run_boot_check(tmp_path: Path, disks: list[Path], blocks: int = 8) -> tuple[int, str]:
    """The guest's boot check, run by the host's sh on disk files instead of /dev/vdX."""
    text = gi.render_init([])
    snippet = text[text.index("make_payload() {"):text.index(f'echo "{gi.VERIFY_OK}')]
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    snippet = (snippet.replace('"/dev/$d"', '"$DIR/$d"').replace("/tmp/", f"{work}/")
               .replace("    idle\n", "    exit 1\n"))
    script = (f"N={blocks}\nDIR={disks[0].parent}\nDISKS='{' '.join(d.name for d in disks)}'\n"
              + snippet + 'echo "OK gen=$top"\n')
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sh", "dd", "tr", "grep", "cmp",
                                                          "sha256sum", "sed")),
                    reason="needs sh, dd, tr, grep, cmp, sha256sum and sed")
def test_boot_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the guest prints at boot agrees with the verifier (good, split, torn, swapped)."""
    # iflag=direct: the test's disk files may be on tmpfs
    monkeypatch.setattr(gi, "INIT_TEMPLATE", gi.INIT_TEMPLATE.replace(" iflag=direct", ""))
    paths = [tmp_path / "vda", tmp_path / "vdb"]
    write_guest(paths, 0)
    assert run_boot_check(tmp_path, paths) == (0, "OK gen=0\n")
    write_guest(paths, 21)
    assert run_boot_check(tmp_path, paths) == (0, "OK gen=21\n")
    write_guest(paths, 21, split=1)
    assert run_boot_check(tmp_path, paths) == (0, "OK gen=21\n")
    code, out = run_boot_check(tmp_path, list(reversed(paths)))
    assert code == 1 and "damaged" in out, out
    raw = bytearray(gv.block(21, 1, 4, 8))
    raw[3000:3002] = b"xx"
    put_block(paths[1], 4, bytes(raw))
    code, out = run_boot_check(tmp_path, paths)
    assert code == 1 and f"{gi.VERIFY_FAILED} gen=21: vdb:4:damaged" in out, out
    write_guest(paths, 30)
    put_block(paths[0], 2, gv.block(3, 0, 2, 8))  # a stale block
    code, out = run_boot_check(tmp_path, paths)
    assert code == 1 and "vda:2:damaged" in out, out


def test_kernel_args_have_no_commas() -> None:
    args = gi.kernel_args(32, 5)
    assert "," not in args  # -H kvm:kernel_args=... splits on commas
    assert "console=ttyS0" in args and "gntguest.blocks=32" in args


# --- cpio and modules ---------------------------------------------------------------

def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(pos + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-(pos + size) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, rdev)


def fake_module(depends: str) -> bytes:
    """A minimal 64-bit ELF file with a .modinfo section."""
    modinfo = b"license=GPL\0depends=" + depends.encode() + b"\0"
    shstr = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    str_off = data_off + len(modinfo)
    sh_off = (str_off + len(shstr) + 7) // 8 * 8
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 0x28, sh_off)
    struct.pack_into("<HHH", head, 0x3A, 64, 3, 2)

    def sh(name: int, offset: int, size: int) -> bytes:
        entry = bytearray(64)
        struct.pack_into("<I", entry, 0, name)
        struct.pack_into("<QQ", entry, 0x18, offset, size)
        return bytes(entry)

    body = bytes(head) + modinfo + shstr
    body += b"\0" * (sh_off - len(body))
    return body + sh(0, 0, 0) + sh(1, data_off, len(modinfo)) + sh(10, str_off, len(shstr))


def test_modinfo_depends() -> None:
    assert gi.modinfo_depends(fake_module("virtio,virtio_ring")) == ["virtio", "virtio_ring"]
    assert gi.modinfo_depends(fake_module("")) == []
    with pytest.raises(errors.HypervisorError):
        gi.modinfo_depends(b"not an elf file at all" * 4)


def make_moddir(root: Path) -> Path:
    moddir = root / "lib" / "modules" / "6.1.0-test"
    (moddir / "kernel" / "drivers").mkdir(parents=True)
    mods = {"virtio_pci": "virtio,virtio_ring,virtio_pci_modern_dev", "virtio_blk":
            "virtio,virtio_ring", "virtio_console": "virtio,virtio_ring", "virtio_ring": "",
            "virtio": "", "virtio_pci_modern_dev": "", "button": "", "evdev": ""}
    for name, deps in mods.items():
        (moddir / "kernel" / "drivers" / f"{name}.ko").write_bytes(fake_module(deps))
    (moddir / "modules.builtin").write_text("kernel/drivers/input/evdev.ko\n")
    return moddir


def test_resolve_modules_orders_dependencies_first(tmp_path: Path) -> None:
    names = [n for n, _ in gi.resolve_modules(make_moddir(tmp_path), gi.MODULES)]
    assert "evdev" not in names  # built in
    assert sorted(names) == sorted(set(names))
    for module, dep in [("virtio_pci", "virtio"), ("virtio_pci", "virtio_pci_modern_dev"),
                        ("virtio_blk", "virtio_ring")]:
        assert names.index(dep) < names.index(module)
    with pytest.raises(errors.HypervisorError, match="kernel module nosuch not found"):
        gi.resolve_modules(make_moddir(tmp_path / "x"), ["nosuch"])


def test_initramfs_contents() -> None:
    data = gzip.decompress(gi.build_initramfs(b"BUSYBOX", [("virtio", b"KO")]))
    entries = read_newc(data)
    assert entries["bin/busybox"][1] == b"BUSYBOX"
    assert entries["bin/busybox"][0] & 0o777 == 0o755
    assert entries["bin/sh"][1] == b"busybox"
    assert entries["dev/console"][2] == (5, 1)
    assert entries["lib/modules/virtio.ko"][1] == b"KO"
    assert entries["init"][1].decode() == gi.render_init(["virtio"])
    assert gi.build_initramfs(b"B", []) == gi.build_initramfs(b"B", [])  # reproducible


# --- the builder with local fake packages -------------------------------------------

def make_deb(root: Path, name: str, files: dict[str, bytes]) -> Path:
    tree = root / f"{name}-tree"
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        f"Description: test\n")
    deb = root / f"{name}_1.0_amd64.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_ensure_guest_builds_once_and_reuses(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    mods = make_moddir(tmp_path / "mods")
    kernel_files = {"boot/vmlinuz-6.1.0-test": b"KERNEL"}
    for path in mods.rglob("*"):
        if path.is_file():
            kernel_files[str(path.relative_to(tmp_path / "mods"))] = path.read_bytes()
    debs = {"linux-image-6.1.0-test": make_deb(tmp_path, "linux-image-6.1.0-test", kernel_files),
            gi.BUSYBOX_PACKAGE: make_deb(tmp_path, gi.BUSYBOX_PACKAGE,
                                         {"bin/busybox": b"BB"})}
    downloads: list[str] = []

    def download(package: str, version: str, target: Path) -> Path:
        downloads.append(package)
        return debs[package]

    monkeypatch.setattr(gi, "kernel_package", lambda: "linux-image-6.1.0-test")
    monkeypatch.setattr(gi, "candidate_version", lambda package: "1.0")
    monkeypatch.setattr(gi, "_download", download)
    cache = tmp_path / "cache"
    monkeypatch.setenv(gi.CACHE_ENV, str(cache))

    (cache / "build-killed" / "tree").mkdir(parents=True)  # a builder killed by SIGKILL
    results: list[gi.GuestImage] = []
    threads = [threading.Thread(target=lambda: results.append(gi.ensure_guest()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.key for r in results}) == 1
    assert sorted(downloads) == sorted(debs)  # built once despite three builders
    image = results[0]
    assert image.kernel.read_bytes() == b"KERNEL"
    assert image.kernel.parent.parent == cache
    entries = read_newc(gzip.decompress(image.initrd.read_bytes()))
    assert entries["bin/busybox"][1] == b"BB"
    assert "lib/modules/virtio_blk.ko" in entries and "lib/modules/evdev.ko" not in entries
    assert image.hvparams() == {"kernel_path": str(image.kernel),
                                "initrd_path": str(image.initrd),
                                "kernel_args": gi.kernel_args()}
    assert image.cli_hvparams().startswith("kvm:kernel_path=")
    assert not list(cache.glob("build-*"))  # scratch trees removed

    assert gi.ensure_guest(cache) == image
    assert len(downloads) == 2
    # another package version is another cache entry
    monkeypatch.setattr(gi, "candidate_version", lambda package: "2.0")
    assert gi.ensure_guest(cache).key != image.key


def test_ensure_guest_reports_missing_packages(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> str:
        raise errors.HypervisorError("linux-image-cloud-amd64 depends on no linux-image")

    monkeypatch.setattr(gi, "kernel_package", fail)
    assert gi.main(["--cache-dir", str(tmp_path)]) == 1


# --- the serial console -------------------------------------------------------------

def test_wait_for_line(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("noise\nGUEST-VERIFY ok gen=7\nGUEST-READY disks=vda,vdb blocks=64 gen=7"
                   " writing=yes\nGUEST-PROGRESS gen=5")  # the last line is not complete
    line, offset = gi.wait_for_line(log, [gi.VERIFY_OK, gi.VERIFY_FAILED], 1)
    assert line == "GUEST-VERIFY ok gen=7"
    ready, offset = gi.wait_for_line(log, [gi.READY_LINE], 1, offset)
    assert gi.console_fields(ready) == {"disks": "vda,vdb", "blocks": "64", "gen": "7",
                                        "writing": "yes"}
    with pytest.raises(errors.HypervisorError, match="GUEST-PROGRESS gen=5"):
        gi.wait_for_line(log, [gi.PROGRESS_LINE], 0.2, offset)
    with open(log, "a") as f:
        f.write("0\n")
    assert gi.wait_for_line(log, [gi.PROGRESS_LINE], 1, offset)[0] == "GUEST-PROGRESS gen=50"
    with pytest.raises(errors.HypervisorError, match="no line starting with GUEST-READY"):
        gi.wait_for_line(tmp_path / "missing.log", [gi.READY_LINE], 0.1)
