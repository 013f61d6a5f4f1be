"""The guest simulator's on-disk format and verify_disk, on images built by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganeti.hypervisor import guest_sim
from ganeti.hypervisor.guest_sim import BLOCK_SIZE


def build_image(path: Path, nblocks: int, generations: dict[int, int], clean: bool,
                clean_generation: int) -> None:
    """A disk with a superblock and data blocks {index: generation} (others zero)."""
    with open(path, "wb") as handle:
        handle.truncate((nblocks + 4) * BLOCK_SIZE)
        handle.write(guest_sim.encode_superblock(clean_generation, nblocks, clean))
        for index, generation in generations.items():
            handle.seek((index + 1) * BLOCK_SIZE)
            handle.write(guest_sim.encode_block(generation, index))


def test_block_round_trip() -> None:
    block = guest_sim.encode_block(7, 3)
    assert len(block) == BLOCK_SIZE
    assert block.startswith(guest_sim.DATA_MAGIC)
    assert guest_sim.classify_block(block, 3) == 7
    assert guest_sim.classify_block(block, 4) is None, "a block at the wrong place is bad"
    assert guest_sim.classify_block(bytes(BLOCK_SIZE), 3) == 0
    assert guest_sim.classify_block(block[:100], 3) is None
    assert guest_sim.payload(7, 3) != guest_sim.payload(8, 3)
    assert guest_sim.payload(7, 3) != guest_sim.payload(7, 4)


def test_superblock_round_trip() -> None:
    data = guest_sim.encode_superblock(42, 16, clean=True)
    assert len(data) == BLOCK_SIZE
    assert guest_sim.decode_superblock(data) == guest_sim.Superblock(42, 16, True)
    damaged = bytearray(data)
    damaged[20] ^= 1
    assert guest_sim.decode_superblock(bytes(damaged)) is None
    assert guest_sim.decode_superblock(bytes(BLOCK_SIZE)) is None


def test_verify_clean_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    build_image(image, 8, {0: 9, 1: 10, 2: 3, 3: 4}, clean=True, clean_generation=10)
    report = guest_sim.verify_disk(image)
    assert (report.formatted, report.clean, report.blocks) == (True, True, 8)
    assert (report.valid_blocks, report.invalid_blocks, report.empty_blocks) == (4, 0, 4)
    assert report.max_generation == 10 and report.clean_generation == 10
    assert report.consistent


@pytest.mark.parametrize("damage", ["flip_payload", "flip_header", "half_old", "garbage"])
def test_verify_detects_torn_or_corrupt_blocks(tmp_path: Path, damage: str) -> None:
    image = tmp_path / "disk.img"
    build_image(image, 4, {0: 5, 1: 6, 2: 3, 3: 4}, clean=False, clean_generation=2)
    offset = 2 * BLOCK_SIZE  # data block 1
    with open(image, "r+b") as handle:
        if damage == "flip_payload":
            handle.seek(offset + 3000)
            handle.write(b"\xff")
        elif damage == "flip_header":
            handle.seek(offset + 10)
            handle.write(b"\x01")
        elif damage == "half_old":  # the first half of a newer write landed, the rest did not
            handle.seek(offset)
            handle.write(guest_sim.encode_block(10, 1)[:BLOCK_SIZE // 2])
        else:
            handle.seek(offset)
            handle.write(os.urandom(BLOCK_SIZE))
    report = guest_sim.verify_disk(image)
    assert report.invalid_blocks == 1 and report.valid_blocks == 3
    assert not report.consistent


def test_writes_after_the_clean_marker_are_inconsistent(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    build_image(image, 4, {0: 5, 1: 6}, clean=True, clean_generation=5)
    report = guest_sim.verify_disk(image)
    assert report.invalid_blocks == 0 and not report.consistent


def test_unformatted_and_truncated_disks(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(3 * BLOCK_SIZE))
    report = guest_sim.verify_disk(blank)
    assert not report.formatted and report.blocks == 0
    truncated = tmp_path / "short.img"
    build_image(truncated, 8, {0: 1, 1: 2}, clean=False, clean_generation=0)
    with open(truncated, "r+b") as handle:
        handle.truncate(4 * BLOCK_SIZE)  # superblock + 3 data blocks left
    report = guest_sim.verify_disk(truncated)
    assert (report.valid_blocks, report.empty_blocks, report.invalid_blocks) == (2, 1, 5)


def test_status_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = guest_sim.GuestStatus(name="i", pid=1, state="running", generation=3, updated=0,
                                   memory=128, vcpus=1, disks=["/d"])
    guest_sim._write_status(path, status)
    assert guest_sim.read_status(path) == status
    path.write_text('{"unexpected": 1}')
    assert guest_sim.read_status(path) is None


def test_command_line_usage_errors(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ganeti.hypervisor.guest_sim"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--name" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "ganeti.hypervisor.guest_sim", "--name", "x", "--run-dir",
         str(tmp_path), "--disk", str(tmp_path / "missing.img")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "cannot open disk" in result.stderr


def test_verify_command(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.img", tmp_path / "bad.img"
    build_image(good, 4, {0: 1, 1: 2}, clean=True, clean_generation=2)
    build_image(bad, 4, {0: 1, 1: 2}, clean=True, clean_generation=1)
    command = [sys.executable, "-m", "ganeti.hypervisor.guest_sim", "verify"]
    result = subprocess.run([*command, str(good)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["consistent"] and report["valid_blocks"] == 2 and report["clean"]
    result = subprocess.run([*command, str(good), str(bad), str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60, check=False)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1
    assert [line.get("consistent") for line in lines] == [True, False, None]
    assert "error" in lines[2]
