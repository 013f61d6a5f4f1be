"""Where exports live: a master-side index, so exports need not lock every node.

Ganeti finds older exports by locking and querying all nodes, which
serialises every export in the cluster.  We keep ``instance -> [nodes]`` in a
small JSON file next to the configuration, updated by export, remove and
query; a stale entry only costs one failed removal, and a missing index
falls back to asking the online nodes (read-only, no locks).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from ganeti import pathutils
from ganeti.fileutils import atomic_write

INDEX_NAME = "export-index.json"
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class ExportIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(path, threading.Lock())

    @classmethod
    def for_paths(cls, paths: pathutils.Paths) -> ExportIndex:
        return cls(paths.data_dir / INDEX_NAME)

    def exists(self) -> bool:
        return self.path.exists()

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): sorted({str(n) for n in v}) for k, v in data.items()
                if isinstance(v, list)}

    def _save(self, data: dict[str, list[str]]) -> None:
        clean = {k: sorted(set(v)) for k, v in sorted(data.items()) if v}
        atomic_write(self.path, json.dumps(clean, indent=1), 0o600)

    def nodes(self, instance_name: str) -> list[str]:
        with self._lock:
            return self._load().get(instance_name, [])

    def all(self) -> dict[str, list[str]]:
        with self._lock:
            return self._load()

    def set_nodes(self, instance_name: str, nodes: Iterable[str]) -> None:
        with self._lock:
            data = self._load()
            data[instance_name] = sorted(set(nodes))
            self._save(data)

    def discard(self, instance_name: str, nodes: Iterable[str]) -> None:
        drop = set(nodes)
        with self._lock:
            data = self._load()
            data[instance_name] = [n for n in data.get(instance_name, []) if n not in drop]
            self._save(data)

    def update_from_query(self, answers: Mapping[str, list[str] | None]) -> None:
        """Make the index agree with fresh export lists (None: node did not answer)."""
        with self._lock:
            data = self._load()
            for node, exports in answers.items():
                if exports is None:
                    continue
                for name in list(data):
                    if node in data[name] and name not in exports:
                        data[name] = [n for n in data[name] if n != node]
                for name in exports:
                    data.setdefault(name, [])
                    if node not in data[name]:
                        data[name].append(node)
            self._save(data)
