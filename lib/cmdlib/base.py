"""Base classes for logical units (LUs) and tasklets.

A logical unit implements one opcode.  The processor (``ganeti.mcpu``) drives
it through the phases CheckArguments -> ExpandNames -> DeclareLocks (per
level) -> CheckPrereq -> pre hooks -> Exec -> post hooks; the phase methods
keep Ganeti's names because hook scripts and documentation speak of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ganeti import errors, locking

if TYPE_CHECKING:
    from ganeti.context import MasterContext
    from ganeti.opcodes import OpCode

FeedbackFn = Callable[[str], None]

# values of LogicalUnit.recalculate_locks
LOCKS_REPLACE = "replace"
LOCKS_APPEND = "append"


# the key of a job-submitted result holding the follow-up jobs (Ganeti's JOB_IDS_KEY)
JOB_IDS_KEY = "jobs"


class ResultWithJobs:
    """An LU result that submits follow-up jobs (Ganeti's ResultWithJobs).

    The processor submits ``jobs`` (a list of opcode lists) and the opcode's
    result becomes ``{"jobs": [[True, job_id] | [False, error], ...], **other}``,
    the "job-submitted" shape Ganeti's clients read (e.g. cluster verify).
    """

    def __init__(self, jobs: list[list[OpCode]], **other: Any) -> None:
        # ``other`` cannot hold "jobs": the signature takes that name
        self.jobs = jobs
        self.other = other


class LogicalUnit:
    """One opcode's implementation; a fresh instance is built for every attempt."""

    HPATH: ClassVar[str | None] = None
    HTYPE: ClassVar[str | None] = None
    # whether the LU needs the Big Ganeti Lock exclusively (cluster-wide changes)
    REQ_BGL: ClassVar[bool] = True

    def __init__(self, context: MasterContext, op: OpCode,
                 feedback: Callable[[str, Any], None]) -> None:
        self.context = context
        self.op = op
        self.cfg = context.cfg
        self.glm = context.glm
        self.rpc = context.rpc
        self._feedback = feedback
        # level -> names (list) or locking.ALL_SET; None until ExpandNames ran
        self.needed_locks: dict[int, Any] | None = None
        self.share_locks: dict[int, bool] = dict.fromkeys(locking.LEVELS, False)
        self.opportunistic_locks: dict[int, bool] = dict.fromkeys(locking.LEVELS, False)
        self.recalculate_locks: dict[int, str] = {}
        # locks for objects this LU creates (e.g. a new instance's name): the
        # processor adds them, held exclusively, in level order -- never later
        # while holding locks of further levels -- and removes them if the LU fails
        self.add_locks: dict[int, list[str]] = {}
        self.dry_run_result: Any = None
        self.tasklets: list[Tasklet] | None = None
        self.CheckArguments()

    # --- phases ---------------------------------------------------------------

    def CheckArguments(self) -> None:
        """Syntax-only checks of the opcode; no cluster access here."""

    def ExpandNames(self) -> None:
        """Canonicalise names and fill ``needed_locks`` ({} means no locks)."""
        raise NotImplementedError

    def DeclareLocks(self, level: int) -> None:
        """Compute locks of ``level`` from those already held (e.g. an instance's nodes)."""

    def CheckPrereq(self) -> None:
        """Verify preconditions under locks; raise OpPrereqError. Must be idempotent."""
        for tasklet in self.tasklets or []:
            tasklet.CheckPrereq()

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        if self.tasklets is None:
            raise NotImplementedError
        for tasklet in self.tasklets:
            tasklet.Exec(feedback_fn)
        return None

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Hook environment without the GANETI_ prefix (only LUs with HPATH)."""
        raise NotImplementedError

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Node names for the (pre, post) hook phases."""
        raise NotImplementedError

    def HooksCallBack(self, phase: str, hook_results: Any, feedback_fn: FeedbackFn,
                      lu_result: Any) -> Any:
        """Lets an LU react to post-hook results; returns the (possibly changed) result."""
        return lu_result

    # --- job log -------------------------------------------------------------------

    def LogInfo(self, message: str, *args: Any) -> None:
        self._feedback("message", message % args if args else message)

    def LogWarning(self, message: str, *args: Any, hint: str | None = None) -> None:
        text = message % args if args else message
        self._feedback("message", f"WARNING: {text}")
        if hint:
            self._feedback("message", f"Hint: {hint}")

    def LogStep(self, current: int, total: int, message: str, *args: Any) -> None:
        text = message % args if args else message
        self._feedback("message", f"STEP {current}/{total} {text}")

    def feedback_fn(self, message: str) -> None:
        self._feedback("message", message)

    def log_structured(self, log_type: str, payload: Any) -> None:
        """Structured job-log entry (e.g. remote-import endpoints, progress)."""
        self._feedback(log_type, payload)

    # --- helpers for ExpandNames / DeclareLocks ------------------------------------

    def expand_instance_name(self, name: str) -> str:
        uuid = self.cfg.expand_instance_name(name)
        inst = None if uuid is None else self.cfg.get_instance_info(uuid)
        if inst is None:
            raise errors.OpPrereqError(f"Instance '{name}' not known", errors.ECODE_NOENT)
        return str(inst.name)

    def expand_node_name(self, name: str) -> str:
        uuid = self.cfg.expand_node_name(name)
        node = None if uuid is None else self.cfg.get_node_info(uuid)
        if node is None:
            raise errors.OpPrereqError(f"Node '{name}' not known", errors.ECODE_NOENT)
        return str(node.name)

    def expand_and_lock_instance(self, shared: bool = False) -> None:
        """Canonicalise ``op.instance_name`` and declare its lock."""
        op: Any = self.op
        op.instance_name = self.expand_instance_name(op.instance_name)
        if self.needed_locks is None:
            self.needed_locks = {}
        self.needed_locks[locking.LEVEL_INSTANCE] = [op.instance_name]
        self.share_locks[locking.LEVEL_INSTANCE] = shared

    def lock_instances_nodes(self, level: int = locking.LEVEL_NODE,
                             primary_only: bool = False) -> None:
        """Fill node locks of ``level`` from the instances locked at the instance level.

        Call from DeclareLocks after setting ``recalculate_locks[level]``.
        """
        names: set[str] = set()
        for inst_name in self.glm.owned(locking.LEVEL_INSTANCE):
            inst = self.cfg.get_instance_info_by_name(inst_name)
            if inst is None:
                continue
            node_uuids = [inst.primary_node] if primary_only else list(inst.all_nodes)
            names.update(self.cfg.get_node_names(node_uuids))
        assert self.needed_locks is not None
        if self.recalculate_locks.get(level) == LOCKS_APPEND and \
                self.needed_locks.get(level) not in (None, locking.ALL_SET):
            names.update(self.needed_locks[level])
        self.needed_locks[level] = sorted(names)
        del self.recalculate_locks[level]

    def owned_locks(self, level: int) -> set[str]:
        return set(self.glm.owned(level))

    def check_locks_owned(self, level: int, names: Iterable[str]) -> None:
        missing = set(names) - self.owned_locks(level)
        if missing:
            raise errors.ProgrammerError(
                f"{type(self).__name__} does not hold {locking.LEVEL_NAMES[level]} locks"
                f" {sorted(missing)}")


class NoHooksLU(LogicalUnit):
    """An LU that runs no hooks."""

    HPATH = None
    HTYPE = None

    def BuildHooksEnv(self) -> dict[str, Any]:
        raise errors.ProgrammerError("BuildHooksEnv called for a NoHooksLU")

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        raise errors.ProgrammerError("BuildHooksNodes called for a NoHooksLU")


class Tasklet:
    """A reusable piece of an LU (CheckPrereq + Exec) sharing the LU's locks."""

    def __init__(self, lu: LogicalUnit) -> None:
        self.lu = lu
        self.cfg = lu.cfg
        self.rpc = lu.rpc

    def CheckPrereq(self) -> None:
        pass

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        raise NotImplementedError
