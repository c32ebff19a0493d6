"""DICOMweb side by side: the hub (``telenet serve``, SQLite) and Orthanc with its DICOMweb plugin, in one run.

- STOW-RS of 100 small instances (CT_small, ~39 KB) in one multipart request: instances/s.
- WADO-RS retrieve of that 100-instance study (``transfer-syntax=*``), 5 times: MB/s.
- QIDO-RS study search (PatientID exact, one client, sequential): p50/p99 ms and queries/s, on both with the
  same content; then both again with ``--studies`` more studies (one per patient): the hub's bulk-inserted
  into its index, Orthanc's uploaded over its REST API by four clients (at most ``--seed-seconds``; the
  number it reached is printed).

Besides the rates, each server's own CPU time per operation (``/proc/<pid>/stat``, all its threads) is
printed: on a shared machine the rates move with the load, the CPU a request costs much less.
The servers take turns, ``--rounds`` times (each round stores a new study); figures are the medians.

    .venv/bin/python -m bench.dicomweb [--studies 100000] [--queries 500] [--rounds 3] [--seed-seconds 900]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import requests
from pydicom.filebase import DicomBytesIO

from bench.common import PASSWORD, HubProcess, free_port, percentile
from tests.dicom_fixtures import instance

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def orthanc(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(workdir / "storage"),
                "IndexDirectory": str(workdir / "storage"),
                "DicomPort": free_port(),
                "HttpPort": port,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "Plugins": [PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            }
        )
    )
    proc = subprocess.Popen(["Orthanc", str(config)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=2):
                return proc, f"http://127.0.0.1:{port}/dicom-web"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("Orthanc did not start")


def instances(count: int) -> tuple[str, list[bytes]]:
    first = instance("CT_small.dcm", patient_id="BENCH0001")
    datasets = [first] + [
        instance(
            "CT_small.dcm", study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, patient_id="BENCH0001"
        )
        for _ in range(count - 1)
    ]
    out = []
    for ds in datasets:
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(bytes(buffer.getvalue()))
    return str(first.StudyInstanceUID), out


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for data in files:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds a server spent between ``start()`` and ``stop()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.began = 0.0

    def start(self) -> None:
        self.began = cpu_seconds(self.pid)

    def stop(self) -> float:
        return cpu_seconds(self.pid) - self.began


def stow(session: requests.Session, root: str, files: list[bytes]) -> float:
    body, content_type = multipart(files)
    start = time.perf_counter()
    resp = session.post(f"{root}/studies", data=body, headers={"Content-Type": content_type}, timeout=300)
    elapsed = time.perf_counter() - start
    assert resp.status_code == 200, resp.text[:500]
    return len(files) / elapsed


def wado(session: requests.Session, root: str, study: str, rounds: int = 5) -> float:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    total, start = 0, time.perf_counter()
    for _ in range(rounds):
        resp = session.get(f"{root}/studies/{study}", headers={"Accept": accept}, timeout=300, stream=True)
        assert resp.status_code == 200, resp.status_code
        for chunk in resp.iter_content(1 << 20):
            total += len(chunk)
    return total / 1e6 / (time.perf_counter() - start)


def qido(session: requests.Session, root: str, patient_ids: list[str], queries: int) -> dict[str, float]:
    latencies = []
    rng = random.Random(7)
    start = time.perf_counter()
    for _ in range(queries):
        began = time.perf_counter()
        resp = session.get(f"{root}/studies", params={"PatientID": rng.choice(patient_ids), "limit": "25"}, timeout=30)
        assert resp.status_code == 200, resp.status_code
        resp.json()
        latencies.append((time.perf_counter() - began) * 1000)
    elapsed = time.perf_counter() - start
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "qps": queries / elapsed}


def seed_hub(database_url: str, count: int) -> tuple[float, list[str]]:
    """``count`` studies of the township clinic bulk-inserted into the index (one instance each, counted)."""

    async def insert() -> list[str]:
        from datetime import UTC, datetime

        from sqlalchemy import insert, select

        from telenet.store.db import create_engine
        from telenet.store.models import DicomStudy, Institution

        engine = create_engine(database_url)
        now = datetime.now(UTC)
        try:
            async with engine.begin() as conn:
                inst = (
                    await conn.execute(
                        select(Institution.id, Institution.path).where(Institution.code == "NL-C01-K01-T01")
                    )
                ).one()
                ids = [f"S{i:07d}" for i in range(count)]
                rows = [
                    {
                        "study_instance_uid": f"2.25.{uuid.uuid4().int}",
                        "source_institution_id": inst[0],
                        "source_path": inst[1],
                        "calling_ae": "BENCH",
                        "patient_id": pid,
                        "patient_name": f"PATIENT^{pid}",
                        "study_date": f"2026{1 + i % 12:02d}{1 + i % 28:02d}",
                        "modalities": ["CT"],
                        "instance_count": 1,
                        "total_bytes": 1,
                        "first_received_at": now,
                        "last_received_at": now,
                        "mpps_waiting": False,
                    }
                    for i, pid in enumerate(ids)
                ]
                for offset in range(0, len(rows), 5000):
                    await conn.execute(insert(DicomStudy), rows[offset : offset + 5000])
            return ids
        finally:
            await engine.dispose()

    start = time.perf_counter()
    ids = asyncio.run(insert())
    return time.perf_counter() - start, ids


def tiny_instance(patient_id: str) -> bytes:
    """A small CT instance without pixel data (one study of its own) for loading Orthanc."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, f"PATIENT^{patient_id}", "CT"
    ds.StudyDate = "20260101"
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return bytes(buffer.getvalue())


