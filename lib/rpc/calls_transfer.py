"""RPC calls of the disk transfer engine (node side: ganeti.backend.transfer)."""

from __future__ import annotations

from ganeti.rpc.calltypes import Arg, RpcCall

CALLS: tuple[RpcCall, ...] = (
    RpcCall("transfer_receive_start", "transfer_receive_start", "fast",
            (Arg("transfer_id"), Arg("dest", dict), Arg("size"), Arg("magic"),
             Arg("compress"), Arg("options", dict)),
            single_node=True,
            doc="Listen for one disk stream; payload {host, port}"),
    RpcCall("transfer_send_start", "transfer_send_start", "fast",
            (Arg("transfer_id"), Arg("source", dict), Arg("host"), Arg("port", int),
             Arg("magic"), Arg("compress"), Arg("options", dict)),
            single_node=True,
            doc="Connect to a receiver and stream one disk"),
    RpcCall("transfer_status", "transfer_status", "fast", (Arg("transfer_ids", list),),
            doc="Progress of transfers; payload {id: status} for the ids the node knows"),
    RpcCall("transfer_abort", "transfer_abort", "fast", (Arg("transfer_ids", list),),
            doc="Abort running transfers"),
    RpcCall("transfer_cleanup", "transfer_cleanup", "normal", (Arg("transfer_ids", list),),
            doc="Forget transfers; failed receivers remove their partial output"),
    RpcCall("transfer_list", "transfer_list", "fast",
            doc="All transfers a node remembers (leftovers)"),
)
