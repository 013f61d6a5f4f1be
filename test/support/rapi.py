"""Talking to a local cluster's RAPI daemon in tests: users, and a plain HTTPS client.

The client is deliberately ours (http.client + ssl, no certificate check,
Basic auth), so a test sees the real status line, headers and body;
Ganeti's own client runs in the oracle interpreter (support.ganeti_oracle).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ganeti.tools.local_cluster import LocalCluster

USERS_MODE = 0o600


def add_rapi_user(cluster: LocalCluster, name: str, password: str,
                  options: str = "write") -> None:
    """Add (or replace) a user line in the master's users file, atomically.

    ``options`` is the third field ("write", "read", "write,read" or "" for
    none); the daemon notices the new file at its next request."""
    path = cluster.master.paths.rapi_users
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    lines = [line for line in lines if line.split()[:1] != [name]]
    lines.append(f"{name} {password} {options}".rstrip())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, USERS_MODE)
    os.replace(tmp, path)


@dataclass
class RapiAnswer:
    status: int
    headers: dict[str, str]
    body: Any  # the decoded JSON, or the text when it is not JSON


class RapiClient:
    """HTTPS to the cluster's RAPI daemon, one connection per request."""

    def __init__(self, cluster: LocalCluster, user: str | None = "admin",
                 password: str = "secret", timeout: float = 120) -> None:
        self.host, self.port = cluster.rapi_address
        self.user = user
        self.password = password
        self.timeout = timeout
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def _auth_headers(self) -> dict[str, str]:
        if self.user is None:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, method: str, path: str, body: Any = None,
                query: str | dict[str, Any] | None = None,
                headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> RapiAnswer:
        """One request; ``body`` is sent as JSON, ``raw`` as given (for bad input)."""
        if isinstance(query, dict):
            query = urllib.parse.urlencode(query, doseq=True)
        target = path + (f"?{query}" if query else "")
        all_headers = self._auth_headers()
        data = raw
        if data is None and body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=self.context)
        try:
            conn.request(method, target, body=data, headers=all_headers)
            resp = conn.getresponse()
            payload = resp.read()
            answer_headers = {k: v for k, v in resp.getheaders()}
        finally:
            conn.close()
        text = payload.decode("utf-8", "replace")
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = text
        return RapiAnswer(resp.status, answer_headers, decoded)
