"""Running hook scripts on behalf of the master."""

from __future__ import annotations

from typing import Any

from ganeti import constants, errors
from ganeti.backend import NodeContext, RpcFail

_PHASES = (constants.HOOKS_PHASE_PRE, constants.HOOKS_PHASE_POST)


def hooks_runner(ctx: NodeContext, hpath: str, phase: str,
                 env: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Run the node's ``<hpath>-<phase>.d`` scripts; returns (script, status, output)."""
    if not isinstance(hpath, str) or not hpath:
        raise RpcFail(f"Invalid hooks path {hpath!r}")
    if phase not in _PHASES:
        raise RpcFail(f"Invalid hooks phase {phase!r}")
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        raise RpcFail("Hooks environment must be a dictionary with string keys")
    try:
        # Imported lazily: the runner lives in its own package and is only
        # needed when the master actually has hooks to run.
        from ganeti.hooks.runner import run_hooks
    except ImportError as err:
        raise RpcFail(f"Hooks runner not available on this node: {err}") from None
    str_env = {k: "" if v is None else str(v) for k, v in env.items()}
    try:
        results = run_hooks(ctx.paths.hooks_dir, hpath, phase, str_env, ctx.hooks_timeout)
    except errors.GenericError as err:
        raise RpcFail(f"Cannot run hooks: {errors.format_error(err)}") from None
    return [(str(script), str(status), str(output)) for script, status, output in results]
