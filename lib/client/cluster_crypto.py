"""gnt-cluster renew-crypto: replace or set the cluster domain secret.

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

from ganeti import cli, errors, opcodes

MIN_SECRET_LENGTH = opcodes.DOMAIN_SECRET_MIN_LENGTH


def _read_secret_file(name: str) -> str:
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
    if opts.new_cluster_domain_secret == bool(opts.cluster_domain_secret):
        raise errors.OpPrereqError(
            "Give exactly one of --new-cluster-domain-secret and --cluster-domain-secret",
            errors.ECODE_INVAL)
    if opts.cluster_domain_secret:
        op = opcodes.OpClusterRenewCrypto.create(
            cluster_domain_secret=_read_secret_file(opts.cluster_domain_secret))
    else:
        op = opcodes.OpClusterRenewCrypto.create(new_cluster_domain_secret=True)
    path = cli.submit_opcode(op, feedback_fn=lambda _entry: None)
    print(f"Cluster domain secret written to {path}")
    return cli.EXIT_SUCCESS


RENEW_CRYPTO_OPTS = (
    cli.Option(("--new-cluster-domain-secret",),
               {"action": "store_true", "default": False,
                "help": "Generate a new cluster domain secret"}),
    cli.Option(("--cluster-domain-secret",),
               {"default": None, "metavar": "FILE",
                "help": "Use the secret in FILE ('-': stdin), e.g. another cluster's"}),
)

COMMAND = cli.Command(renew_crypto, (), RENEW_CRYPTO_OPTS,
                      "Replace the cluster domain secret (shared between clusters that"
                      " move instances)")
