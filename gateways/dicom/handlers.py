"""The SCP event handlers: thin. Each one reads what it received, hands plain records to the service layer
through the loop bridge, and maps any error through the one status table (``status.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from gateways.dicom import mapping
from gateways.dicom.commitment import StorageCommitment
from gateways.dicom.ingest import ingest
from gateways.dicom.status import CANCEL, PENDING, SUCCESS, BadDataset, Busy, Op, failure
from telenet.domain.access import Actor
from telenet.domain.errors import Forbidden, NotFound
from telenet.services import modality, mpps

if TYPE_CHECKING:
    from gateways.dicom.node import DicomNode

log = logging.getLogger(__name__)

# The attribute of an association that keeps its calling AE's registered character set once read.
_CHARSET = "telenet_registered_charset"
_UNREAD = object()


class Handlers:
    """Bound to one node; every method runs on an association thread."""

    def __init__(self, node: DicomNode) -> None:
        self.node = node
        self.hub = node.hub
        self.bridge = node.bridge
        self.store = node.store
        self.commitment = StorageCommitment(self)
        # Reads of a calling AE's registered character set (one per association that needs it).
        self.charset_reads = 0

    def bindings(self) -> list[Any]:
        return [
            (evt.EVT_CONN_OPEN, self.node.on_conn_open),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
            (evt.EVT_N_ACTION, self.commitment.on_n_action),
        ]

    def actor(self, event: Event) -> Actor:
        actor = self.node.whitelist.actor(event.assoc.requestor.ae_title, event.assoc.requestor.address)
        if actor is None:
            raise Forbidden("the calling AE title is not registered", code="unknown-ae")
        return actor

    def on_echo(self, event: Event) -> int:
        return SUCCESS

    # --- C-STORE -----------------------------------------------------------------------------------

    def on_store(self, event: Event) -> int | Dataset:
        try:
            return self._store(event)
        except Exception as exc:
            return failure(Op.STORE, exc)

    def _store(self, event: Event) -> int:
        received = Path(event.dataset_path)
        limit = self.node.settings.dicom_max_instance_bytes
        if received.stat().st_size > limit:
            self.node.whitelist.refused("instance-too-large")
            raise Busy(f"instance larger than {limit} bytes")
        ingest(
            self.hub,
            self.bridge,
            self.store,
            self.actor(event),
            received,
            sop_class_uid=str(_req(event).AffectedSOPClassUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            affected_sop_instance_uid=str(_req(event).AffectedSOPInstanceUID or ""),
            registered_charset=lambda: self.registered_charset(event),
        )
        return SUCCESS

    def registered_charset(self, event: Event) -> str | None:
        """The set the calling AE is registered with, read once per association (at its first dataset that
        needs it): a registry change applies to the next association, as a modality's own settings do."""
        assoc = event.assoc
        found = getattr(assoc, _CHARSET, _UNREAD)
        if found is _UNREAD:
            found = self.bridge.call(modality.registered_charset, self.hub, self.actor(event), assoc.requestor.ae_title)
            setattr(assoc, _CHARSET, found)
            self.charset_reads += 1
        return cast("str | None", found)

    # --- C-FIND: worklist and Study Root ----------------------------------------------------------

    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        try:
            actor = self.actor(event)
            identifier = event.identifier
            registered = self.registered_charset(event)
            # A query without SpecificCharacterSet is read in the set the calling AE is registered with.
            mapping.assume_charset(identifier, registered)
            charset = mapping.answer_charset(identifier, registered or "UTF-8")
            if str(_req(event).AffectedSOPClassUID) == ModalityWorklistInformationFind:
                items = self.bridge.call(modality.worklist, self.hub, actor, mapping.worklist_query(identifier))
                responses = [mapping.worklist_response(item, identifier, charset) for item in items]
            else:
                values = self.bridge.call(modality.find, self.hub, actor, mapping.study_query(identifier))
                responses = [mapping.find_response(v, identifier, charset) for v in values]
        except Exception as exc:
            yield failure(Op.FIND, exc), None
            return
        for ds in responses:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, ds

    # --- C-MOVE / C-GET ---------------------------------------------------------------------------

    def _files(self, event: Event, destination: str | None) -> list[modality.RetrieveFile]:
        actor = self.actor(event)
        query = mapping.study_query(event.identifier)
        return self.bridge.call(modality.retrieve, self.hub, actor, query, destination=destination)

    def _send(self, event: Event, files: list[modality.RetrieveFile]) -> Iterator[tuple[int | Dataset, Any]]:
        for item in files:
            if event.is_cancelled:
                yield CANCEL, None
                return
            try:
                yield PENDING, dcmread(item.path)
            except OSError as exc:
                log.error("cannot read %s for retrieve: %s", item.path, exc)
                yield failure(Op.GET, exc), None
                return

    def on_move(self, event: Event) -> Iterator[Any]:
        try:
            actor = self.actor(event)
            ae_title, host, port = self.bridge.call(
                modality.move_destination, self.hub, actor, str(event.move_destination)
            )
        except NotFound as exc:
            log.warning("C-MOVE refused: %s", exc.message)
            yield None, None
            return
        except Exception as exc:
            log.warning("C-MOVE refused: %s", exc)
            yield None, None
            return
        try:
            files = self._files(event, ae_title)
        except Exception as exc:
            yield host, port, {"contexts": [build_context("1.2.840.10008.1.1")]}
            yield 1
            yield failure(Op.MOVE, exc), None
            return
        yield host, port, {"contexts": _contexts(files), "evt_handlers": [(evt.EVT_CONN_OPEN, self.node.on_conn_open)]}
        yield len(files)
        yield from self._send(event, files)

    def on_get(self, event: Event) -> Iterator[Any]:
        try:
            files = self._files(event, None)
        except Exception as exc:
            yield 1
            yield failure(Op.GET, exc), None
            return
        yield len(files)
        yield from self._send(event, files)

    # --- MPPS -------------------------------------------------------------------------------------

    def on_n_create(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        try:
            actor = self.actor(event)
            attributes = event.attribute_list
            uid = _req(event).AffectedSOPInstanceUID
            if not uid:
                raise BadDataset("N-CREATE without an Affected SOP Instance UID")
            record = mapping.mpps_record(str(uid), attributes)
            self.bridge.call(mpps.mpps_create, self.hub, actor, record)
        except Exception as exc:
            return failure(Op.N_CREATE, exc), None
        return SUCCESS, attributes

    def on_n_set(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        try:
            actor = self.actor(event)
            modifications = event.modification_list
            uid = str(_req(event).RequestedSOPInstanceUID)
            record = mapping.mpps_record(uid, modifications)
            self.bridge.call(mpps.mpps_set, self.hub, actor, record)
        except Exception as exc:
            return failure(Op.N_SET, exc), None
        return SUCCESS, modifications


def _req(event: Event) -> Any:
    """The DIMSE request primitive (typed loosely: each service has its own primitive class)."""
    return event.request


def _contexts(files: list[modality.RetrieveFile]) -> list[Any]:
    """One presentation context per SOP class with the transfer syntaxes the stored files have (max 128)."""
    syntaxes: dict[str, set[str]] = {}
    for item in files:
        syntaxes.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax_uid)
    contexts = []
    uncompressed = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}
    for sop_class, ts in sorted(syntaxes.items())[:128]:
        # pynetdicom re-encodes between the two little endian syntaxes, never a compressed one
        contexts.append(build_context(sop_class, sorted(ts | uncompressed if ts <= uncompressed else ts)))
    return contexts or [build_context("1.2.840.10008.1.1")]
