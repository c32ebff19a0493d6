"""The node's maximum PDU against receive speed: the node's own AE class and PDU-limited socket answering
C-STORE at once (chunked receive to a temporary file, no index), fed 5.5 MB instances by one pynetdicom SCU;
each size in turn, alternated for a number of rounds, best time kept; the ratio is against unlimited (0)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateways.dicom.node import _NodeAE, nodelay
from tests.dicom_fixtures import large_instance

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def receive(datasets: list[pydicom.Dataset], max_pdu: int) -> float:
    node = _NodeAE(ae_title="TELENET")
    node.maximum_pdu_size = max_pdu
    node.add_supported_context(CTImageStorage, [EXPLICIT_LE])
    server = node.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda _e: 0), (evt.EVT_CONN_OPEN, nodelay)]
    )
    scu = AE(ae_title="BENCH")
    scu.add_requested_context(CTImageStorage, EXPLICIT_LE)
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="TELENET")
    assert assoc.is_established
    started = time.perf_counter()
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    elapsed = time.perf_counter() - started
    assoc.release()
    server.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="0,16384,65536,262144,1048576")
    args = parser.parse_args()
    _config.STORE_RECV_CHUNKED_DATASET = True
    directory = Path(tempfile.mkdtemp(prefix="bench-pdu-"))
    files = [large_instance(directory / f"{i}.dcm") for i in range(args.instances)]
    datasets = [pydicom.dcmread(f) for f in files]
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    best: dict[int, float] = {int(s): float("inf") for s in args.sizes.split(",")}
    for _ in range(args.rounds):
        for size in best:
            best[size] = min(best[size], receive(datasets, size))
    anchor = best.get(0)
    for size, seconds in best.items():
        ratio = f", {anchor / seconds:.2f}x unlimited" if anchor else ""
        print(f"max PDU {size:>8}: {megabytes / seconds:6.1f} MB/s ({megabytes:.1f} MB in {seconds:.3f} s){ratio}")


if __name__ == "__main__":
    main()
