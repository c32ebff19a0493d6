"""The network simulator against a hub with every interface on (HL7/MLLP, DICOM, REST, WebSocket):
30 seconds of orders with zero lost messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import DEMO, PASSWORD, HubProcess, free_port


def patched_network(tmp_path: Path) -> Path:
    """The demo network with the township HIS result destination on a free port of this machine."""
    doc = json.loads(DEMO.read_text(encoding="utf-8"))
    for inst in doc["institutions"]:
        if inst["code"] == "NL-C01-K01-T01":
            inst["hl7_destination"] = {"host": "127.0.0.1", "port": free_port()}
    path = tmp_path / "network.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_thirty_seconds_of_simulated_province_traffic_loses_nothing(tmp_path: Path) -> None:
    network = patched_network(tmp_path)
    hub = HubProcess(
        network=network,
        protocols=True,
        env_extra={"TELENET_STUDY_QUIET_SECONDS": "1", "TELENET_SWEEP_INTERVAL_SECONDS": "1"},
    )
    hub.prepare()
    accounts = tmp_path / "accounts.txt"
    users = hub.set_all_passwords()
    accounts.write_text("".join(f"{u} {PASSWORD}\n" for u in users), encoding="utf-8")
    hub.start()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "telenet.cli",
                "simulate",
                "--hub",
                hub.url,
                "--duration",
                "30",
                "--rate",
                "0.7",
                "--network",
                str(network),
                "--accounts",
                str(accounts),
                "--drain",
                "45",
                "--json",
                "--seed",
                "7",
            ],
            capture_output=True,
            text=True,
            timeout=150,
            env=hub.env,
        )
    finally:
        hub.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0, summary
    # The simulator's log names each error (its summary only counts them by kind).
    assert summary["orders"] >= 10 and summary["errors"] == {}, (summary, done.stderr[-3000:])
    assert set(summary["hl7_acks"]) == {"AA"}
    finals = sum(n for key, n in summary["by_kind_and_state"].items() if key.endswith("/final"))
    assert finals >= summary["orders"] - sum(summary["explained_unfinished"].values())
    imaging_ecg_finals = sum(
        n
        for key, n in summary["by_kind_and_state"].items()
        if key.endswith("/final") and not key.startswith("consultation")
    )
    assert summary["results_received"] >= imaging_ecg_finals, "every imaging/ECG final reached the HIS as ORU"
