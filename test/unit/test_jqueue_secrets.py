"""Secret opcode fields live in memory only: never stored, never shown, never replayed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from support.jqueue_fakes import FakeExecutor, field, running_queue, wait_status

from ganeti import constants, opcodes
from ganeti.jqueue.queue import REDACTED

# long enough for the opcode (DOMAIN_SECRET_MIN_LENGTH)
SECRET = "s3cr3t-domain-secret-value-0123456789"


def _secret_op() -> opcodes.OpCode:
    return opcodes.OpClusterRenewCrypto.create(cluster_domain_secret=SECRET,
                                               comment="renew")


def test_secret_reaches_the_executor_but_not_the_store(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    seen: list[Any] = []
    executor = FakeExecutor()

    def script(op: Any, cbs: Any) -> Any:
        cbs.notify_start()
        seen.append(op.cluster_domain_secret)
        return True
    executor.scripts["renew"] = script
    with running_queue(db, executor) as queue:
        job_id = queue.submit_job([_secret_op()])
        assert wait_status(queue, job_id) == constants.OP_STATUS_SUCCESS
        assert field(queue, job_id, "ops")[0]["cluster_domain_secret"] == REDACTED
    assert seen == [SECRET]
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


def test_a_secret_opcode_restored_from_disk_fails_instead_of_running(tmp_path: Path) -> None:
    db, crashed = tmp_path / "jobs.sqlite", tmp_path / "crashed.sqlite"
    executor = FakeExecutor()
    gate = executor.hold_running("block")
    with running_queue(db, executor, workers=1) as queue:
        queue.submit_job([opcodes.OpTestDelay.create(duration=0, comment="block")])
        gate.wait_entered()
        job_id = queue.submit_job([_secret_op()])   # queued behind the blocker
        # the on-disk state at this moment is what a master killed now leaves behind
        with sqlite3.connect(db) as src, sqlite3.connect(crashed) as dst:
            src.backup(dst)
        gate.release.set()
    with sqlite3.connect(crashed) as conn:
        stored = [row[0] for row in conn.execute("SELECT input FROM opcodes")]
    assert stored and all(SECRET not in text for text in stored)
    restarted = FakeExecutor()
    with running_queue(crashed, restarted) as queue:
        assert wait_status(queue, job_id) == constants.OP_STATUS_ERROR
        assert "never stored" in str(field(queue, job_id, "opresult"))
    assert "renew" not in restarted.calls
