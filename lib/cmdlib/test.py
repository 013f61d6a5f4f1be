"""Logical units for testing the engine itself."""

from __future__ import annotations

import time
from typing import Any

from ganeti import errors, locking, opcodes
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU


class LUTestDelay(NoHooksLU):
    """Sleep on the master and/or nodes, optionally holding instance locks."""

    REQ_BGL = False
    op: opcodes.OpTestDelay

    def ExpandNames(self) -> None:
        self.needed_locks = {}
        if self.op.on_nodes:
            self.op.on_nodes = [self.expand_node_name(n) for n in self.op.on_nodes]
            self.needed_locks[locking.LEVEL_NODE] = sorted(self.op.on_nodes)
        if self.op.lock_instances:
            self.op.lock_instances = [self.expand_instance_name(n)
                                      for n in self.op.lock_instances]
            self.needed_locks[locking.LEVEL_INSTANCE] = sorted(self.op.lock_instances)

    def _delay_once(self) -> None:
        if self.op.on_master:
            time.sleep(self.op.duration)
        if self.op.on_nodes:
            results = self.rpc.call_test_delay(self.op.on_nodes, self.op.duration)
            for node in self.op.on_nodes:
                results[node].raise_on_failure(f"Failure during delay on node {node}")

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        rounds = max(1, self.op.repeat)
        for i in range(rounds):
            if self.op.repeat:
                self.LogInfo("Test delay iteration %d/%d", i + 1, rounds)
            self._delay_once()
        if self.op.fail:
            raise errors.OpExecError("Test delay was asked to fail")
        return True
