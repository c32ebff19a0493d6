"""DICOM ingest: the same dcmtk ``storescu`` runs into telenet (``telenet serve``, SQLite) and into Orthanc on
this machine, small and large (≥ 5 MB, generated) instances, one association then several in parallel, and
100 simultaneous associations. Reports images/s, MB/s and telenet/Orthanc ratios.

    .venv/bin/python bench/dicom_ingest.py [--small 400] [--large 16] [--parallel 4] [--simultaneous 100]

Every run sends distinct instances (no duplicates); dcmtk and Orthanc run with TCP_NODELAY=1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import HubProcess, free_port
from tests.dicom_fixtures import TOWNSHIP_AE, large_instance, series_of

ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class Target:
    name: str
    ae_title: str
    port: int


@dataclass
class Run:
    images: int
    megabytes: float
    seconds: float
    failures: int

    @property
    def images_s(self) -> float:
        return self.images / self.seconds

    @property
    def mb_s(self) -> float:
        return self.megabytes / self.seconds


DCMTK_STORESCU = "/usr/bin/storescu"


def storescu(target: Target, files: list[Path]) -> int:
    done = subprocess.run(
        [DCMTK_STORESCU, "-aet", TOWNSHIP_AE, "-aec", target.ae_title, "127.0.0.1", str(target.port), *map(str, files)],
        env=ENV,
        capture_output=True,
    )
    return done.returncode


def run(target: Target, batches: list[list[Path]]) -> Run:
    """One storescu process (one association) per batch, all at once."""
    size = sum(p.stat().st_size for batch in batches for p in batch) / 1e6
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        codes = list(pool.map(lambda b: storescu(target, b), batches))
    elapsed = time.perf_counter() - started
    return Run(sum(len(b) for b in batches), size, elapsed, sum(1 for c in codes if c != 0))


def split(files: list[Path], parts: int) -> list[list[Path]]:
    return [files[i::parts] for i in range(parts)]


class Orthanc:
    def __init__(self, workdir: Path) -> None:
        self.dicom_port, self.http_port = free_port(), free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "orthanc.json"
        config.write_text(
            json.dumps(
                {
                    "Name": "bench",
                    "StorageDirectory": str(workdir / "storage"),
                    "IndexDirectory": str(workdir / "storage"),
                    "DicomAet": "ORTHANC",
                    "DicomPort": self.dicom_port,
                    "HttpPort": self.http_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomAlwaysAllowStore": True,
                    "DicomCheckCalledAet": False,
                    "Plugins": [],
                }
            )
        )
        self.proc = subprocess.Popen(
            ["Orthanc", str(config)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/system", timeout=2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def prepare(root: Path, small: int, large: int, parallel: int, simultaneous: int) -> dict[str, list[Path]]:
    sets = {
        "small-1": series_of(root / "small-1", small),
        "small-n": series_of(root / "small-n", small),
        "large-1": [large_instance(root / "large-1" / f"{i:03d}.dcm") for i in range(large)],
        "large-n": [large_instance(root / "large-n" / f"{i:03d}.dcm") for i in range(large)],
        "simultaneous": series_of(root / "simultaneous", simultaneous),
    }
    return sets


def measure(target: Target, sets: dict[str, list[Path]], parallel: int) -> dict[str, Run]:
    return {
        "small, 1 association": run(target, [sets["small-1"]]),
        f"small, {parallel} associations": run(target, split(sets["small-n"], parallel)),
        "large, 1 association": run(target, [sets["large-1"]]),
        f"large, {parallel} associations": run(target, split(sets["large-n"], parallel)),
        f"{len(sets['simultaneous'])} simultaneous associations": run(target, [[p] for p in sets["simultaneous"]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--large", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--simultaneous", type=int, default=100)
    args = parser.parse_args()
    # dcmtk by its Debian path: pynetdicom puts a slower Python app of the same name into .venv/bin.
    if not Path(DCMTK_STORESCU).exists() or not shutil.which("Orthanc"):
        raise SystemExit("needs dcmtk's storescu and Orthanc (apt-get install dcmtk orthanc)")
    root = Path(tempfile.mkdtemp(prefix="dicom-bench-"))
    print(f"generating instances in {root} ...", flush=True)
    sets = prepare(root / "files", args.small, args.large, args.parallel, args.simultaneous)
    small_kb = sets["small-1"][0].stat().st_size / 1e3
    large_mb = sets["large-1"][0].stat().st_size / 1e6
    print(f"small instance {small_kb:.1f} kB, large instance {large_mb:.2f} MB", flush=True)

    dicom_port = free_port()
    hub = HubProcess(env_extra={"TELENET_DICOM_ENABLED": "1", "TELENET_DICOM_PORT": str(dicom_port)})
    hub.prepare()
    hub.start()
    try:
        telenet = measure(Target("telenet", "TELENET", dicom_port), sets, args.parallel)
    finally:
        hub.stop()
    orthanc_proc = Orthanc(root / "orthanc")
    try:
        orthanc = measure(Target("orthanc", "ORTHANC", orthanc_proc.dicom_port), sets, args.parallel)
    finally:
        orthanc_proc.stop()

    print()
    print("| run | telenet images/s | telenet MB/s | Orthanc images/s | Orthanc MB/s | ratio (images/s) | failures |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, ours in telenet.items():
        theirs = orthanc[key]
        print(
            f"| {key} | {ours.images_s:.0f} | {ours.mb_s:.1f} | {theirs.images_s:.0f} | {theirs.mb_s:.1f} "
            f"| {ours.images_s / theirs.images_s:.2f} | {ours.failures}/{theirs.failures} |"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
