"""tools/demo says which storage it took and leaves nothing behind, even on Ctrl-C.

The real demo runs (its own 3-node cluster on a random loopback subnet) and
gets a SIGINT, as from Ctrl-C, to its whole process group once its instance
exists; afterwards its /tmp/ganeti-demo.* root, loop device, mount and daemons
must all be gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support.fsfixture import unavailable_reason

from ganeti.tools.local_cluster import random_subnet

TOP = Path(__file__).resolve().parents[2]


def _mounted(path: str) -> bool:
    return any(line.split()[1] == path for line in Path("/proc/mounts").read_text().splitlines())


def test_ctrl_c_stops_the_cluster_and_removes_root_mount_and_loop_device() -> None:
    env = {**os.environ, "GANETI_DEMO_SUBNET": random_subnet()}
    env.pop("GANETI_DEMO_KEEP", None)
    proc = subprocess.Popen([str(TOP / "tools" / "demo")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("### Export demo1 to node3") or time.monotonic() > deadline:
                break
        # Ctrl-C: the terminal signals the foreground process group
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "\n".join(lines) + "\n" + rest
    storage = next(line for line in lines if line.startswith("Storage: "))
    root = re.search(r"under (/tmp/ganeti-demo\.\w+)\S*\n", output)
    assert root, output
    own_root = root.group(1)
    assert proc.returncode == 130, output
    assert "### Stopping the cluster" in rest and f"Removed {own_root}" in rest, rest
    assert not Path(own_root).exists()
    assert "ganeti-masterd stopped" in rest
    assert not subprocess.run(["pgrep", "-f", own_root], capture_output=True).stdout
    if unavailable_reason() is None and shutil.which("mkfs.btrfs"):
        assert "loop-mounted btrfs" in storage, storage   # it can, so it must
    if "loop-mounted btrfs" in storage:
        dev = re.search(r"\((/dev/loop\d+) on (\S+),", storage)
        assert dev, storage
        assert not _mounted(dev.group(2))
        attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        assert own_root not in attached, attached
    else:
        # the fallback names why there is no btrfs and what the export will do
        assert "no loop-mounted btrfs (" in storage and "--long-sleep" in storage
