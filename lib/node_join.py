"""Bringing a node into the cluster: reach its daemon, optionally over SSH first."""

from __future__ import annotations

from collections.abc import Callable

from ganeti import constants, errors, pathutils


def check_node_daemon(paths: pathutils.Paths, name: str, address: str, port: int) -> int:
    """Call ``version`` on a node not yet in the config; return its protocol version.

    The TLS handshake itself proves the daemon holds a certificate signed by
    this cluster's CA; a mismatched protocol version is refused too.
    """
    from ganeti.rpc.client import RpcRunner, default_ssl_context_factory, static_resolver

    runner = RpcRunner(static_resolver({name: (address, port, False)}),
                       default_ssl_context_factory(paths), paths=paths, max_workers=1)
    try:
        result = runner.call_version([name])[name]
    finally:
        runner.close()
    if result.fail_msg:
        raise errors.OpPrereqError(
            f"Node daemon of {name} at {address}:{port} does not answer with the cluster's"
            f" certificates: {result.fail_msg}", errors.ECODE_ENVIRON)
    if result.payload != constants.PROTOCOL_VERSION:
        raise errors.OpPrereqError(
            f"Node {name} runs protocol version {result.payload}, the master"
            f" {constants.PROTOCOL_VERSION}", errors.ECODE_ENVIRON)
    return int(result.payload)


def install_over_ssh(paths: pathutils.Paths, name: str, address: str, port: int,
                     user: str, ssh_port: int, feedback_fn: Callable[[str], None]) -> None:
    from ganeti import ssh_setup

    ssh_setup.install_node(paths, name, address, port, user, ssh_port, feedback_fn)
