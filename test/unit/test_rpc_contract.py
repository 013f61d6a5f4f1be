"""The RPC contract: backend signatures -> node-side validation and master-side stubs.

One definition per call (the annotated backend procedure); these tests keep
its two derived views honest: the generated stubs are fresh and complete,
the master side never loads node-side code, and the node daemon refuses a
badly typed argument, over real TLS, with a message naming procedure and
argument, before the procedure runs.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import crypto, pathutils
from ganeti.backend import NodeContext
from ganeti.rpc import contract, defs, stubs
from ganeti.rpc.client import RpcRunner, default_ssl_context_factory, static_resolver
from ganeti.server import noded
from ganeti.tools import rpc_gen as gen

WAIT = 60.0


# --- the generated master side ----------------------------------------------------------

def test_generated_stubs_are_fresh() -> None:
    """lib/rpc/stubs.py is exactly what the backend signatures make (run ganeti.tools.rpc_gen)."""
    assert gen.render(noded.TABLE) == gen.STUBS_FILE.read_text(), \
        "stale: run python -m ganeti.tools.rpc_gen"
    assert gen.main(["--check"]) == 0


def test_stale_stubs_are_detected(tmp_path: Path) -> None:
    out = tmp_path / "stubs.py"
    out.write_text(gen.STUBS_FILE.read_text().replace("call_ping", "call_pong"))
    assert gen.main(["--check", "-o", str(out)]) == 1
    assert gen.main(["-o", str(out)]) == 0 and gen.main(["--check", "-o", str(out)]) == 0


def test_every_procedure_has_a_typed_stub_and_table_entry() -> None:
    assert set(defs.CALLS) == set(noded.TABLE)
    for name, proc in noded.TABLE.items():
        call = defs.CALLS[name]
        assert call.procedure == name and call.single_node == proc.meta.single_node
        method = getattr(stubs.RpcStubs, f"call_{name}")
        params = list(inspect.signature(method).parameters.values())
        assert params[1].name == ("node" if call.single_node else "nodes"), name
        assert params[-1].name == "timeout" and params[-1].kind is params[-1].KEYWORD_ONLY
        args = [p.name for p in params[2:-1]]
        assert args == [a.name for a in call.args], name
        if proc.meta.prepare is None:
            assert args == [p.name for p in proc.params], name
        for param in params[1:]:
            assert param.annotation != inspect.Parameter.empty, (name, param.name)
        assert "RpcResult[" in str(inspect.signature(method).return_annotation), name
        assert call.timeout_for({a.name: 1 for a in call.args}) > 0


def test_master_side_loads_no_node_side_code() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import ganeti.cmdlib, ganeti.client\n"
        "for pkg in (ganeti.cmdlib, ganeti.client):\n"
        "    for mod in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + mod.name)\n"
        "import ganeti.rpc.client, ganeti.context, ganeti.server.masterd, ganeti.cli\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('ganeti.backend',"
        " 'ganeti.server.noded')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=WAIT)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the node side: validation at the boundary ------------------------------------------

def test_validators_are_built_once_per_procedure() -> None:
    # a server given the plain function table reuses the served procedures' validators
    table = noded._procedure_table(noded.PROCEDURES)
    assert all(table[name] is noded.TABLE[name] for name in noded.TABLE)


@pytest.mark.parametrize(("name", "args", "message"), [
    ("test_delay", ["1"], "Invalid argument 'duration': Input should be a valid number"
                          " (got '1') for procedure 'test_delay'"),
    ("test_delay", [True], "argument 'duration'"),
    ("blockdev_grow", ["file", ["file", "/x"], 1.5], "argument 'new_size'"),
    ("x509_cert_remove", [None], "argument 'name': Input should be a valid string"),
    ("export_generation_modify", ["inst1", None, "yes", None], "argument 'protected'"),
    ("transfer_status", [["a", 1]], "argument 'transfer_ids[1]'"),
    ("write_ssconf_files", [["x"]], "argument 'values': Input should be a valid dictionary"),
    ("export_info", [], "Invalid arguments for procedure 'export_info': expected 1"
                        " arguments, got 0"),
    ("export_finalize", ["i", "t", True, 4], "expected 2 to 3 arguments, got 4"),
])
def test_bad_arguments_name_procedure_and_argument(tmp_path: Path, name: str,
                                                   args: list[Any], message: str) -> None:
    ctx = NodeContext(paths=pathutils.Paths.for_root(tmp_path))
    with pytest.raises(contract.ArgumentError) as info:
        noded.TABLE[name].run(ctx, args)
    assert message in str(info.value)


def test_valid_arguments_pass_unchanged_and_numbers_widen() -> None:
    proc = noded.TABLE["test_delay"]
    assert proc.validate([0]) == [0.0]
    opts = {"bwlimit": 5, "nested": {"kept": [1, 2]}}
    checked = noded.TABLE["transfer_send_start"].validate(
        ["t1", {"kind": "file", "path": "/x"}, "h", 1, "m" * 8, "none", opts])
    assert checked[-1] == opts
    assert noded.TABLE["export_finalize"].validate(["i", "t"]) == ["i", "t"]


def test_unannotated_procedures_are_only_counted() -> None:
    table = contract.procedures({"free": lambda ctx, value: value})
    assert table["free"].validate([object()]) is not None
    with pytest.raises(contract.ArgumentError, match="expected 1 arguments, got 2"):
        table["free"].validate([1, 2])


def test_procedure_marks_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout class"):
        contract.procedure("sometimes")

    @contract.procedure("fast")
    def reserved(ctx: NodeContext, timeout: float) -> None:
        """A clash with the master's timeout keyword."""

    with pytest.raises(ValueError, match="reserved"):
        contract.Procedure("reserved", reserved)


