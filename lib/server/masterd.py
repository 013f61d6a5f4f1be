"""The master daemon, and the composition root of the master side.

:class:`Master` builds every part and wires them: configuration, RPC runner,
the context LUs share, the processor (which builds the hooks masters), the
query resources, the job queue and the LUXI server in front of it.  Nothing
else constructs these, so each part only receives what it uses.

Startup order matters: the pid file lock comes first (a second instance must
fail before touching anything), the context and queue next, the socket last,
so clients never connect to a master that cannot serve them yet.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import Any

from ganeti import constants, crypto, daemon, errors, pathutils, query_resources
from ganeti.config import ConfigStore
from ganeti.context import MasterContext
from ganeti.jqueue import JobQueue
from ganeti.mcpu import Processor
from ganeti.rpc.client import RpcRunner
from ganeti.server import connlimit, luxi_methods, luxi_server

LOG = logging.getLogger("ganeti.masterd")

DEFAULT_WORKERS = 25
DEFAULT_MAX_JOBS = 10000
# Running opcodes get this long to finish on SIGTERM; leftovers recover at next start
SHUTDOWN_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=constants.MASTERD,
                                     description="Ganeti master daemon")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="Do not daemonize; log to stderr as well")
    parser.add_argument("-d", "--debug", action="store_true", help="Log debug messages")
    parser.add_argument("--root", metavar="DIR",
                        help="Run with every path under DIR (sets GANETI_ROOT)")
    connlimit.add_options(parser, luxi_server.DEFAULT_LIMITS, luxi_server.OPTION_FIELDS)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_rpc_runner(paths: pathutils.Paths, cfg: ConfigStore) -> RpcRunner:
    """The RPC runner, resolving node names through the live config."""
    def resolve(name: str) -> tuple[str, int, bool]:
        node = cfg.get_node_info_by_name(name)
        if node is None:
            raise KeyError(name)
        port = node.port or cfg.get_cluster_info().noded_port
        return node.primary_ip or name, port, node.offline

    def ssl_context() -> Any:
        return crypto.client_ssl_context(paths.node_cert_file, paths.cluster_ca_file)

    return RpcRunner(resolve, ssl_context, paths=paths)


def build_context(paths: pathutils.Paths) -> MasterContext:
    """Config, RPC runner and locks; every config write reaches the candidates
    (in the background, ``ganeti.config_distribution``)."""
    cfg = ConfigStore(paths.cluster_conf_file)
    context = MasterContext(paths, cfg, build_rpc_runner(paths, cfg))
    cfg.add_write_listener(context.on_config_written, with_data=False)  # it ignores the dict
    return context


def _queue_limits(context: MasterContext) -> tuple[int, int]:
    """(workers, max jobs) from the cluster config: max_running_jobs, max_queued_jobs."""
    try:
        cluster = context.cfg.get_cluster_info()
    except errors.GenericError:
        cluster = None
    workers = getattr(cluster, "max_running_jobs", None)
    max_jobs = getattr(cluster, "max_queued_jobs", None)
    return (workers if isinstance(workers, int) and workers > 0 else DEFAULT_WORKERS,
            max_jobs if isinstance(max_jobs, int) and max_jobs > 0 else DEFAULT_MAX_JOBS)


class Master:
    """Everything the running daemon owns, so startup and shutdown stay symmetric."""

    def __init__(self, paths: pathutils.Paths,
                 limits: connlimit.Limits = luxi_server.DEFAULT_LIMITS) -> None:
        self.paths = paths
        self.limits = limits
        self.context: MasterContext | None = None
        self.queue: JobQueue | None = None
        self.server: luxi_server.LuxiServer | None = None

    def start(self) -> None:
        self.context = build_context(self.paths)
        self.context.start_distribution()
        processor = Processor(self.context)
        query_resources.register_all()
        self.paths.queue_db.parent.mkdir(parents=True, exist_ok=True)
        workers, max_jobs = _queue_limits(self.context)
        self.queue = JobQueue(self.paths.queue_db, processor,
                              workers=workers, max_jobs=max_jobs)
        self.queue.start()
        backend = luxi_methods.MasterBackend(self.queue, self.context)
        # ganeti-query: where Ganeti 3.0's clients connect (its luxid's socket)
        self.server = luxi_server.LuxiServer(self.paths.master_socket,
                                             luxi_methods.build_method_table(backend),
                                             limits=self.limits,
                                             extra_addresses=(self.paths.query_socket,))
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.queue is not None:
            LOG.info("Shutting down the job queue")
            self.queue.shutdown(SHUTDOWN_TIMEOUT)
            self.queue = None
        if self.context is not None:
            # after the queue: the last jobs' writes get their chance to reach the candidates
            self.context.stop_distribution()
            try:
                # config.data alone is complete after a clean stop (tools read it)
                self.context.cfg.close()
            except errors.GenericError as err:
                LOG.error("Cannot fold the configuration journal into %s: %s",
                          self.context.cfg.path, err)
            self.context = None


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    paths = pathutils.current()

    def start() -> Any:
        daemon.return_large_buffers_to_the_os()  # --max-buffered bounds RSS, not just data
        master = Master(paths, connlimit.from_options(opts, luxi_server.DEFAULT_LIMITS))
        try:
            master.start()
        except BaseException:
            master.stop()
            raise
        # what start-up loaded (the configuration, the modules) lives as long as the
        # daemon: full collections need not traverse it again (at 10,000 instances
        # each one cost hundreds of milliseconds; doc/design.md "Queries")
        gc.freeze()
        LOG.info("Master daemon started (pid %d, root %s)", os.getpid(), paths.root)

        def stop() -> None:
            LOG.info("Master daemon stopping")
            master.stop()
            LOG.info("Master daemon stopped")
        return stop

    return daemon.run(constants.MASTERD, paths.pid_file(constants.MASTERD),
                      paths.log_file(constants.MASTERD), opts.foreground, opts.debug, start)


if __name__ == "__main__":
    sys.exit(main())
