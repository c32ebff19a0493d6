"""What idle associations cost the node: the CPU an SCP process burns while N associations stay open with
nothing to say, the node's own AE (whose idle loops wait, ``gateways/dicom/idle.py``) against pynetdicom's
plain AE (both loops poll every 1 ms) in the same run; and the C-ECHO round trip after an idle pause on
each, to show that waiting does not make the first request of a busy spell slower.

The SCP runs in a subprocess (``--serve``), so the SCU's own polling threads are not counted."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from bench.common import percentile

TICKS = os.sysconf("SC_CLK_TCK")


def serve(kind: str) -> None:
    from gateways.dicom.node import _NodeAE

    ae = _NodeAE(ae_title="TELENET") if kind == "node" else AE(ae_title="TELENET")
    ae.maximum_associations = 1000
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent closes it
    server.shutdown()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(kind: str, associations: int, seconds: float, pause: float) -> tuple[float, float, float]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.dicom_idle", "--serve", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    scu = AE(ae_title="BENCH")
    scu.add_requested_context(Verification)
    scu.maximum_associations = associations + 1
    opened = [scu.associate("127.0.0.1", port, ae_title="TELENET") for _ in range(associations)]
    assert all(a.is_established for a in opened)
    time.sleep(1.0)  # past the busy spell of the negotiation
    before = cpu_seconds(child.pid)
    time.sleep(seconds)
    cores = (cpu_seconds(child.pid) - before) / seconds
    echoes: list[float] = []
    for assoc in opened[: min(20, associations)]:
        time.sleep(pause)
        started = time.perf_counter()
        assert assoc.send_c_echo().Status == 0
        echoes.append(time.perf_counter() - started)
    for assoc in opened:
        assoc.release()
    child.stdin.close()
    child.wait(timeout=30)
    return cores, percentile(echoes, 50), percentile(echoes, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.2, help="idle pause before each C-ECHO")
    parser.add_argument("--serve", choices=["node", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    results = {kind: measure(kind, args.associations, args.seconds, args.pause) for kind in ("plain", "node")}
    for kind, (cores, p50, p95) in results.items():
        name = "pynetdicom AE (anchor)" if kind == "plain" else "telenet node AE"
        print(
            f"{name:>24}: {cores * 100:6.1f} % of a core with {args.associations} idle associations; "
            f"C-ECHO after {args.pause:g} s idle: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
        )
    plain, node = results["plain"][0], results["node"][0]
    print(f"CPU ratio node/plain: {node / plain:.3f}" if plain else "the anchor burnt no CPU")


if __name__ == "__main__":
    main()
