"""The hub's DICOM node: one pynetdicom AE serving C-ECHO, C-STORE, Modality Worklist, MPPS and Study Root
query/retrieve, started inside the app's lifecycle (``block=False``) and shut down with it.

Measured traps (DESIGN, Gateways): TCP_NODELAY on every socket, or each DIMSE exchange waits ~40 ms;
association setup grows with the presentation contexts accepted, so only what is needed is supported,
each abstract syntax once; pynetdicom's listen backlog is 5, raised here; received C-STOREs are streamed
to a temporary file (``STORE_RECV_CHUNKED_DATASET``) and renamed into the store instead of being decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

from pynetdicom import AE, StoragePresentationContexts, _config
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from gateways.dicom.bridge import LoopBridge
from gateways.dicom.idle import wait_when_idle
from gateways.dicom.status import Busy
from gateways.dicom.storage import FileStore
from gateways.dicom.waveform import ECG_SOP_CLASSES
from telenet import tls
from telenet.config import Settings
from telenet.domain.access import Actor
from telenet.domain.errors import Invalid
from telenet.services import peers, studies, study_links
from telenet.services.exclusive import run_exclusive
from telenet.services.hub import Hub
from telenet.services.metrics import Tally
from telenet.services.peers import PeerIdentity
from telenet.store.write_gate import log_failure

log = logging.getLogger(__name__)

# Uncompressed syntaxes plus the compressed ones modalities actually send; stored as received, never
# transcoded. Big endian is retired and deflate is rare: not accepted.
STORAGE_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
PLAIN = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
LISTEN_BACKLOG = 128
_WHITELIST_TTL_S = 30.0
# Association-control PDUs (A-ASSOCIATE-RQ with 128 contexts and user identity included) stay far below this.
MAX_CONTROL_PDU_BYTES = 1 << 20
P_DATA_TF = 0x04
# A-ABORT, source 2 (service provider), reason 6 (invalid PDU parameter value): PS3.8 9.3.8.
_ABORT_PDU_TOO_LARGE = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


def storage_sop_classes() -> list[str]:
    """pynetdicom's default storage list (120 classes, incl. 12-lead ECG) plus General ECG, each once."""
    uids = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    return list(dict.fromkeys([*uids, *map(str, ECG_SOP_CLASSES)]))


class AEWhitelist:
    """Registered calling AE titles and the actor each one acts as. An unknown title is looked up once more
    (it may have just been registered); the whole list is reloaded every 30 s so removals take effect."""

    def __init__(self, hub: Hub, bridge: LoopBridge) -> None:
        self.hub = hub
        self.bridge = bridge
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._actors: dict[str, Actor] = {}
        self._loaded_at = 0.0
        self._known: set[str] = set()
        # Refused associations, counted in /metrics when wired (app.py sets the tally).
        self.refusals: Tally | None = None

    def refused(self, reason: str) -> None:
        if self.refusals is not None:
            self.refusals.inc(protocol="dicom", reason=reason)

    def _lookup(self, ae_title: str) -> Actor | None:
        actor = self.bridge.call(studies.ae_actor, self.hub, ae_title)
        with self._lock:
            if actor is None:
                self._actors.pop(ae_title, None)
            else:
                self._actors[ae_title] = actor
        return actor

    def _refresh(self) -> None:
        """Reload the titles; one association thread at a time does it (the others go on with the list they
        have: at province scale, 1,000 townships' associations would otherwise all reload it at once)."""
        if not self._refreshing.acquire(blocking=not self._known):
            return
        try:
            if time.monotonic() - self._loaded_at <= _WHITELIST_TTL_S:
                return  # another thread reloaded it while this one waited
            titles = self.bridge.call(studies.registered_ae_titles, self.hub)
            with self._lock:
                self._actors = {t: a for t, a in self._actors.items() if t in titles}
                self._known = titles
                self._loaded_at = time.monotonic()
        finally:
            self._refreshing.release()

    def allowed(self, calling: str | None, identity: PeerIdentity | None = None) -> list[str]:
        """The list pynetdicom checks the calling AE title against (never empty: empty means "anyone").
        With the connection's ``identity``, a title of another institution than the one the connection
        authenticated as is left out, so the association is rejected (calling AE not recognized)."""
        if time.monotonic() - self._loaded_at > _WHITELIST_TTL_S:
            self._refresh()
        title = (calling or "").strip()
        if title and identity is not None:
            refusal = self.bridge.call(peers.check_ae_title, self.hub, title, identity)
            if refusal is not None:
                self.refused("calling-ae-not-bound")
                return ["\x00"]
        if title and title not in self._known:
            if self._lookup(title) is not None:
                with self._lock:
                    self._known = {*self._known, title}
            else:
                log.warning("association refused: calling AE title %r is not registered to any institution", title)
        # Only the caller's own title when it is registered (pynetdicom scans the list once per association;
        # a province registers thousands of titles).
        return [title] if title and title in self._known else ["\x00"]

    def actor(self, ae_title: str, address: str | None = None) -> Actor | None:
        title = ae_title.strip()
        with self._lock:
            actor = self._actors.get(title)
        if actor is None:
            actor = self._lookup(title)
        return actor.with_remote(address) if actor is not None and address else actor


