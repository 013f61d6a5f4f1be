"""gnt-cluster renew-crypto: replace or set the cluster domain secret, renew rapi.pem.

Two clusters exchange instances only when they share this secret: create a
new one on the first cluster, then give the same file to the second with
``--cluster-domain-secret FILE``.  The file is read here; the master writes
the secret (OpClusterRenewCrypto, whose secret field never reaches the job
store), as it is the only node that signs or verifies inter-cluster data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganeti import cli, errors


def _read_secret_file(name: str) -> str:
    from ganeti.opcodes import DOMAIN_SECRET_MIN_LENGTH as MIN_SECRET_LENGTH
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise errors.OpPrereqError(f"--cluster-domain-secret: cannot read {name}: {err}",
                                   errors.ECODE_INVAL) from None
    secret = text.strip()
    if len(secret) < MIN_SECRET_LENGTH or any(c.isspace() for c in secret):
        raise errors.OpPrereqError(
            f"--cluster-domain-secret: {name} must hold one word of at least"
            f" {MIN_SECRET_LENGTH} characters", errors.ECODE_INVAL)
    return secret


def renew_crypto(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    renew_secret = opts.new_cluster_domain_secret or bool(opts.cluster_domain_secret)
    if (opts.new_cluster_domain_secret and opts.cluster_domain_secret) \
            or not (renew_secret or opts.new_rapi_certificate):
        raise errors.OpPrereqError(
            "Give exactly one of --new-cluster-domain-secret and --cluster-domain-secret,"
            " and/or --new-rapi-certificate", errors.ECODE_INVAL)
    fields: dict[str, object] = {"new_rapi_certificate": opts.new_rapi_certificate}
    if opts.cluster_domain_secret:
        fields["cluster_domain_secret"] = _read_secret_file(opts.cluster_domain_secret)
    elif opts.new_cluster_domain_secret:
        fields["new_cluster_domain_secret"] = True
    op = opcodes.OpClusterRenewCrypto.create(**fields)
    path = cli.submit_opcode(op, feedback_fn=lambda _entry: None)
    if renew_secret:
        print(f"Cluster domain secret written to {path}")
    if opts.new_rapi_certificate:
        print("RAPI certificate renewed" + ("" if renew_secret else f": {path}"))
    return cli.EXIT_SUCCESS


RENEW_CRYPTO_OPTS = (
    cli.Option(("--new-cluster-domain-secret",),
               {"action": "store_true", "default": False,
                "help": "Generate a new cluster domain secret"}),
    cli.Option(("--cluster-domain-secret",),
               {"default": None, "metavar": "FILE",
                "help": "Use the secret in FILE ('-': stdin), e.g. another cluster's"}),
    cli.Option(("--new-rapi-certificate",),
               {"action": "store_true", "default": False,
                "help": "Replace the RAPI daemon's certificate (rapi.pem) with a new"
                        " self-signed one"}),
)

COMMAND = cli.Command(renew_crypto, (), RENEW_CRYPTO_OPTS,
                      "Replace the cluster domain secret (shared between clusters that"
                      " move instances) and/or the RAPI certificate")
