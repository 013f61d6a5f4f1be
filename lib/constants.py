"""Cluster-wide constants: protocol values, defaults and names shared by modules."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from ganeti import __version__

# Opcode/job statuses (strings are part of the wire protocol)
OP_STATUS_QUEUED: Final = "queued"
OP_STATUS_WAITING: Final = "waiting"
OP_STATUS_CANCELING: Final = "canceling"
OP_STATUS_RUNNING: Final = "running"
OP_STATUS_CANCELED: Final = "canceled"
OP_STATUS_SUCCESS: Final = "success"
OP_STATUS_ERROR: Final = "error"
JOB_STATUS_ALL: Final = frozenset({
    OP_STATUS_QUEUED, OP_STATUS_WAITING, OP_STATUS_CANCELING, OP_STATUS_RUNNING,
    OP_STATUS_CANCELED, OP_STATUS_SUCCESS, OP_STATUS_ERROR,
})
JOBS_FINALIZED: Final = frozenset({OP_STATUS_CANCELED, OP_STATUS_SUCCESS, OP_STATUS_ERROR})

# Opcode priorities
OP_PRIO_LOWEST: Final = 19
OP_PRIO_HIGHEST: Final = -20
OP_PRIO_LOW: Final = 10
OP_PRIO_NORMAL: Final = 0
OP_PRIO_HIGH: Final = -10
OP_PRIO_SUBMIT_VALID: Final = frozenset({OP_PRIO_LOW, OP_PRIO_NORMAL, OP_PRIO_HIGH})

# Job log entry types
ELOG_MESSAGE: Final = "message"
ELOG_REMOTE_IMPORT: Final = "remote-import"
ELOG_JQUEUE_TEST: Final = "jqueue-test"
ELOG_PROGRESS: Final = "progress"

# Export / import
EXPORT_MODE_LOCAL: Final = "local"
EXPORT_MODE_REMOTE: Final = "remote"
EXPORT_MODES: Final = frozenset({EXPORT_MODE_LOCAL, EXPORT_MODE_REMOTE})
INSTANCE_CREATE: Final = "create"
INSTANCE_IMPORT: Final = "import"
INSTANCE_REMOTE_IMPORT: Final = "remote-import"
INSTANCE_CREATE_MODES: Final = frozenset({INSTANCE_CREATE, INSTANCE_IMPORT, INSTANCE_REMOTE_IMPORT})
EXPORT_CONF_FILE: Final = "config.ini"
EXPORT_VERSION: Final = 0
IEC_NONE: Final = "none"
IEC_ZSTD: Final = "zstd"
IEC_GZIP: Final = "gzip"
IEC_DEFAULT_TOOLS: Final = (IEC_NONE, IEC_ZSTD, IEC_GZIP)
DEFAULT_SHUTDOWN_TIMEOUT: Final = 120

# Hooks
HOOKS_VERSION: Final = 2
HOOKS_PHASE_PRE: Final = "pre"
HOOKS_PHASE_POST: Final = "post"
HOOKS_NAME_RE: Final = r"^[a-zA-Z0-9_-]+$"
HOOKS_PATH: Final = "/sbin:/bin:/usr/sbin:/usr/bin"
HKR_SKIP: Final = "skip"
HKR_FAIL: Final = "fail"
HKR_SUCCESS: Final = "success"
HTYPE_CLUSTER: Final = "CLUSTER"
HTYPE_NODE: Final = "NODE"
HTYPE_GROUP: Final = "GROUP"
HTYPE_INSTANCE: Final = "INSTANCE"
HTYPE_NETWORK: Final = "NETWORK"
DEFAULT_HOOK_TIMEOUT: Final = 300

# Daemons and ports
MASTERD: Final = "ganeti-masterd"
NODED: Final = "ganeti-noded"
DEFAULT_NODED_PORT: Final = 1811
RAPI: Final = "ganeti-rapi"
DEFAULT_RAPI_PORT: Final = 5080
# Ganeti's /version answer (the RAPI protocol version, not the release)
RAPI_VERSION: Final = 2
RAPI_IDLE_TIMEOUT: Final = 60.0
RAPI_REQUEST_TIMEOUT: Final = 30.0
RAPI_HANDSHAKE_TIMEOUT: Final = 10.0
# Node RPC protocol version: master and node daemons must agree on it
PROTOCOL_VERSION: Final = 2_160_000
# This software's release (QueryClusterInfo's software_version)
RELEASE_VERSION: Final = __version__
# What our own client sends; the server accepts every version in LUXI_ACCEPTED_VERSIONS
LUXI_VERSION: Final = 2_160_000
# LUXI version -> the release whose unpatched clients send it (doc/luxi.md lists them)
LUXI_ACCEPTED_VERSIONS: Final[Mapping[int, str]] = MappingProxyType({
    2_160_000: "Ganeti 2.16 (and this project's own clients)",
    3_000_000: "Ganeti 3.0",
})
LUXI_EOM: Final = b"\x03"
# tag kinds of LUXI's QueryTags (wire strings as in Ganeti)
TAG_CLUSTER: Final = "cluster"
TAG_NODE: Final = "node"
TAG_INSTANCE: Final = "instance"
TAG_NODEGROUP: Final = "nodegroup"
TAG_NETWORK: Final = "network"
LUXI_MAX_MESSAGE: Final = 16 * 1024 * 1024

# Connection limits of the daemons' servers (defaults of their command-line
# options, see ganeti.server.connlimit and doc/reliability.md "Connection abuse")
LUXI_MAX_CONNECTIONS: Final = 256
# Connections served at once: a long poll (/2/jobs/ID/wait) holds one, and one of
# masterd's LUXI connections; half of masterd's cap, so gnt-* always get in
RAPI_MAX_CONNECTIONS: Final = LUXI_MAX_CONNECTIONS // 2
LUXI_IDLE_TIMEOUT: Final = 600.0
LUXI_REQUEST_TIMEOUT: Final = 60.0
# bytes all unfinished LUXI requests together may hold in memory
LUXI_MAX_BUFFERED: Final = 4 * LUXI_MAX_MESSAGE
NODED_MAX_CONNECTIONS: Final = 512
NODED_IDLE_TIMEOUT: Final = 300.0
NODED_REQUEST_TIMEOUT: Final = 120.0
NODED_HANDSHAKE_TIMEOUT: Final = 10.0

# Instance states
ADMINST_UP: Final = "up"
ADMINST_DOWN: Final = "down"
ADMINST_OFFLINE: Final = "offline"
ADMINST_ALL: Final = frozenset({ADMINST_UP, ADMINST_DOWN, ADMINST_OFFLINE})
# who set the admin state: an administrator, or the instance itself (user shutdown)
ADMIN_SOURCE: Final = "admin"
USER_SOURCE: Final = "user"

# Disk access modes
DISK_RDWR: Final = "rw"
DISK_RDONLY: Final = "ro"

# Disk templates
DT_FILE: Final = "file"
DT_PLAIN: Final = "plain"
DT_DISKLESS: Final = "diskless"
DISK_TEMPLATES: Final = frozenset({DT_FILE, DT_PLAIN, DT_DISKLESS})
# Ganeti's backend parameter defaults (its BEC_DEFAULTS): hooks show and exports write
# every backend parameter, also those a cluster leaves unset
BE_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType({
    "always_failover": False, "auto_balance": True, "maxmem": 128, "minmem": 128,
    "spindle_use": 1, "vcpus": 1,
})
# The volume group of plain disks unless the cluster names one (Ganeti's default)
DEFAULT_VG: Final = "xenvg"
# First three bytes of generated MAC addresses (Ganeti's default prefix)
MAC_PREFIX: Final = "aa:00:00"
# How many nodes hold a copy of the configuration (Ganeti's candidate pool size)
CANDIDATE_POOL_SIZE: Final = 10
# Snapshots are named "<disk><SNAP_MARKER><snap name>" so leftovers are recognisable
# (by the disk drivers on the nodes and the maintenance LU on the master)
SNAP_MARKER: Final = ".snap-"

# Hypervisors
HT_FAKE: Final = "fake"
HT_PROCESS: Final = "process"
HT_KVM: Final = "kvm"
HYPER_TYPES: Final = frozenset({HT_FAKE, HT_PROCESS, HT_KVM})

# Config
CONFIG_VERSION: Final = 1

# the built-in instance allocator (ganeti.cmdlib.iallocator) and Ganeti's "-I ." (the
# cluster's default allocator, which is that one here)
IALLOCATOR_HAIL = "hail"
DEFAULT_IALLOCATOR_SHORTCUT = "."

# gnt-cluster verify: the optional checks (skip_checks) and, as Ganeti names them, the
# (item type, code) of each problem --error-codes prints as ERROR:CODE:TYPE:ITEM:MESSAGE
VERIFY_NPLUSONE_MEM: Final = "nplusone_mem"
VERIFY_OPTIONAL_CHECKS: Final = frozenset({VERIFY_NPLUSONE_MEM})
CV_ECLUSTERCFG: Final = ("cluster", "ECLUSTERCFG")
CV_ENODERPC: Final = ("node", "ENODERPC")
CV_ENODEVERSION: Final = ("node", "ENODEVERSION")
CV_ENODEHOOKS: Final = ("node", "ENODEHOOKS")
CV_ENODEN1: Final = ("node", "ENODEN1")
CV_ENODESETUP: Final = ("node", "ENODESETUP")
# ours (Ganeti has no file-disk orphan or export-leftover check)
CV_ENODEORPHANFILE: Final = ("node", "ENODEORPHANFILE")
CV_ENODEEXPORTLEFTOVER: Final = ("node", "ENODEEXPORTLEFTOVER")
