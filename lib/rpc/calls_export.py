"""RPC calls for export directories on nodes (see ganeti.backend.export)."""

from __future__ import annotations

from ganeti.rpc.calltypes import Arg, RpcCall

CALLS: tuple[RpcCall, ...] = (
    RpcCall("export_prepare", "export_prepare", "normal", (Arg("instance_name"),),
            single_node=True, doc="Create an empty staging dir for a new export; returns its path"),
    RpcCall("export_finalize", "export_finalize", "slow",
            (Arg("instance_name"), Arg("config_text"), Arg("keep_generations")),
            single_node=True,
            doc="Write config.ini and atomically replace the previous export (keeping it"
                " as an older generation when asked)"),
    RpcCall("export_abort", "export_abort", "normal", (Arg("instance_name"),),
            single_node=True, doc="Drop a staging dir (the previous export stays)"),
    RpcCall("export_list", "export_list", "fast", doc="Instances with an export here"),
    RpcCall("export_info", "export_info", "fast", (Arg("instance_name"),),
            single_node=True, doc="config.ini text and path of an export"),
    RpcCall("export_remove", "export_remove", "normal", (Arg("instance_name"),),
            single_node=True, doc="Remove an export"),
    RpcCall("export_cleanup", "export_cleanup", "normal",
            doc="Finish or undo interrupted finalizes, remove other export leftovers"),
    RpcCall("export_leftovers", "export_leftovers", "fast",
            doc="Staging, trash and journal entries of exports (only looks)"),
    RpcCall("export_generations", "export_generations", "fast", (Arg("instance_names"),),
            doc="Every export generation here with timestamp and sizes"),
    RpcCall("export_generation_info", "export_generation_info", "fast",
            (Arg("instance_name"), Arg("generation")), single_node=True,
            doc="config.ini text and path of one export generation"),
    RpcCall("export_generation_remove", "export_generation_remove", "normal",
            (Arg("instance_name"), Arg("generation")), single_node=True,
            doc="Remove an older export generation (refused while it is protected)"),
    RpcCall("export_generation_modify", "export_generation_modify", "normal",
            (Arg("instance_name"), Arg("generation"), Arg("protected"), Arg("note")),
            single_node=True,
            doc="Set the protection and/or note of a generation (generation None: the"
                " newest export)"),
)
