"""Master-side hooks: build a logical unit's hook environment and run a phase.

The environment is part of the administrator-facing contract (scripts written
for Ganeti read these variables), so names and value formatting follow Ganeti.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from ganeti import constants, errors

ENV_PREFIX = "GANETI_"
POST_ENV_PREFIX = "GANETI_POST_"

HookEntry = tuple[str, str, str]
LogFn = Callable[[str], None]


class NodeHookResult(Protocol):
    """What the RPC layer returns per node for ``hooks_runner``."""

    @property
    def fail_msg(self) -> str | None: ...
    @property
    def offline(self) -> bool: ...
    @property
    def payload(self) -> Any: ...


RunFn = Callable[[list[str], str, str, dict[str, str]], Mapping[str, NodeHookResult]]


class HooksLU(Protocol):
    """The parts of a logical unit the hooks master uses."""

    HPATH: ClassVar[str | None]
    HTYPE: ClassVar[str | None]

    @property
    def op(self) -> Any: ...
    def BuildHooksEnv(self) -> dict[str, Any]: ...
    def BuildHooksNodes(self) -> tuple[list[str], list[str]]: ...


def env_value(value: Any) -> str:
    """Ganeti's formatting of a hook variable: None is empty, lists are space-joined."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return " ".join(env_value(v) for v in items)
    return str(value)


