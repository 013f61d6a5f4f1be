"""LVM (plain) driver: command construction and output parsing with a fake lvm2,
plus a real-volume round trip where device-mapper and lvm2 are available."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support.lvm import lvm_unavailable, scratch_volume_group

from ganeti import errors, pathutils
from ganeti.objects import Disk
from ganeti.storage import LvmDiskDriver, get_driver
from ganeti.storage.lvm import (
    CommandResult,
    parse_lvs,
    parse_size_mib,
    snapshot_size_mib,
    thin_delta_ranges,
)


class FakeLvm:
    """Just enough lvm2 to answer the driver, with output in the real tools' format."""

    def __init__(self, vgs: dict[str, float]) -> None:
        self.free = dict(vgs)
        self.lvs: dict[tuple[str, str], tuple[float, str]] = {}  # (vg, lv) -> (size, origin)
        self.calls: list[list[str]] = []
        self.fail: dict[str, str] = {}  # tool -> stderr to fail with

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        tool = argv[0]
        if tool in self.fail:
            return CommandResult(5, "", self.fail[tool])
        handler = getattr(self, "_" + tool)
        result: CommandResult = handler(argv[1:])
        return result

    def _lvs(self, args: list[str]) -> CommandResult:
        vg = args[-1]
        if vg not in self.free:
            return CommandResult(5, "", f'  Volume group "{vg}" not found\n'
                                        "  Cannot process volume group " + vg + "\n")
        lines = [f"  {lv}|{v}|{size:.2f}|{origin}|{'swi-a-s---' if origin else '-wi-a-----'}"
                 for (v, lv), (size, origin) in sorted(self.lvs.items()) if v == vg]
        return CommandResult(0, "\n".join(lines) + "\n", "")

    def _vgs(self, args: list[str]) -> CommandResult:
        return CommandResult(0, f"  {self.free[args[-1]]:.2f}\n", "")

    def _lvcreate(self, args: list[str]) -> CommandResult:
        size = parse_size_mib(args[args.index("-L") + 1])
        name = args[args.index("-n") + 1]
        target = args[-1]
        vg, _, origin = target.partition("/")
        if (vg, name) in self.lvs:
            return CommandResult(5, "", f'  Logical Volume "{name}" already exists in volume'
                                        f' group "{vg}"\n')
        if size > self.free[vg]:
            return CommandResult(5, "", f'  Volume group "{vg}" has insufficient free space\n')
        self.free[vg] -= size
        self.lvs[(vg, name)] = (size, origin if "-s" in args else "")
        return CommandResult(0, f'  Logical volume "{name}" created.\n', "")

    def _lvremove(self, args: list[str]) -> CommandResult:
        vg, lv = args[-1].split("/")
        size, _ = self.lvs.pop((vg, lv))
        self.free[vg] += size
        return CommandResult(0, "", "")

    def _lvextend(self, args: list[str]) -> CommandResult:
        vg, lv = args[-1].split("/")
        new = parse_size_mib(args[args.index("-L") + 1])
        size, origin = self.lvs[(vg, lv)]
        self.free[vg] -= new - size
        self.lvs[(vg, lv)] = (new, origin)
        return CommandResult(0, "", "")


@pytest.fixture
def lvm() -> FakeLvm:
    return FakeLvm({"xenvg": 10240.0, "fastvg": 2048.0})


@pytest.fixture
def driver(lvm: FakeLvm) -> LvmDiskDriver:
    drv = get_driver("plain", pathutils.Paths.for_root(None), runner=lvm)
    assert isinstance(drv, LvmDiskDriver)
    return drv


def _disk(size: int = 1024, **kw: object) -> Disk:
    return Disk(size=size, dev_type="plain", iv_name="disk/0", **kw)  # type: ignore[arg-type]


def test_parse_lvs_output() -> None:
    out = ("  abc.disk0|xenvg|1024.00|                |-wi-ao----\n"
           "  abc.disk0.snap-e1|xenvg|256.00|abc.disk0|swi-a-s---\n\n")
    infos = parse_lvs(out)
    assert [(i.name, i.vg, i.size_mib, i.origin) for i in infos] == [
        ("abc.disk0", "xenvg", 1024.0, ""), ("abc.disk0.snap-e1", "xenvg", 256.0, "abc.disk0")]
    with pytest.raises(errors.StorageError, match="Cannot parse lvs"):
        parse_lvs("  just|three|fields\n")
    assert parse_size_mib("1024.00m") == 1024.0
    assert parse_size_mib(" 12,50m ") == 12.5
    with pytest.raises(errors.StorageError):
        parse_size_mib("lots")


