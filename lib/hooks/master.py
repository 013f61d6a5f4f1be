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
    """Ganeti's formatting of a hook variable: plain ``str()``.

    So booleans are ``True``/``False`` and None is ``None``; an LU that means
    "empty" or a space-separated list passes the string itself, as Ganeti's do.
    """
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


class HooksResults(dict[str, list[HookEntry]]):
    """node -> [(script, status, output)] of the nodes that ran the phase.

    ``failures`` names the online nodes that did not (node -> why): an LU that
    judges the hooks' outcome (cluster verify) reports them too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, str] = {}


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
        # an LU may run the hooks of another Ganeti opcode (cluster verify: its group's)
        op_id = getattr(lu, "HOOKS_OP_ID", None) or lu.op.OP_ID
        return cls(op_id, hpath, lu.HTYPE, nodes, run_fn, build_env,
                   cluster_name, master_name, data_dir, log_warning)

    def build_env(self, phase: str) -> dict[str, str]:
        """The complete environment sent to the nodes for ``phase``."""
        env = {
            "GANETI_HOOKS_VERSION": str(constants.HOOKS_VERSION),
            "GANETI_OP_CODE": self.op_id,
            "GANETI_DATA_DIR": self.data_dir,
            "GANETI_HOOKS_PHASE": phase,
            "GANETI_HOOKS_PATH": self.hooks_path or "",
            "GANETI_CLUSTER": self.cluster_name,
            "GANETI_MASTER": self.master_name,
        }
        if self.htype:
            env["GANETI_OBJECT_TYPE"] = self.htype
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
                  node_names: Iterable[str] | None = None) -> HooksResults:
        """Run ``phase`` on its nodes; returns node -> [(script, status, output)].

        A failed pre hook raises HooksAbort; everything in the post phase and
        every unreachable node only produces warnings.
        """
        if phase not in (constants.HOOKS_PHASE_PRE, constants.HOOKS_PHASE_POST):
            raise errors.ProgrammerError(f"Unknown hooks phase {phase!r}")
        results = HooksResults()
        if self.hooks_path is None:
            return results
        if node_names is None:
            node_names = self.pre_nodes if phase == constants.HOOKS_PHASE_PRE else self.post_nodes
        nodes = list(dict.fromkeys(node_names))
        env = self.build_env(phase)
        if not nodes:
            return results
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
            results.failures = dict.fromkeys(nodes, msg)
            return results

        failures: list[tuple[str, str, str]] = []
        for node in nodes:
            entries = self._node_entries(node, answers.get(node), results.failures)
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

    def _node_entries(self, node: str, answer: NodeHookResult | None,
                      failures: dict[str, str]) -> list[HookEntry] | None:
        """Validated entries of one node, or None (with a warning) if it gave none;
        an online node's failure is also recorded in ``failures``."""
        problem = None
        if answer is None:
            problem = "no hooks result"
        elif answer.offline:
            self._log_warning(f"Node {node} is offline, its hooks were not run")
            return None
        elif answer.fail_msg:
            problem = f"communication failure: {answer.fail_msg}"
        else:
            try:
                return [(str(s), str(st), str(out)) for s, st, out in answer.payload]
            except (TypeError, ValueError):
                problem = "malformed hooks results"
        failures[node] = problem
        self._log_warning(f"Hooks on node {node}: {problem}")
        return None


def hooks_master_for(lu: Any) -> HooksMaster:
    """The hooks master of a logical unit in its master context (the processor's)."""
    context = lu.context
    return HooksMaster.build_from_lu(
        lu, context.rpc.call_hooks_runner,
        cluster_name=context.cfg.get_cluster_info().cluster_name,
        master_name=context.cfg.get_master_node_name(),
        data_dir=str(context.paths.data_dir), log_warning=lu.LogWarning)


def run_post_hook(lu: Any, node_name: str) -> None:
    """Ganeti's RunPostHook: the post phase on one node during Exec, for a node that
    is about to leave (node remove, cluster destroy); problems are only warnings."""
    try:
        hooks_master_for(lu).run_phase(constants.HOOKS_PHASE_POST, [node_name])
    except errors.GenericError as err:
        lu.LogWarning(f"Errors occurred running hooks on {node_name}: {err}")
