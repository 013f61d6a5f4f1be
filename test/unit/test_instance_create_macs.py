"""MAC uniqueness of instance creation: early against the index, again at the commit.

Run by the real processor over the loopback RPC (test/support/loopback.py).
No lock covers MAC addresses, so a create that passed its checks can meet a
MAC another job committed meanwhile: it is checked again just before its own
commit, and the failed create leaves nothing behind.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env

from ganeti import constants, errors, locking
from ganeti.cmdlib import instance as cmdinstance
from ganeti.objects import NIC, Instance

MAC = "aa:bb:cc:00:00:01"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_mac_taken_after_the_checks_is_refused_at_the_commit(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another job commits the same MAC while this create fills its disks."""
    node = env.cfg.get_node_info_by_name("node1")
    assert node is not None

    def racing_job(lu: Any, _feedback: Any) -> None:
        env.cfg.add_instance(Instance(name="other", primary_node=node.uuid,
                                      nics=[NIC(mac=MAC)]))
    monkeypatch.setattr(cmdinstance.LUInstanceCreate, "fill_disks", racing_job)
    with pytest.raises(errors.OpPrereqError, match=f"MAC address {MAC} is already in use"):
        env.create("inst1", nics=[{"mac": MAC}])
    assert env.cfg.get_instance_info_by_name("inst1") is None
    assert env.disk_files() == [], "the disks it created are removed"
    assert "inst1" not in env.ctx.glm.names(locking.LEVEL_INSTANCE)


def test_mac_in_use_is_refused_before_waiting_for_any_lock(env: Env) -> None:
    env.create("inst1", nics=[{"mac": MAC}])
    outcome: list[BaseException] = []

    def create() -> None:
        try:
            env.create("inst2", nics=[{"mac": MAC}])
        except BaseException as err:  # the outcome is checked by the test
            outcome.append(err)
    # the primary's lock is held here: a create that got that far would wait
    glm = env.ctx.glm
    glm.acquire(locking.LEVEL_CLUSTER, [locking.BGL], shared=True)
    glm.acquire(locking.LEVEL_NODE, ["node2"])
    worker = threading.Thread(target=create)
    try:
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "the create waited for the node lock"
    finally:
        glm.release(locking.LEVEL_NODE)
        glm.release(locking.LEVEL_CLUSTER)
        worker.join(30)
    (err,) = outcome
    assert isinstance(err, errors.OpPrereqError) and "already in use" in str(err)
    assert err.args[1] == errors.ECODE_NOTUNIQUE
    assert env.cfg.get_instance_info_by_name("inst2") is None
    assert [i.name for i in env.cfg.snapshot().get_all_instances_info().values()] == ["inst1"]
    assert env.inst("inst1").admin_state == constants.ADMINST_UP
