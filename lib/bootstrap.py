"""Creating a cluster and preparing nodes to join it.

``init_cluster`` runs locally on the future master (there is no master daemon
yet): it creates the cluster CA, the master's node certificate, the cluster
domain secret and the configuration.  ``prepare_node_files`` produces what a
new node needs (its own certificate signed by the cluster CA, the CA
certificate), so that node add -- over SSH or for a node whose daemon already
runs -- installs exactly these files.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ganeti import constants, crypto, errors, pathutils
from ganeti.config import ConfigStore, make_initial_config
from ganeti.fileutils import atomic_write

CA_VALIDITY_DAYS = 10 * 365
NODE_CERT_VALIDITY_DAYS = 5 * 365
RAPI_CERT_VALIDITY_DAYS = 5 * 365


def ca_key_file(paths: pathutils.Paths) -> Path:
    """The CA's private key stays on the master only."""
    return paths.crypto_dir / "ca-key.pem"


def ensure_dirs(paths: pathutils.Paths) -> None:
    """Create the directories every node (master or not) uses."""
    for path, mode in ((paths.data_dir, 0o700), (paths.crypto_dir, 0o700),
                       (paths.run_dir, 0o755), (paths.log_dir, 0o750),
                       (paths.sysconf_dir, 0o755), (paths.hooks_dir, 0o755),
                       (paths.export_dir, 0o750), (paths.file_storage_dir, 0o750)):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)


@dataclass(frozen=True)
class NodeFiles:
    """Crypto material a node needs to join: its cert+key and the CA cert."""

    node_cert_pem: str
    node_key_pem: str
    ca_cert_pem: str

    def install(self, paths: pathutils.Paths) -> None:
        ensure_dirs(paths)
        crypto.write_pem_pair(paths.node_cert_file, self.node_cert_pem, self.node_key_pem)
        atomic_write(paths.cluster_ca_file, self.ca_cert_pem, 0o644)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def write_rapi_certificate(paths: pathutils.Paths, names: list[str], ips: list[str]) -> None:
    """A new self-signed ``rapi.pem`` for the RAPI daemon, valid for ``names`` and ``ips``."""
    addresses = [ip for ip in ips if _is_ip(ip)]
    cert, key = crypto.generate_server_certificate(names[0], names, addresses,
                                                   RAPI_CERT_VALIDITY_DAYS)
    crypto.write_pem_pair(paths.rapi_cert, cert, key)


def prepare_node_files(master_paths: pathutils.Paths, node_name: str,
                       ips: list[str]) -> NodeFiles:
    """Issue a certificate for ``node_name`` with the cluster CA (master only)."""
    try:
        ca_cert = master_paths.cluster_ca_file.read_text()
        ca_key = ca_key_file(master_paths).read_text()
    except OSError as err:
        raise errors.OpPrereqError(
            f"Cluster CA not readable on this node ({err}); is this the master?",
            errors.ECODE_ENVIRON) from None
    cert, key = crypto.generate_node_certificate(ca_cert, ca_key, node_name, ips,
                                                 NODE_CERT_VALIDITY_DAYS)
    return NodeFiles(cert, key, ca_cert)


def init_cluster(paths: pathutils.Paths, cluster_name: str, master_name: str,
                 primary_ip: str, *, noded_port: int = constants.DEFAULT_NODED_PORT,
                 master_port: int | None = None, master_ip: str | None = None,
                 enabled_hypervisors: list[str] | None = None,
                 enabled_disk_templates: list[str] | None = None,
                 compression_tools: list[str] | None = None,
                 shared_export_dir: bool = False) -> ConfigStore:
    """Create a new cluster whose master is this machine."""
    if paths.cluster_conf_file.exists():
        raise errors.OpPrereqError(
            f"Cluster is already initialised ({paths.cluster_conf_file} exists)",
            errors.ECODE_STATE)
    data = make_initial_config(
        cluster_name, master_name, master_ip, primary_ip, master_port,
        noded_port=noded_port, enabled_hypervisors=enabled_hypervisors,
        enabled_disk_templates=enabled_disk_templates,
        compression_tools=compression_tools, shared_export_dir=shared_export_dir)
    ensure_dirs(paths)
    ca_cert, ca_key = crypto.generate_cluster_ca(cluster_name, CA_VALIDITY_DAYS)
    crypto.write_private_file(ca_key_file(paths), ca_key)
    atomic_write(paths.cluster_ca_file, ca_cert, 0o644)
    cert, key = crypto.generate_node_certificate(ca_cert, ca_key, master_name, [primary_ip],
                                                 NODE_CERT_VALIDITY_DAYS)
    crypto.write_pem_pair(paths.node_cert_file, cert, key)
    crypto.write_private_file(paths.cluster_domain_secret_file,
                              crypto.generate_cluster_domain_secret() + "\n")
    write_rapi_certificate(paths, [master_name, cluster_name],
                           [ip for ip in (primary_ip, master_ip) if ip])
    # the config comes last: its presence means "initialised"
    return ConfigStore.initialize(paths.cluster_conf_file, data)