@pytest.mark.parametrize(("origin", "expected"), [
    (100 * 1024, 15360),  # 15% of 100 GiB
    (1024, 256),          # the floor
    (100, 100),           # never more than the origin
    (10240.5, 1537),
])
def test_snapshot_size(origin: float, expected: int) -> None:
    assert snapshot_size_mib(origin) == expected


def test_create_remove_commands(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    disk = _disk()
    lid = driver.create("inst1", disk)
    assert lid == ["xenvg", f"{disk.uuid}.disk0"]
    assert lvm.calls[-1] == ["lvcreate", "--yes", "-L", "1024m", "-n", lid[1], "xenvg"]
    assert driver.exists(lid)
    assert driver.size_mib(lid) == 1024
    assert driver.device_path(lid) == Path("/dev/xenvg") / lid[1]
    lvm.calls.clear()
    driver.remove(lid)
    assert lvm.calls[-1] == ["lvremove", "-f", f"xenvg/{lid[1]}"]
    assert not driver.exists(lid)
    lvm.calls.clear()
    driver.remove(lid)  # idempotent: only a lookup, no lvremove
    assert [c[0] for c in lvm.calls] == ["lvs"]
    assert lvm.free["xenvg"] == 10240.0


def test_create_honours_vg_param_and_given_id(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    disk = _disk(size=512, params={"vg_name": "fastvg"})
    assert driver.create("inst1", disk)[0] == "fastvg"
    assert driver.create("inst1", _disk(logical_id=["xenvg", "mine"])) == ["xenvg", "mine"]


def test_lvs_queries_use_the_parseable_format(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    driver.exists(["xenvg", "x"])
    assert lvm.calls[-1] == ["lvs", "--noheadings", "--units", "m", "--nosuffix",
                             "--separator", "|", "-o",
                             "lv_name,vg_name,lv_size,origin,lv_attr", "xenvg"]


def test_tool_failure_carries_stderr(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    with pytest.raises(errors.StorageError, match="insufficient free space"):
        driver.create("inst1", _disk(size=20000))
    lvm.fail["lvs"] = "  /dev/mapper/control: open failed: No such device\n"
    with pytest.raises(errors.StorageError, match="/dev/mapper/control: open failed"):
        driver.exists(["xenvg", "x"])


def test_missing_vg_means_missing_lv(driver: LvmDiskDriver) -> None:
    assert not driver.exists(["novg", "x"])
    driver.remove(["novg", "x"])
    with pytest.raises(errors.StorageError, match="does not exist"):
        driver.size_mib(["novg", "x"])


def test_grow(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    lid = driver.create("inst1", _disk())
    driver.grow(lid, 2048)
    assert lvm.calls[-1] == ["lvextend", "-L", "2048m", f"xenvg/{lid[1]}"]
    assert driver.size_mib(lid) == 2048
    lvm.calls.clear()
    driver.grow(lid, 2048)
    assert "lvextend" not in [c[0] for c in lvm.calls]
    with pytest.raises(errors.StorageError, match="Cannot shrink"):
        driver.grow(lid, 1000)


def test_snapshot_lifecycle(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    lid = driver.create("inst1", _disk(size=4096))
    assert driver.can_snapshot_live(lid)
    snap = driver.snapshot(lid, "exp1")
    assert snap == ["xenvg", f"{lid[1]}.snap-exp1"]
    assert lvm.calls[-1] == ["lvcreate", "--yes", "-s", "-L", "615m", "-n", snap[1],
                             f"xenvg/{lid[1]}"]
    snap2 = driver.snapshot(lid, "exp2")
    other = driver.create("inst1", Disk(size=64, dev_type="plain", iv_name="disk/1"))
    driver.snapshot(other, "exp1")
    assert driver.list_snapshots(lid) == [snap, snap2]
    driver.remove_snapshot(snap)
    driver.remove_snapshot(snap)
    assert driver.list_snapshots(lid) == [snap2]
    with pytest.raises(errors.StorageError, match="not a snapshot"):
        driver.remove_snapshot(lid)
    assert driver.exists(lid)


def test_no_live_snapshot_without_free_space(driver: LvmDiskDriver, lvm: FakeLvm) -> None:
    lid = driver.create("inst1", _disk(size=10000))
    assert lvm.free["xenvg"] == 240.0
    assert not driver.can_snapshot_live(lid)
    assert not driver.can_snapshot_live(["xenvg", "missing"])


@pytest.mark.parametrize("lid", [["xenvg", "../etc"], ["xen vg", "a"], ["xenvg"], ["", "a"],
                                 ["xenvg", "-rf"]])
def test_invalid_names_never_reach_the_tools(driver: LvmDiskDriver, lvm: FakeLvm,
                                             lid: list[str]) -> None:
    with pytest.raises(errors.StorageError):
        driver.remove(lid)
    assert lvm.calls == []


# -- real volumes ----------------------------------------------------------------

@pytest.fixture
def real_vg(tmp_path: Path) -> Iterator[str]:
    """A scratch volume group on a loop device, removed afterwards."""
    reason = lvm_unavailable()
    if reason:
        pytest.skip(reason)
    with scratch_volume_group(tmp_path, "gnttest") as vg:
        yield vg


def test_real_lvm_round_trip(real_vg: str) -> None:
    driver = LvmDiskDriver(pathutils.Paths.for_root(None), vg_name=real_vg,
                           snapshot_floor_mib=8)
    lid = driver.create("inst1", _disk(size=32))
    assert driver.size_mib(lid) == 32
    driver.grow(lid, 64)
    assert driver.size_mib(lid) == 64
    with open(driver.device_path(lid), "r+b") as fh:
        fh.write(b"origin")
    snap = driver.snapshot(lid, "t")
    with open(driver.device_path(lid), "r+b") as fh:
        fh.write(b"change")
    with driver.open_reader(snap) as reader:
        assert reader.read(0, 6) == b"origin"
        assert list(reader.extents()) == [(0, 64 * 1024 * 1024)]
    assert driver.list_snapshots(lid) == [snap]
    driver.remove_snapshot(snap)
    driver.remove(lid)
    driver.remove(lid)
    assert not driver.exists(lid)


# -- thin_delta output (the LVM thin export base design) ------------------------

# thin_delta's format (thin-provisioning-tools): data_block_size in sectors,
# begin/length in data blocks; 128 sectors = 64 KiB blocks
THIN_DELTA = """<superblock uuid="" time="3" transaction="5" version="2"
    data_block_size="128" nr_data_blocks="16384">
  <diff left="1" right="4">
    <same begin="0" length="10"/>
    <different begin="10" length="2"/>
    <right_only begin="12" length="1"/>
    <same begin="13" length="100"/>
    <left_only begin="200" length="3"/>
    <right_only begin="1000" length="24"/>
  </diff>
</superblock>
"""
KIB64 = 64 * 1024


def test_thin_delta_runs_become_merged_byte_ranges() -> None:
    size = 1024 * KIB64
    assert thin_delta_ranges(THIN_DELTA, size, 1, 4) == [
        (10 * KIB64, 3 * KIB64), (200 * KIB64, 3 * KIB64), (1000 * KIB64, 24 * KIB64)]
    # a device size inside the last block clips it
    clipped = thin_delta_ranges(THIN_DELTA, 1010 * KIB64 + 5, 1, 4)
    assert clipped is not None and clipped[-1] == (1000 * KIB64, 10 * KIB64 + 5)


def test_thin_delta_without_differences() -> None:
    xml = ('<superblock data_block_size="256"><diff left="1" right="2">'
           '<same begin="0" length="50"/></diff></superblock>')
    assert thin_delta_ranges(xml, 50 * 128 * 1024, 1, 2) == []


@pytest.mark.parametrize("xml, left, right", [
    (THIN_DELTA, 1, 5),                                        # not the devices asked for
    ("<superblock", 1, 4),                                     # truncated output
    (THIN_DELTA.replace('data_block_size="128"', ""), 1, 4),   # no block size
    (THIN_DELTA.replace("<different", "<moved"), 1, 4),                 # unknown run kind
    (THIN_DELTA.replace('begin="200"', 'begin="5"'), 1, 4),    # runs out of order
    (THIN_DELTA.replace('length="3"', 'length="x"'), 1, 4),
    (THIN_DELTA.replace('begin="1000"', 'begin="5000"'), 1, 4),  # beyond the device
])
def test_unexpected_thin_delta_output_means_cannot_tell(xml: str, left: int,
                                                        right: int) -> None:
    assert thin_delta_ranges(xml, 1024 * KIB64, left, right) is None