# The attribute of an association refused for now (see _NodeAE.maximum_associations).
_TRANSIENT = "telenet_refused_for_now"


def _refused_for_now(assoc: threading.Thread) -> None:
    if hasattr(assoc, "requestor"):  # an association's own thread (pynetdicom asks on it)
        setattr(assoc, _TRANSIENT, True)


class _NodeAE(AE):
    """pynetdicom's AE with a live calling-AE whitelist and a deeper listen backlog."""

    whitelist: AEWhitelist | None = None
    plain_loopback_only: bool = False
    max_associations_per_peer: int = 32

    @property
    def require_calling_aet(self) -> list[str]:
        if self.whitelist is None:
            return []
        # pynetdicom asks while negotiating, on the association's own thread, right after reading the title,
        # and more than once: the answer is kept on the association, so each refusal is counted once.
        assoc = threading.current_thread()
        if not hasattr(assoc, "requestor"):  # not an association's thread
            return self._decide_calling_aet(assoc)
        decided: list[str] | None = getattr(assoc, "_telenet_calling_aet", None)
        if decided is None:
            decided = self._decide_calling_aet(assoc)
            assoc._telenet_calling_aet = decided  # type: ignore[attr-defined]
        return decided

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:  # AE.__init__ sets it
        pass

    @property
    def maximum_associations(self) -> int:
        # pynetdicom checks this right after the calling AE title, on the same thread, and its answer wins: an
        # association refused for now (too many from its address, the hub too busy to check the title) gets
        # A-ASSOCIATE-RJ rejected-transient, local-limit-exceeded (PS3.8 9.3.4), so that the peer tries again
        # later; a calling AE title the hub does not know stays rejected-permanent, calling AE not recognized.
        if getattr(threading.current_thread(), _TRANSIENT, False):
            return -1
        return self._maximum_associations

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        AE.maximum_associations.fset(self, value)  # type: ignore[attr-defined]

    def _decide_calling_aet(self, assoc: threading.Thread) -> list[str]:
        assert self.whitelist is not None
        requestor = getattr(assoc, "requestor", None)
        sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
        secure = isinstance(sock, ssl.SSLSocket)
        address = getattr(requestor, "address", None)
        if self.plain_loopback_only and not secure and not tls.is_loopback(address):
            log.warning("association refused: plain DICOM from %s (plain_loopback_only)", address)
            self.whitelist.refused("plain-connection")
            return ["\x00"]
        same_peer = sum(1 for a in self.active_associations if getattr(a.requestor, "address", None) == address)
        if same_peer > self.max_associations_per_peer:
            log.warning("association refused for now: %d associations from %s", same_peer, address)
            self.whitelist.refused("associations-per-peer")
            _refused_for_now(assoc)
            return ["\x00"]
        identity = PeerIdentity(address, tls.fingerprint(sock) if secure else None)
        try:
            return self.whitelist.allowed(getattr(requestor, "ae_title", None), identity)
        except Busy:
            # The hub did not answer the title check in time: the association is rejected at once (raised on
            # pynetdicom's thread, the exception left the peer without any answer until its own ACSE timeout).
            log.warning("association refused for now: the hub did not check the calling AE of %s in time", address)
            self.whitelist.refused("hub-busy")
            _refused_for_now(assoc)
            return ["\x00"]

    def make_server(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["server_class"] = _Server
        return super().make_server(address, *args, **kwargs)


class _PduLimitedSocket(AssociationSocket):
    """Refuses a PDU longer than the node advertised before reading it: pynetdicom reads each PDU whole,
    whatever length its header claims (a P-DATA-TF may not exceed the Maximum Length the node sent in its
    A-ASSOCIATE-AC; other PDUs ``MAX_CONTROL_PDU_BYTES``). The peer gets an A-ABORT (invalid PDU parameter
    value), the refusal is counted, and the association ends as on a closed connection."""

    max_pdu_bytes: int = 0
    refused: Callable[[str], None] | None = None
    _body_pending: bool = False

    def recv(self, nr_bytes: int) -> bytearray:
        header = not self._body_pending
        data = super().recv(nr_bytes)
        if not header:
            self._body_pending = False
            return data
        # The DUL reads a PDU as its 6-byte header, then its body of the length the header gives.
        if nr_bytes != 6 or len(data) != 6:
            return data
        pdu_type, _, length = struct.unpack(">BBL", data)
        limit = self.max_pdu_bytes if pdu_type == P_DATA_TF else MAX_CONTROL_PDU_BYTES
        if limit and length > limit:
            address = getattr(self.assoc.requestor, "address", None)
            log.warning("association aborted: a PDU of %d bytes from %s exceeds the maximum %d", length, address, limit)
            if self.refused is not None:
                self.refused("pdu-too-large")
            with contextlib.suppress(OSError, AttributeError):
                self.socket.sendall(_ABORT_PDU_TOO_LARGE)  # type: ignore[union-attr]
            raise ConnectionAbortedError(f"PDU of {length} bytes exceeds the maximum of {limit}")
        self._body_pending = length > 0
        return data


class _RequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        # pynetdicom builds the socket inside this method; its class is swapped for the limited one (same
        # state, one method more) instead of copying the method.
        assoc.dul.socket.__class__ = _PduLimitedSocket
        sock = cast(_PduLimitedSocket, assoc.dul.socket)
        ae = self.ae
        sock.max_pdu_bytes = int(ae.maximum_pdu_size or 0)
        whitelist = getattr(ae, "whitelist", None)
        sock.refused = whitelist.refused if whitelist is not None else None
        wait_when_idle(assoc)
        return assoc


class _Server(ThreadedAssociationServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = _RequestHandler
        super().__init__(*args, **kwargs)

    def service_actions(self) -> None:
        """pynetdicom runs a full ``gc.collect()`` here every 60 turns of the accept loop (for association
        threads its author saw linger). With a province's registry in memory that froze the whole process,
        the event loop included, for about 8 % of the time at the peak (py-spy); Python's own collector frees
        those cycles anyway. Nothing is collected here."""


def nodelay(event: Event) -> None:
    """EVT_CONN_OPEN: switch Nagle off (pynetdicom never does; each exchange would wait for delayed ACKs)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DicomNode:
    """The SCP. ``start()`` binds (port 0 picks a free port; see ``port``), ``stop()`` closes everything."""

    def __init__(self, hub: Hub, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        from gateways.dicom.handlers import Handlers

        self.hub = hub
        self.settings = settings
        self.bridge = LoopBridge(loop)
        self.store = FileStore(settings.resolved_dicom_storage_dir)
        self.whitelist = AEWhitelist(hub, self.bridge)
        self.on_conn_open: Callable[[Event], None] = nodelay
        self.handlers = Handlers(self)
        self.ae = self._make_ae()
        self._server: Any = None

    def _make_ae(self) -> _NodeAE:
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = _NodeAE(ae_title=self.settings.dicom_ae_title)
        ae.whitelist = self.whitelist
        ae.plain_loopback_only = self.settings.plain_loopback_only
        ae.max_associations_per_peer = self.settings.dicom_max_associations_per_peer
        ae.require_called_aet = True  # the called AE must be the hub's own title
        ae.maximum_associations = self.settings.dicom_max_associations
        # Advertised in the A-ASSOCIATE-AC and enforced before a PDU is read (_PduLimitedSocket).
        max_pdu = self.settings.dicom_max_pdu_bytes
        if max_pdu < 0 or 0 < max_pdu < 4096:
            raise Invalid(f"dicom_max_pdu_bytes {max_pdu}: 0 (unlimited) or at least 4096", code="bad-setting")
        ae.maximum_pdu_size = max_pdu
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.add_supported_context(Verification, PLAIN)
        for uid in storage_sop_classes():
            # scp_role: a C-GET requestor may ask us to act as storage SCU on its association
            ae.add_supported_context(uid, STORAGE_TRANSFER_SYNTAXES, scp_role=True, scu_role=False)
        ae.add_supported_context(ModalityWorklistInformationFind, PLAIN)
        ae.add_supported_context(ModalityPerformedProcedureStep, PLAIN)
        ae.add_supported_context(StorageCommitmentPushModel, PLAIN)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, PLAIN)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove, PLAIN)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet, PLAIN)
        return ae

    @property
    def port(self) -> int:
        assert self._server is not None, "the node is not started"
        return int(self._server.server_address[1])

    def start(self) -> None:
        context = tls.server_context(self.settings, client_certificates=True) if self.settings.dicom_tls else None
        self._server = self.ae.start_server(
            (self.settings.dicom_host, self.settings.dicom_port),
            block=False,
            evt_handlers=self.handlers.bindings(),
            ssl_context=context,
        )
        log.info("DICOM node %s listening on %s:%s", self.settings.dicom_ae_title, self.settings.dicom_host, self.port)

    def stop(self) -> None:
        self.bridge.closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()


async def run_quiet_sweep(hub: Hub, interval: float) -> None:
    """Complete studies whose quiet time has passed; a failing pass is logged and retried."""
    while True:
        try:
            await study_links.complete_quiet_studies(hub)
        except Exception:
            log_failure(log, "quiet-time sweep failed")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_node(hub: Hub, settings: Settings, refusals: Tally | None = None) -> AsyncIterator[DicomNode]:
    """The node, its quiet-time sweep and the forwarder, for as long as the context is open."""
    from gateways.dicom.forwarder import Forwarder

    loop = asyncio.get_running_loop()
    node = DicomNode(hub, settings, loop)
    node.whitelist.refusals = refusals
    # Binding and the first whitelist load call back into this loop, so they run on a thread.
    await asyncio.to_thread(node.start)
    forwarder = Forwarder.from_settings(hub, settings)
    interval = max(0.05, min(1.0, hub.options.study_quiet_seconds / 4))

    def exclusive(name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> Coroutine[Any, Any, None]:
        # With several hub processes on PostgreSQL, each background job runs in one of them at a time.
        return run_exclusive(hub.engine, name, job) if hub.engine is not None else job()

    tasks = [
        asyncio.create_task(exclusive("dicom-quiet-sweep", lambda: run_quiet_sweep(hub, interval))),
        asyncio.create_task(exclusive("dicom-forwarder", forwarder.run)),
    ]
    try:
        yield node
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(node.stop)


def dicom_ctx(hub: Hub, settings: Settings, refusals: Tally | None = None) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry running the DICOM node and its workers with the app."""

    async def ctx(_app: Any) -> AsyncIterator[None]:
        async with running_node(hub, settings, refusals):
            yield

    return ctx
