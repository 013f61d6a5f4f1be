"""A scratch LVM volume group on a loop device, for the tests of the LVM driver."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PV_SIZE = 256 * 1024 * 1024


def lvm_unavailable() -> str | None:
    """Why no volume group can be made here (None: one can)."""
    if not os.path.exists("/dev/mapper/control"):
        return "no device-mapper on this host (/dev/mapper/control missing)"
    if shutil.which("vgs") is None or shutil.which("vgcreate") is None:
        return "lvm2 tools are not installed"
    if os.geteuid() != 0:
        return "needs root"
    if subprocess.run(["vgs"], capture_output=True, check=False).returncode != 0:
        return "vgs does not work here"
    return None


@contextmanager
def scratch_volume_group(tmp_path: Path, prefix: str) -> Iterator[str]:
    """A volume group named ``<prefix><pid>`` on a sparse loop device, removed afterwards."""
    image = tmp_path / "pv.img"
    with open(image, "wb") as fh:
        fh.truncate(PV_SIZE)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                         text=True, check=True).stdout.strip()
    vg = f"{prefix}{os.getpid()}"
    try:
        subprocess.run(["vgcreate", vg, dev], capture_output=True, check=True)
        yield vg
    finally:
        subprocess.run(["vgremove", "-f", vg], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
