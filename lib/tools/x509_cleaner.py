"""Remove expired per-transfer keys of remote exports on this node (run from cron).

A remote export leaves its source key on the primary node until it expires
(a move may be retried with the same prepared key); this cleaner deletes
each key directory once its certificate is past its end of validity.
Example crontab line (make install puts it in sbindir):
``17 * * * * root /usr/sbin/x509-cleaner``.
"""

from __future__ import annotations

import argparse

from ganeti import pathutils
from ganeti.backend import x509


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="x509-cleaner", description=__doc__)
    parser.add_argument("--root", default=None,
                        help="Node root (default: $GANETI_ROOT or /)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Print every removed key")
    opts = parser.parse_args(argv)
    paths = pathutils.Paths.for_root(opts.root) if opts.root else pathutils.current()
    removed = x509.remove_expired(paths)
    if opts.verbose:
        for name in removed:
            print(f"removed expired transfer key {name}")
    return 0