# --- through a real node daemon over TLS ------------------------------------------------

@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[tuple[noded.NodeRpcServer, RpcRunner,
                                                   pathutils.Paths]]:
    ca = crypto.generate_cluster_ca("contract.example.com", 5)
    master = pathutils.Paths.for_root(tmp_path / "master")
    node = pathutils.Paths.for_root(tmp_path / "node")
    for paths, name in ((master, "master"), (node, "node")):
        cert, key = crypto.generate_node_certificate(ca[0], ca[1], name, ["127.0.0.1"], 5)
        crypto.write_pem_pair(paths.node_cert_file, cert, key)
        paths.cluster_ca_file.write_text(ca[0])
    ssl_ctx = crypto.server_ssl_context(node.node_cert_file, node.cluster_ca_file)
    server = noded.NodeRpcServer(("127.0.0.1", 0), ssl_ctx, NodeContext(paths=node))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    runner = RpcRunner(static_resolver({"n1": ("127.0.0.1", server.port, False)}),
                       default_ssl_context_factory(master), paths=master)
    try:
        yield server, runner, node
    finally:
        runner.close()
        server.shutdown()
        server.server_close()


def test_bad_argument_over_tls_is_a_failed_result(
        node_server: tuple[noded.NodeRpcServer, RpcRunner, pathutils.Paths]) -> None:
    _server, runner, node = node_server
    wire = pathutils.to_wire_name(node, node.cluster_conf_file)
    res = runner.run("upload_file", ["n1"], [wire, "eA==", 0o644, "yesterday"], WAIT)["n1"]
    assert res.fail_msg == ("Invalid argument 'mtime': Input should be a valid number"
                            " (got 'yesterday') for procedure 'upload_file'")
    assert not node.cluster_conf_file.exists()      # the procedure did not run
    # the typed method of the same call, with good values, goes through
    conf = runner._paths.cluster_conf_file
    conf.write_text("{}")
    assert runner.call_upload_file(["n1"], conf)["n1"].fail_msg is None
    assert node.cluster_conf_file.read_text() == "{}"
    res = runner.call_x509_cert_create("n1", 3600)
    assert res.fail_msg is None and res.payload[0].startswith("x509-")