def prefixed_env(env: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """Prefix an LU environment; LUs must not add the prefix themselves."""
    result: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            raise errors.ProgrammerError(
                f"Hook environment key {key!r} must not carry the {ENV_PREFIX} prefix")
        result[prefix + key] = env_value(value)
    return result


class HooksMaster:
    """Runs the pre and post hook phases of one logical-unit execution."""

    def __init__(self, op_id: str, hooks_path: str | None, htype: str | None,
                 nodes: tuple[list[str], list[str]], run_fn: RunFn,
                 build_env_fn: Callable[[], Mapping[str, Any]], cluster_name: str,
                 master_name: str, data_dir: str, log_warning: LogFn) -> None:
        self.op_id = op_id
        self.hooks_path = hooks_path
        self.htype = htype
        self.pre_nodes = list(nodes[0])
        self.post_nodes = list(nodes[1])
        self._run_fn = run_fn
        self._build_env_fn = build_env_fn
        self.cluster_name = cluster_name
        self.master_name = master_name
        self.data_dir = data_dir
        self._log_warning = log_warning
        # the LU environment as seen before Exec (reused by the post phase)
        self.pre_env: dict[str, str] | None = None

    @classmethod
    def build_from_lu(cls, lu: HooksLU, run_fn: RunFn, cluster_name: str, master_name: str,
                      data_dir: str, log_warning: LogFn) -> HooksMaster:
        hpath = lu.HPATH
        if hpath is None:
            nodes: tuple[list[str], list[str]] = ([], [])
            build_env: Callable[[], Mapping[str, Any]] = dict
        else:
            pre, post = lu.BuildHooksNodes()
            nodes = (list(pre or []), list(post or []))
            build_env = lu.BuildHooksEnv
        return cls(lu.op.OP_ID, hpath, lu.HTYPE, nodes, run_fn, build_env,
                   cluster_name, master_name, data_dir, log_warning)

    def build_env(self, phase: str) -> dict[str, str]:
        """The complete environment sent to the nodes for ``phase``."""
        env = {
            "GANETI_HOOKS_VERSION": str(constants.HOOKS_VERSION),
            "GANETI_OP_CODE": self.op_id,
            "GANETI_DATA_DIR": self.data_dir,
            "GANETI_HOOKS_PHASE": phase,
            "GANETI_HOOKS_PATH": self.hooks_path or "",
            "GANETI_OBJECT_TYPE": self.htype or "",
            "GANETI_CLUSTER": self.cluster_name,
            "GANETI_MASTER": self.master_name,
        }
        if self.hooks_path is None:
            return env
        if phase == constants.HOOKS_PHASE_PRE or self.pre_env is None:
            self.pre_env = prefixed_env(self._build_env_fn(), ENV_PREFIX)
        env.update(self.pre_env)
        if phase == constants.HOOKS_PHASE_POST:
            env.update(self._post_env())
        return env

    def _post_env(self) -> dict[str, str]:
        # Exec already happened: a failure here must not turn success into an error
        try:
            return prefixed_env(self._build_env_fn(), POST_ENV_PREFIX)
        except errors.GenericError as err:
            self._log_warning(f"Could not rebuild the hook environment after execution: {err}")
            return {}

    def run_phase(self, phase: str,
                  node_names: Iterable[str] | None = None) -> dict[str, list[HookEntry]]:
        """Run ``phase`` on its nodes; returns node -> [(script, status, output)].

        A failed pre hook raises HooksAbort; everything in the post phase and
        every unreachable node only produces warnings.
        """
        if phase not in (constants.HOOKS_PHASE_PRE, constants.HOOKS_PHASE_POST):
            raise errors.ProgrammerError(f"Unknown hooks phase {phase!r}")
        if self.hooks_path is None:
            return {}
        if node_names is None:
            node_names = self.pre_nodes if phase == constants.HOOKS_PHASE_PRE else self.post_nodes
        nodes = list(dict.fromkeys(node_names))
        env = self.build_env(phase)
        if not nodes:
            return {}
        is_pre = phase == constants.HOOKS_PHASE_PRE

        try:
            answers = self._run_fn(nodes, self.hooks_path, phase, env)
        except errors.GenericError as err:
            answers = {}
            problem = str(err)
        else:
            problem = "no node answered"
        if not answers:
            msg = f"Communication failure running {phase} hooks: {problem}"
            if is_pre:
                raise errors.HooksFailure(msg)
            self._log_warning(msg)
            return {}

        results: dict[str, list[HookEntry]] = {}
        failures: list[tuple[str, str, str]] = []
        for node in nodes:
            entries = self._node_entries(node, answers.get(node))
            if entries is None:
                continue
            results[node] = entries
            for script, status, output in entries:
                if status != constants.HKR_FAIL:
                    continue
                if is_pre:
                    failures.append((node, script, output))
                else:
                    self._log_warning(
                        f"Post hook {script} failed on node {node}: {output.strip()}")
        if failures:
            names = ", ".join(f"{script} on {node}" for node, script, _ in failures)
            raise errors.HooksAbort(f"Pre hook(s) failed: {names}", failures)
        return results

    def _node_entries(self, node: str, answer: NodeHookResult | None) -> list[HookEntry] | None:
        """Validated entries of one node, or None (with a warning) if it gave none."""
        if answer is None:
            self._log_warning(f"No hooks result from node {node}")
            return None
        if answer.offline:
            self._log_warning(f"Node {node} is offline, its hooks were not run")
            return None
        if answer.fail_msg:
            self._log_warning(f"Communication failure to node {node}: {answer.fail_msg}")
            return None
        try:
            entries = [(str(s), str(st), str(out)) for s, st, out in answer.payload]
        except (TypeError, ValueError):
            self._log_warning(f"Node {node} returned malformed hooks results")
            return None
        return entries


# --- instance environment ---------------------------------------------------------


class HookDisk(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def mode(self) -> str: ...


class HookNic(Protocol):
    @property
    def mac(self) -> str | None: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def nicparams(self) -> Mapping[str, Any]: ...


class HookInstance(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def primary_node(self) -> str: ...
    @property
    def os(self) -> str: ...
    @property
    def hypervisor(self) -> str: ...
    @property
    def admin_state(self) -> str: ...
    @property
    def disk_template(self) -> str: ...
    @property
    def secondary_nodes(self) -> Iterable[str]: ...
    @property
    def hvparams(self) -> Mapping[str, Any]: ...
    @property
    def beparams(self) -> Mapping[str, Any]: ...
    @property
    def disks(self) -> Iterable[HookDisk]: ...
    @property
    def nics(self) -> Iterable[HookNic]: ...
    @property
    def tags(self) -> Iterable[str]: ...


class HookCluster(Protocol):
    @property
    def beparams(self) -> Mapping[str, Any]: ...
    @property
    def hvparams(self) -> Mapping[str, Mapping[str, Any]]: ...


def _filled(defaults: Mapping[str, Any] | None, own: Mapping[str, Any] | None) -> dict[str, Any]:
    result = dict(defaults or {})
    result.update(own or {})
    return result


def build_instance_hook_env(instance: HookInstance, cluster: HookCluster,
                            node_name_fn: Callable[[str], str],
                            override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Ganeti's INSTANCE_* hook variables (without the GANETI_ prefix)."""
    be = _filled(cluster.beparams, instance.beparams)
    hv = _filled((cluster.hvparams or {}).get(instance.hypervisor), instance.hvparams)
    maxmem = be.get("maxmem", be.get("memory"))
    env: dict[str, Any] = {
        "INSTANCE_NAME": instance.name,
        "INSTANCE_PRIMARY": node_name_fn(instance.primary_node),
        "INSTANCE_SECONDARIES": " ".join(node_name_fn(n) for n in instance.secondary_nodes),
        "INSTANCE_OS_TYPE": instance.os,
        "INSTANCE_STATUS": instance.admin_state,
        "INSTANCE_MEMORY": maxmem,
        "INSTANCE_MINMEM": be.get("minmem", maxmem),
        "INSTANCE_MAXMEM": maxmem,
        "INSTANCE_VCPUS": be.get("vcpus"),
        "INSTANCE_DISK_TEMPLATE": instance.disk_template,
        "INSTANCE_HYPERVISOR": instance.hypervisor,
        "INSTANCE_TAGS": " ".join(sorted(instance.tags)),
    }
    disks = list(instance.disks)
    env["INSTANCE_DISK_COUNT"] = len(disks)
    for idx, disk in enumerate(disks):
        env[f"INSTANCE_DISK{idx}_SIZE"] = disk.size
        env[f"INSTANCE_DISK{idx}_MODE"] = disk.mode
        name = getattr(disk, "name", None)
        if name:
            env[f"INSTANCE_DISK{idx}_NAME"] = name
    nics = list(instance.nics)
    env["INSTANCE_NIC_COUNT"] = len(nics)
    for idx, nic in enumerate(nics):
        params = nic.nicparams or {}
        env[f"INSTANCE_NIC{idx}_MAC"] = nic.mac or ""
        env[f"INSTANCE_NIC{idx}_IP"] = nic.ip or ""
        env[f"INSTANCE_NIC{idx}_MODE"] = params.get("mode", "")
        env[f"INSTANCE_NIC{idx}_LINK"] = params.get("link", "")
        if params.get("vlan"):
            env[f"INSTANCE_NIC{idx}_VLAN"] = params["vlan"]
    for key, value in be.items():
        env[f"INSTANCE_BE_{key}"] = value
    for key, value in hv.items():
        env[f"INSTANCE_HV_{key}"] = value
    if override:
        env.update(override)
    return env
