"""Running hook scripts on behalf of the master."""

from __future__ import annotations

from ganeti import constants, errors
from ganeti.backend import NodeContext, RpcFail
from ganeti.rpc import encoders
from ganeti.rpc.contract import procedure

_PHASES = (constants.HOOKS_PHASE_PRE, constants.HOOKS_PHASE_POST)


@procedure("slow", encoders={"env": encoders.string_env})
def hooks_runner(ctx: NodeContext, hpath: str, phase: str,
                 env: dict[str, str]) -> list[list[str]]:
    """Run hook scripts (<hpath>-<phase>.d); payload [[script, status, output], ...]."""
    if not hpath:
        raise RpcFail(f"Invalid hooks path {hpath!r}")
    if phase not in _PHASES:
        raise RpcFail(f"Invalid hooks phase {phase!r}")
    try:
        # Imported lazily: the runner lives in its own package and is only
        # needed when the master actually has hooks to run.
        from ganeti.hooks.runner import run_hooks
    except ImportError as err:
        raise RpcFail(f"Hooks runner not available on this node: {err}") from None
    try:
        results = run_hooks(ctx.paths.hooks_dir, hpath, phase, env, ctx.hooks_timeout)
    except errors.GenericError as err:
        raise RpcFail(f"Cannot run hooks: {errors.format_error(err)}") from None
    return [[str(script), str(status), str(output)] for script, status, output in results]
