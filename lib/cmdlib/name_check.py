"""The name and IP checks of instance creation (Ganeti's name_check and ip_check).

The name must resolve (DNS or /etc/hosts); with the IP check nothing may answer
at the address it resolves to (a refused connection is an answer too: the host
is up), as Ganeti pings it on the node daemon's port before creating the
instance.
"""

from __future__ import annotations

import errno
import socket

from ganeti import errors

# seconds to wait for an answer at the instance's address
PING_TIMEOUT = 2.0


def resolve(name: str) -> str:
    """The address ``name`` resolves to; OpPrereqError (ECODE_RESOLVER) if none."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as err:
        raise errors.OpPrereqError(
            f"Instance name '{name}' does not resolve ({err}); give --no-name-check and"
            " --no-ip-check to create it anyway", errors.ECODE_RESOLVER) from None
    return str(infos[0][4][0])


def answers(address: str, port: int, timeout: float = PING_TIMEOUT) -> bool:
    """Whether something is up at ``address`` (a TCP connect to ``port`` succeeds or is
    refused)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return True
    except OSError as err:
        return err.errno == errno.ECONNREFUSED


def check(name: str, ip_check: bool, port: int) -> str:
    """Resolve ``name``; with ``ip_check`` refuse it when its address is in use."""
    address = resolve(name)
    if ip_check and answers(address, port):
        raise errors.OpPrereqError(
            f"IP address {address} of instance {name} is already in use (it answers on"
            f" port {port}); give --no-ip-check to create it anyway",
            errors.ECODE_NOTUNIQUE)
    return address
