"""Hooks: administrator scripts run before and after an opcode on chosen nodes."""

from ganeti.hooks.master import HooksMaster, build_instance_hook_env
from ganeti.hooks.runner import run_hooks

__all__ = ["HooksMaster", "build_instance_hook_env", "run_hooks"]