def seed_orthanc(rest: str, ids: list[str], budget_s: float) -> tuple[float, int]:
    """One study per id uploaded to Orthanc's REST API (POST /instances) by four clients, for at most
    ``budget_s`` seconds; the time taken and how many were stored."""
    import concurrent.futures
    import threading

    deadline = time.monotonic() + budget_s
    lock = threading.Lock()
    stored = 0
    start = time.perf_counter()

    def load(chunk: list[str]) -> None:
        nonlocal stored
        with requests.Session() as session:
            for pid in chunk:
                if time.monotonic() > deadline:
                    return
                resp = session.post(f"{rest}/instances", data=tiny_instance(pid), timeout=60)
                assert resp.status_code == 200, resp.text[:200]
                with lock:
                    stored += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(load, [ids[i::4] for i in range(4)]))
    return time.perf_counter() - start, stored


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "stow": statistics.median(r["stow"] for r in rounds),
        "wado": statistics.median(r["wado"] for r in rounds),
        "qido": {k: statistics.median(r["qido"][k] for r in rounds) for k in ("p50", "p99", "qps")},
        "cpu": {k: statistics.median(r["cpu"][k] for r in rounds) for k in ("stow", "wado", "qido")},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed-seconds", type=float, default=900.0, help="at most this long loading Orthanc")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    hub = HubProcess()
    hub.prepare()
    hub.set_password("township_doc")
    hub.start()
    orthanc_proc, orthanc_root = orthanc(work / "orthanc")
    try:
        token = requests.post(
            f"{hub.url}/api/v1/auth/token", json={"username": "township_doc", "password": PASSWORD}, timeout=30
        ).json()["token"]
        hub_session = requests.Session()
        hub_session.headers["Authorization"] = f"Bearer {token}"
        orthanc_session = requests.Session()
        hub_root = f"{hub.url}/dicom-web"

        def hub_pid() -> int:
            assert hub.proc is not None  # restarted after the bulk insert: ask each time
            return hub.proc.pid

        targets = (
            ("telenet", hub_session, hub_root, hub_pid),
            ("Orthanc", orthanc_session, orthanc_root, lambda: orthanc_proc.pid),
        )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in targets}
        # Rounds alternate between the two servers so that both see the same load on a shared machine;
        # each figure is the median of the rounds.
        for _ in range(args.rounds):
            for name, session, root, process in targets:
                study, files = instances(100)
                cpu = Cpu(process())
                cpu.start()
                stow_rate = stow(session, root, files)
                stow_cpu = cpu.stop() * 1000 / len(files)
                cpu.start()
                wado_rate = wado(session, root, study)
                wado_cpu = cpu.stop() * 1000 / 5
                cpu.start()
                qido_figures = qido(session, root, ["BENCH0001", "NOBODY"], args.queries)
                qido_cpu = cpu.stop() * 1000 / args.queries
                runs[name].append(
                    {
                        "stow": stow_rate,
                        "wado": wado_rate,
                        "qido": qido_figures,
                        "cpu": {"stow": stow_cpu, "wado": wado_cpu, "qido": qido_cpu},
                    }
                )
        results = {name: _median(rounds) for name, rounds in runs.items()}
        hub.stop()
        seconds, ids = seed_hub(hub.env["TELENET_DATABASE_URL"], args.studies)
        hub.start()
        orthanc_seconds, orthanc_count = seed_orthanc(orthanc_root.removesuffix("/dicom-web"), ids, args.seed_seconds)
        large: dict[str, dict[str, list[float]]] = {name: {} for name, *_ in targets}
        for _ in range(args.rounds):
            for name, session, root, process in targets:
                pool = ids if name == "telenet" else ids[:orthanc_count]
                cpu = Cpu(process())
                cpu.start()
                figures = qido(session, root, pool, args.queries)
                figures["cpu"] = cpu.stop() * 1000 / args.queries
                for key, value in figures.items():
                    large[name].setdefault(key, []).append(value)
        big = {name: {k: statistics.median(v) for k, v in figures.items()} for name, figures in large.items()}
    finally:
        hub.stop()
        orthanc_proc.terminate()
        orthanc_proc.wait(timeout=30)
    print("| measure | telenet | Orthanc (DICOMweb plugin) | ratio |")
    print("|---|---|---|---|")
    t, o = results["telenet"], results["Orthanc"]

    def row(label: str, ours: float, theirs: float, digits: int = 0) -> None:
        print(f"| {label} | {ours:.{digits}f} | {theirs:.{digits}f} | {ours / theirs:.2f} |")

    row("STOW-RS 100 small instances, instances/s", t["stow"], o["stow"])
    row("WADO-RS retrieve of the 100-instance study, MB/s", t["wado"], o["wado"])
    for key, label in (("p50", "QIDO-RS p50 ms"), ("p99", "QIDO-RS p99 ms"), ("qps", "QIDO-RS queries/s")):
        row(f"{label} (2 studies)", t["qido"][key], o["qido"][key], 1)
    for key, label in (("p50", "QIDO-RS p50 ms"), ("p99", "QIDO-RS p99 ms"), ("qps", "QIDO-RS queries/s")):
        row(f"{label} ({args.studies:,} / {orthanc_count:,} studies)", big["telenet"][key], big["Orthanc"][key], 1)
    row("server CPU ms per STOW-RS instance", t["cpu"]["stow"], o["cpu"]["stow"], 2)
    row("server CPU ms per WADO-RS study retrieve", t["cpu"]["wado"], o["cpu"]["wado"], 1)
    row("server CPU ms per QIDO-RS query (2 studies)", t["cpu"]["qido"], o["cpu"]["qido"], 2)
    row("server CPU ms per QIDO-RS query (large)", big["telenet"]["cpu"], big["Orthanc"]["cpu"], 2)
    print(
        f"\nloaded: telenet {args.studies:,} studies bulk-inserted into its index in {seconds:.1f} s; "
        f"Orthanc {orthanc_count:,} studies over REST in {orthanc_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
