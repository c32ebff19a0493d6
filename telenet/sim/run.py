"""`telenet simulate`: order, acquire, read, sign, acknowledge — for a while, at a rate — then a summary."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from telenet.sim.actors import Api, Behaviour, Clinic, Reader, follow
from telenet.sim.his import RESEND_AFTER, OrderSender, ResultListener
from telenet.sim.his import Order as HL7Order
from telenet.sim.modality import perform_imaging, send_ecg
from telenet.sim.tally import RETURNED, STILL_WORKING, Tally, Tracked
from telenet.sim.world import Township, World, load_world

log = logging.getLogger(__name__)

#: Simulated modalities working at once (each on a thread of its own: pynetdicom's associations block).
MODALITIES_AT_ONCE = 64
#: Logins in flight at once while everyone logs in before the first order.
LOGINS_AT_ONCE = 32
MODALITIES = {"imaging": ("DX", "CT", "US"), "ecg": ("ECG",)}
FAMILIES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗梁"
GIVEN = ["建国", "秀英", "桂兰", "志强", "丽华", "海燕", "国庆", "春梅", "晓东", "文军"]


@dataclass
class SimConfig:
    hub: str
    network: Path
    accounts: Path
    duration: float = 60.0
    rate: float = 1.0
    mix: dict[str, float] = field(default_factory=lambda: {"imaging": 0.6, "ecg": 0.3, "consultation": 0.1})
    seed: int = 1
    drain: float = 60.0
    live: bool = True
    behaviour: Behaviour = field(default_factory=Behaviour)


def parse_mix(text: str) -> dict[str, float]:
    """``imaging=0.6,ecg=0.3,consultation=0.1`` (weights; they need not add up to 1)."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in ("imaging", "ecg", "consultation"):
            raise ValueError(f"unknown kind {name!r} in --mix")
        mix[name.strip()] = float(weight)
    if not any(w > 0 for w in mix.values()):
        raise ValueError("--mix needs a positive weight")
    return mix


@dataclass
class HubEndpoint:
    """One hub process: its REST/WebSocket API and the protocol listeners it reports at /healthz."""

    api: Api
    interfaces: dict[str, Any]


