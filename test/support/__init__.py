"""Helpers shared by the tests and benchmarks (test/ is on sys.path; no tests here).

- ``cluster``: ``E2ECluster``, the local cluster the e2e and reliability tests drive
  (``gnt``, ``node``, ``instance_conf``), and the fixture factory starting one;
- ``rpc``: ``make_rpc_runner``, the master's real RPC runner for a config;
- ``loopback``: ``Env``, LUs on the real processor over an in-process RPC;
- ``jqueue_fakes``, ``luxi_fakes``: a scriptable executor, an in-memory job queue;
- ``masterd``: a ganeti-masterd process for daemon lifecycle tests;
- ``reliability``: the reliability suite's helpers (watcher, leftovers, raw LUXI/RPC);
- ``faultproxy``: a TCP proxy injecting network faults;
- ``fsfixture``: the reflink scratch filesystem (a pytest plugin, see test/conftest.py).
"""
