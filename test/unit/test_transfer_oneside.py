"""One end of inter-cluster streams: results, failures and cleanup (scripted node answers)."""

from __future__ import annotations

from typing import Any

import pytest
from support.rpc import as_runner

from ganeti import errors
from ganeti.rpc.result import RpcResult
from ganeti.transfer.master.oneside import OneSide


class ScriptedRpc:
    """Answers transfer calls from a script of status payloads, one per poll."""

    def __init__(self, statuses: list[Any]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, Any]] = []
        self.fail_send = ""
        self.fail_receive = ""
        self.fail_cleanup = ""

    def call_transfer_receive_start(self, node: str, tid: str, *args: Any) -> RpcResult:
        self.calls.append(("receive", args[-1]))
        if self.fail_receive:
            return RpcResult(node, fail_msg=self.fail_receive)
        return RpcResult(node, {"host": args[-1]["bind"], "port": 4242})

    def call_transfer_send_start(self, node: str, tid: str, *args: Any) -> RpcResult:
        self.calls.append(("send", args[-1]))
        return RpcResult(node, fail_msg=self.fail_send) if self.fail_send \
            else RpcResult(node, True)

    def call_transfer_status(self, nodes: list[str], ids: list[str]) -> dict[str, RpcResult]:
        step = self.statuses.pop(0) if self.statuses else None
        if isinstance(step, str):
            return {n: RpcResult(n, fail_msg=step) for n in nodes}
        return {n: RpcResult(n, {tid: step for tid in ids} if step else {}) for n in nodes}

    def call_transfer_cleanup(self, nodes: list[str], ids: list[str]) -> dict[str, RpcResult]:
        self.calls.append(("cleanup", ids))
        return {n: RpcResult(n, fail_msg=self.fail_cleanup) if self.fail_cleanup
                else RpcResult(n, ids) for n in nodes}


def _status(done: bool, success: bool | None = None, error: str | None = None) -> dict[str, Any]:
    return {"done": done, "success": success, "error": error, "bytes": 5 << 20,
            "data_total": 10 << 20, "rate": 1048576.0, "elapsed": 5.0, "checksum": "c"}


def _side(rpc: ScriptedRpc, log: list[str]) -> OneSide:
    return OneSide(as_runner(rpc), log.append, {"x509_key_name": "k", "x509_peer_ca": "p"}, "sent")


def test_success_progress_and_cleanup() -> None:
    rpc = ScriptedRpc([_status(False), _status(True, True)])
    log: list[str] = []
    side = _side(rpc, log)
    side.start_send("disk/0", "n1", {"kind": "disk"}, "192.0.2.1", 4242, "m" * 16, "none")
    results = side.wait(poll_interval=0, report_interval=0, sleep_fn=lambda _s: None)
    side.cleanup()
    assert [r.success for r in results] == [True]
    assert results[0].bytes == 5 << 20 and results[0].checksum == "c"
    assert "disk/0 sent 5.0M, 1.0 MiB/s, 50%" in log
    assert any(line.startswith("disk/0 finished: 5.0M in 5.0s") for line in log)
    send_options = rpc.calls[0][1]
    assert send_options["x509_key_name"] == "k" and "listen_timeout" not in send_options
    assert rpc.calls[-1][0] == "cleanup"


@pytest.mark.parametrize("statuses, message", [
    ([_status(True, False, "Receiver failed: Wrong stream magic")], "Wrong stream magic"),
    ([None], "unknown to the node daemon on n1"),
    (["timeout", "timeout", "timeout"], "node n1 is unreachable: timeout"),
])
def test_failures_name_the_cause(statuses: list[Any], message: str) -> None:
    log: list[str] = []
    rpc = ScriptedRpc(statuses)
    side = _side(rpc, log)
    side.start_send("disk/0", "n1", {}, "192.0.2.1", 4242, "m" * 16, "none")
    done: list[int] = []
    results = side.wait(poll_interval=0, on_done=lambda idx, _r: done.append(idx),
                        sleep_fn=lambda _s: None)
    assert not results[0].success and message in str(results[0].error)
    assert done == [0] and any(message in line for line in log)


def test_start_failures() -> None:
    log: list[str] = []
    rpc = ScriptedRpc([])
    rpc.fail_send = "connection refused"
    side = _side(rpc, log)
    side.start_send("disk/0", "n1", {}, "192.0.2.1", 4242, "m" * 16, "none")
    results = side.wait(sleep_fn=lambda _s: None)
    assert "cannot start the sender on n1: connection refused" in str(results[0].error)
    rpc.fail_receive = "no space"
    receiver = OneSide(as_runner(rpc), log.append, {}, "received")
    with pytest.raises(errors.OpExecError, match="Cannot start the receiver of disk/0"):
        receiver.start_receive("disk/0", "n2", {}, "m" * 16, "none", bind="192.0.2.2")
    rpc.fail_receive = ""
    assert receiver.start_receive("disk/1", "n2", {}, "m" * 16, "none",
                                  bind="192.0.2.2") == ("192.0.2.2", 4242)
    rpc.fail_cleanup = "node down"
    receiver.cleanup()
    assert log[-1] == "warning: cleanup of transfers on n2 failed: node down"