class Simulation:
    def __init__(self, config: SimConfig, world: World) -> None:
        self.config = config
        self.world = world
        self.rng = random.Random(config.seed)
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.counter = itertools.count(1)
        self.hubs: list[HubEndpoint] = []
        self.senders: dict[str, OrderSender] = {}
        self.login_seconds = 0.0
        self.associations_refused = 0
        self._refusals_lock = threading.Lock()

    async def run(self) -> dict[str, Any]:
        # The modalities' blocking associations run on threads: as many at once as the township devices of a
        # busy county would have, not the default pool's handful (min(32, cores + 4)), which would cap the
        # simulated province at a few exams at a time.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(MODALITIES_AT_ONCE, thread_name_prefix="modality")
        )
        async with aiohttp.ClientSession() as session:
            for url in self.config.hub.split(","):
                api = Api(url.strip().rstrip("/"), session, self.world.passwords, random.Random(self.rng.random()))
                async with session.get(f"{api.base_url}/healthz") as resp:
                    self.hubs.append(HubEndpoint(api, (await resp.json()).get("interfaces", {})))
            listeners = [
                ResultListener(port, lambda acc, status, _n: self.tally.on_result(acc, status))
                for port in sorted({t.hl7_port for t in self.world.townships if t.hl7_port})
            ]
            for listener in listeners:
                await listener.start()
            started = time.monotonic()
            failed_logins = await self._log_in_everyone()
            self.login_seconds = time.monotonic() - started
            followers = self._followers()
            await asyncio.sleep(1.0)  # let every live channel subscribe before the first order
            try:
                await self._order_for()
                await self._drain()
            finally:
                self.stop.set()
                for task in [*followers, *self.tasks]:
                    task.cancel()
                await asyncio.gather(*followers, *self.tasks, return_exceptions=True)
                for listener in listeners:
                    await listener.stop()
                for sender in self.senders.values():
                    await sender.close()
        summary = self.tally.summary(set(self.world.readers))
        # What the peers sent again after the hub refused it for now or did not answer in time (not errors:
        # an order acknowledged on a resend is acknowledged; one never acknowledged is counted as such).
        retried: Counter[str] = Counter()
        for hub in self.hubs:
            retried.update(hub.api.retried)
        for sender in self.senders.values():
            retried.update({f"HL7 {why}": n for why, n in sender.resent.items()})
        if self.associations_refused:
            retried["DICOM association refused"] = self.associations_refused
        summary["retried"] = dict(sorted(retried.items()))
        summary["logins"] = {"seconds": round(self.login_seconds, 1), "failed": failed_logins}
        return summary

    def hub_for(self, index: int) -> HubEndpoint:
        """Townships and centers are spread over the hub processes (several behind a load balancer)."""
        return self.hubs[index % len(self.hubs)]

    async def _log_in_everyone(self) -> int:
        """Every simulated reader and clinic logs in before the first order (the people of a peak hour are at
        work already when it starts), a few dozen at a time as people arrive, each trying a 503 again; the
        time this takes is reported apart (``logins``). Returns how many could not log in (their followers
        keep trying)."""
        people = [(self.hub_for(n).api, username) for n, username in enumerate(self.world.readers.values())]
        people += [
            (self.hub_for(n).api, t.requester) for n, t in enumerate(self.world.townships) if t.requester is not None
        ]
        at_once = asyncio.Semaphore(LOGINS_AT_ONCE)

        async def log_in(api: Api, username: str) -> bool:
            async with at_once:
                try:
                    await api.token(username)
                except RuntimeError as exc:
                    log.warning("%s", exc)
                    return False
                return True

        done = await asyncio.gather(*(log_in(api, username) for api, username in people))
        return sum(1 for ok in done if not ok)

    def _followers(self) -> list[asyncio.Task[None]]:
        tasks = []
        for n, (center, username) in enumerate(self.world.readers.items()):
            api = self.hub_for(n).api
            top = self.world.center_tiers.get(center) == "province"
            reader = Reader(
                api, username, center, top, self.config.behaviour, random.Random(self.rng.random()), self.tally.error
            )
            tasks.append(asyncio.create_task(follow(api, username, [f"worklist:{center}"], reader.on_event, self.stop)))
        for n, township in enumerate(self.world.townships):
            api = self.hub_for(n).api
            if township.requester is None:
                continue
            clinic = Clinic(api, township.requester, self.tally.error)

            def on_event(message: dict[str, Any], clinic: Clinic = clinic) -> None:
                self.tally.on_event(message)
                clinic.on_event(message)

            tasks.append(
                asyncio.create_task(follow(api, township.requester, [f"requests:{township.code}"], on_event, self.stop))
            )
        return tasks

    async def _order_for(self) -> None:
        kinds = list(self.config.mix)
        weights = [self.config.mix[k] for k in kinds]
        deadline = time.monotonic() + self.config.duration
        with _progress(self) as refresh:
            while time.monotonic() < deadline:
                await asyncio.sleep(self.rng.expovariate(self.config.rate))
                kind = self.rng.choices(kinds, weights)[0]
                n = self.rng.randrange(len(self.world.townships))
                township, hub = self.world.townships[n], self.hub_for(n)
                work = self._consult(hub.api, township) if kind == "consultation" else self._order(hub, township, kind)
                task = asyncio.create_task(work)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                refresh()

    def _patient(self) -> tuple[str, str, str, str]:
        n = next(self.counter)
        return f"SIMP{n:07d}", self.rng.choice(FAMILIES), self.rng.choice(GIVEN), f"{n:07d}"

    async def _consult(self, api: Api, township: Township) -> None:
        if township.requester is None:
            return
        patient_id, family, given, _ = self._patient()
        priority = self.rng.choice(["urgent", "routine"])
        body = {
            "kind": "consultation",
            "priority": priority,
            "clinical_question": "模拟会诊：请协助诊治",
            "subspecialty": "cardiology",
            "patient": {"id": patient_id, "name": family + given, "sex": "F"},
            "consent": {"given_by": "患者本人", "given_at": "2026-01-01T08:00:00+08:00"},
        }
        status, view = await api.post(township.requester, "/api/v1/requests", body)
        if status != 201:
            self.tally.error(f"consultation {status}")
            return
        tracked = Tracked(
            view["accession_number"],
            "consultation",
            priority,
            township.code,
            request_id=view["id"],
            ack="AA",
            state=view["state"],
            center=view["center"]["code"],
        )
        self.tally.add(tracked)
        self.tally.by_id[view["id"]] = tracked

    async def _order(self, hub: HubEndpoint, township: Township, kind: str) -> None:
        patient_id, family, given, serial = self._patient()
        modality = self.rng.choice(MODALITIES[kind])
        accession = f"S{self.config.seed % 100:02d}{next(self.counter):09d}"[:16]
        priority = self.rng.choices(["stat", "urgent", "routine"], [0.15, 0.25, 0.6])[0]
        order = HL7Order(
            accession, kind, modality, priority, patient_id, family, given, "F", "19700101", _national_id(serial)
        )
        tracked = Tracked(accession, kind, priority, township.code)
        self.tally.add(tracked)
        hl7 = hub.interfaces.get("hl7") or {}
        sender = self.senders.get(township.code)
        if sender is None:
            sender = self.senders[township.code] = OrderSender(
                _host(hub.api.base_url), int(hl7.get("port", 2575)), township, rng=random.Random(self.rng.random())
            )
        tracked.ack = await sender.send(order)
        if tracked.ack != "AA":
            self.tally.error(f"HL7 {tracked.ack}")
            return
        dicom = hub.interfaces.get("dicom") or {}
        host, port, called = (
            _host(hub.api.base_url),
            int(dicom.get("port", 11112)),
            str(dicom.get("ae_title", "TELENET")),
        )
        pauses, on_retry = RESEND_AFTER, self._association_refused
        try:
            if kind == "ecg":
                name = f"{family}^{given}"
                await asyncio.to_thread(
                    functools.partial(
                        send_ecg, township.ae_title, host, port, called, accession, patient_id, name,
                        retry_pauses=pauses, on_retry=on_retry,
                    )
                )  # fmt: skip
            else:
                await asyncio.to_thread(
                    functools.partial(
                        perform_imaging, township.ae_title, host, port, called, accession,
                        retry_pauses=pauses, on_retry=on_retry,
                    )
                )  # fmt: skip
            tracked.data_sent = True
        except Exception as exc:  # every failure is counted, none stops the run
            log.warning("modality %s: %s", township.ae_title, exc)
            self.tally.error(f"DICOM {type(exc).__name__}")

    def _association_refused(self) -> None:
        """A simulated modality tries a refused association again (called on its thread)."""
        with self._refusals_lock:
            self.associations_refused += 1

    async def _drain(self) -> None:
        """After the ordering stops, wait (bounded) until every order has its result or an explanation."""
        deadline = time.monotonic() + self.config.drain
        readers = set(self.world.readers)
        while time.monotonic() < deadline:
            # Still moving: no explanation yet, or in the hands of a simulated reader or clinic.
            pending = [
                t for t in self.tally.outstanding() if self.tally.explain(t, readers) in (None, STILL_WORKING, RETURNED)
            ]
            if not pending and not self.tasks:
                return
            await asyncio.sleep(0.5)


def _national_id(serial: str) -> str:
    from telenet.domain.patients import national_id_check_char

    first17 = f"45010219700101{int(serial) % 1000:03d}"
    return first17 + national_id_check_char(first17)


def _host(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


@contextlib.contextmanager
def _progress(sim: Simulation) -> Any:
    """A live table on a terminal (rich); nothing when the output is not one."""
    if not (sim.config.live and sys.stdout.isatty()):
        yield lambda: None
        return
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        table = Table(title="telenet simulate")
        table.add_column("orders")
        table.add_column("final")
        table.add_column("results")
        table.add_column("errors")
        orders = sim.tally.orders.values()
        table.add_row(
            str(len(orders)),
            str(sum(1 for t in orders if t.state == "final")),
            str(sum(len(t.results) for t in orders)),
            str(sum(sim.tally.errors.values())),
        )
        return table

    with Live(render(), refresh_per_second=2) as live:
        yield lambda: live.update(render())


def simulate(config: SimConfig) -> dict[str, Any]:
    world = load_world(config.network, config.accounts)
    if not world.townships:
        raise SystemExit("no township has an integration account with a password in the accounts file")
    return asyncio.run(Simulation(config, world).run())
