"""Hooks: administrator scripts run before and after an opcode on chosen nodes."""

from ganeti.hooks.instance_env import build_instance_hook_env, build_new_instance_hook_env
from ganeti.hooks.master import HooksMaster
from ganeti.hooks.runner import run_hooks

__all__ = ["HooksMaster", "build_instance_hook_env", "build_new_instance_hook_env", "run_hooks"]
