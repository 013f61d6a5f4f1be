"""The coordinators' streams in flight (coordinator.in_flight, Query("transfer"))."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ganeti import query
from ganeti.query_resources import transfer
from ganeti.transfer.master import coordinator
from ganeti.transfer.master.oneside import OneSide


class CleanupRpc:
    def call_transfer_cleanup(self, nodes: list[str], ids: list[str]) -> dict[str, Any]:
        return {node: SimpleNamespace(failed=False, fail_msg=None) for node in nodes}


def test_one_side_streams_are_listed_until_cleanup() -> None:
    side = OneSide(CleanupRpc(), lambda _msg: None, {}, "sent")  # type: ignore[arg-type]
    send = side._new_end("disk/0", "node2", "s")
    recv = side._new_end("disk/1", "node3", "r")
    send.status = {"bytes": 100, "data_total": 400, "rate": 50.0}
    rows = {row["label"]: row for row in coordinator.in_flight()
            if row["id"].startswith(side.run_id)}
    assert rows["disk/0"]["kind"] == "remote-send" and rows["disk/0"]["source_node"] == "node2"
    assert rows["disk/0"]["dest_node"] is None
    assert (rows["disk/0"]["bytes"], rows["disk/0"]["total"]) == (100, 400)
    assert rows["disk/1"]["kind"] == "remote-receive" and rows["disk/1"]["dest_node"] == "node3"
    # through the query resource: the other cluster's end is unavailable
    transfer.register()
    answer = query.query(query.RESOURCE_TRANSFER, ["label", "source_node", "dest_node"],
                         ["=~", "id", f"^{side.run_id}"])
    assert answer["data"] == [
        [[query.RS_NORMAL, "disk/0"], [query.RS_NORMAL, "node2"], [query.RS_UNAVAIL, None]],
        [[query.RS_NORMAL, "disk/1"], [query.RS_UNAVAIL, None], [query.RS_NORMAL, "node3"]]]
    # a finished end is gone; cleanup forgets the rest
    recv.result = coordinator.TransferResult("disk/1", True)
    assert [r["label"] for r in coordinator.in_flight()
            if r["id"].startswith(side.run_id)] == ["disk/0"]
    side.cleanup()
    assert not [r for r in coordinator.in_flight() if r["id"].startswith(side.run_id)]
