# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs tests/dsm/dsm-ucx-floor between two aggvm-harness hosts: the raw
UCP figures (no libaggvm-dsm) that the benchmarks set beside the DSM's.

Call from inside `aggvm-harness run --hosts 2` (AGGVM_HOST{0,1}_NETNS and
_ADDR set).  UCX_TLS is tcp, the DSM's default transport: left to itself
UCX may pick shared memory across the namespaces, which the DSM does not use.
"""

import os
import subprocess


def run(ucx_floor, mode_args, timeout=120):
    """Server on host 0, client on host 1, both with mode_args (e.g.
    ["--sizes", "64"] or ["--bulk-mib", "320"]); returns the client's stdout
    and stderr."""
    port = 7400 + os.getpid() % 500
    ns0, ns1 = os.environ["AGGVM_HOST0_NETNS"], os.environ["AGGVM_HOST1_NETNS"]
    addr0 = os.environ["AGGVM_HOST0_ADDR"].split("/")[0]
    env = dict(os.environ, UCX_TLS="tcp")
    server = subprocess.Popen(["ip", "netns", "exec", ns0, ucx_floor, "server",
                               "--listen", f"{addr0}:{port}"] + mode_args,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        server.stdout.readline()  # "listening"
        out = subprocess.run(["ip", "netns", "exec", ns1, ucx_floor, "client",
                              "--connect", f"{addr0}:{port}"] + mode_args,
                             capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return out.stdout, out.stderr
