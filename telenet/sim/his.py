"""Simulated township HIS endpoints: they send ORM^O01 orders over MLLP and listen for ORU^R01 results."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.parser import parse_message

from gateways.hl7.ack import build_ack, parse_ack
from gateways.hl7.er7 import escape, format_ts, new_message, set_field
from gateways.hl7.mllp import frame, read_frame
from telenet.sim.world import Township
from telenet.waits import within

log = logging.getLogger(__name__)

_PROCEDURES = {
    "DX": ("DX0001", "胸部正位片", "CHEST"),
    "CT": ("CT0101", "头颅CT平扫", "HEAD"),
    "US": ("US0201", "腹部彩超", "ABDOMEN"),
    "ECG": ("ECG12", "常规十二导联心电图", "CHEST"),
}
_PRIORITY = {"stat": "S", "urgent": "A", "routine": "R"}


@dataclass(frozen=True)
class Order:
    accession_number: str
    kind: str
    modality: str
    priority: str
    patient_id: str
    family: str
    given: str
    sex: str
    birth_date: str
    national_id: str


def build_orm(order: Order, township: Township, control_id: str, now: datetime) -> bytes:
    """An ORM^O01 (2.5) new order with the patient, consent (CON) and the accession number in ORC-2/OBR-2."""
    code, text, body_part = _PROCEDURES[order.modality]
    m = new_message(
        "ORM_O01",
        "2.5",
        {
            3: "HIS",
            4: escape(township.facility),
            5: "TELENET",
            6: "TELENET",
            7: format_ts(now),
            9: "ORM^O01^ORM_O01",
            10: escape(control_id),
            11: "P",
            18: "UNICODE UTF-8",
        },
    )
    pid = m.add_segment("PID")
    for identifier in (
        f"{escape(order.patient_id)}^^^{escape(township.facility)}^PI",
        f"{order.national_id}^^^CHN^NNCHN",
    ):
        pid.add_field("pid_3").value = identifier  # two repetitions of PID-3: HIS id and national id
    set_field(pid, 5, f"{escape(order.family)}^{escape(order.given)}")
    set_field(pid, 7, order.birth_date)
    set_field(pid, 8, order.sex)
    orc = m.add_segment("ORC")
    set_field(orc, 1, "NW")
    set_field(orc, 2, escape(order.accession_number))
    set_field(orc, 7, f"^^^^^{_PRIORITY[order.priority]}")
    obr = m.add_segment("OBR")
    set_field(obr, 2, escape(order.accession_number))
    set_field(obr, 4, f"{code}^{text}^L")
    set_field(obr, 13, "模拟检查申请")
    set_field(obr, 15, f"^^^{body_part}")
    set_field(obr, 24, "EC" if order.kind == "ecg" else order.modality)
    set_field(obr, 27, f"^^^^^{_PRIORITY[order.priority]}")
    con = m.add_segment("CON")
    set_field(con, 1, "1")
    set_field(con, 13, format_ts(now))
    set_field(con, 24, "患者本人")
    return str(m.to_er7()).encode("utf-8")


#: Pauses before the resends of one message (each drawn from half to one and a half times this), as an interface
#: engine backs off: a message the hub did not acknowledge in time, or refused for now, is sent again.
RESEND_AFTER = (1.0, 2.0, 4.0, 8.0, 15.0)
#: Answers after which the same message is sent again: no ACK within the wait, a dropped connection or a frame
#: that is no ACK to it, an AE with error 207 (the hub could not take the message now: overload, a restart).
RESENT_ON = ("timeout", "error", "AE 207")


class OrderSender:
    """One MLLP connection per township, one message in flight at a time (as a HIS interface engine does).
    A message that got no ACK in time, or an AE 207, is resent (the same MSH-10, which the hub answers with the
    ACK it gave the first time if it kept it) up to ``len(RESEND_AFTER)`` times; ``resent`` counts why."""

    def __init__(self, host: str, port: int, township: Township, *, rng: random.Random | None = None) -> None:
        self.host = host
        self.port = port
        self.township = township
        self.rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._reused = False
        self.resent: Counter[str] = Counter()

    async def send(self, order: Order, ack_wait: float = 30.0) -> str:
        """Send the order and return the ACK code (AA, AE, AR), or "timeout"/"error" if every resend failed too."""
        control_id = f"{self.township.ae_title}-{next(self._ids)}"
        payload = frame(build_orm(order, self.township, control_id, datetime.now(UTC)))
        async with self._lock:
            outcome = await self._exchange(payload, control_id, ack_wait)
            if outcome == "error" and self._reused:  # the hub had closed the idle connection: a new one at once
                outcome = await self._exchange(payload, control_id, ack_wait)
            for pause in RESEND_AFTER:
                if outcome not in RESENT_ON:
                    break
                self.resent[outcome] += 1
                await asyncio.sleep(pause * self.rng.uniform(0.5, 1.5))
                outcome = await self._exchange(payload, control_id, ack_wait)
        if outcome in RESENT_ON:
            log.warning(
                "order %s not acknowledged after %d resends: %s", order.accession_number, len(RESEND_AFTER), outcome
            )
        return "AE" if outcome == "AE 207" else outcome

    async def _exchange(self, payload: bytes, control_id: str, ack_wait: float) -> str:
        """One try: the ACK code, "AE 207", "timeout" or "error" (the connection is closed after the last two)."""
        self._reused = self._streams is not None
        try:
            if self._streams is None:
                self._streams = await within(asyncio.open_connection(self.host, self.port), 10)
            reader, writer = self._streams
            writer.write(payload)
            await writer.drain()
            raw = await within(read_frame(reader), ack_wait)
            if raw is None:
                raise ConnectionError("hub closed the connection")
            ack = parse_ack(raw)
            if ack.control_id_acked != control_id:
                raise ConnectionError(f"ACK for {ack.control_id_acked}, expected {control_id}")
        except TimeoutError:
            await self.close()
            return "timeout"
        except (OSError, ConnectionError, ValueError) as exc:
            log.info("%s: %s", control_id, exc)
            await self.close()
            return "error"
        return "AE 207" if ack.ack_code == "AE" and ack.error_code == 207 else ack.ack_code

    async def close(self) -> None:
        if self._streams is not None:
            _, writer = self._streams
            self._streams = None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class ResultListener:
    """The HIS's inbound interface: receives ORU^R01 and answers AA; reports (accession, OBR-25 status)."""

    def __init__(self, port: int, on_result: Callable[[str, str, str], None]) -> None:
        self.port = port
        self.on_result = on_result
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await read_frame(reader)
                if raw is None:
                    return
                text = raw.decode("utf-8").replace("\n", "\r")
                message = parse_message(text, find_groups=False)
                control_id = message.msh.msh_10.value
                obr = message.obr
                accession = obr.obr_3.value.split("^")[0] or obr.obr_2.value.split("^")[0]
                status = obr.obr_25.value
                pid = message.pid.pid_5.value
                self.on_result(accession, status, pid)
                ack = build_ack(
                    ack_code="AA",
                    control_id_in=control_id,
                    facility_in=message.msh.msh_4.value,
                    version=message.msh.msh_12.value,
                    message_control_id=f"ACK-{control_id}",
                    now=datetime.now(UTC),
                    receiving_app="HIS",
                )
                writer.write(frame(ack))
                await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            log.warning("result listener on %d: %s", self.port, exc)
        finally:
            writer.close()
