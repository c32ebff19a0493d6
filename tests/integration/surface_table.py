"""The authorization-and-audit table of the whole surface: one row per HTTP route of the application's aiohttp
router, one per WebSocket topic, one per DICOM operation and one per HL7 message type.

``tests/integration/test_surface.py`` walks the router of the app the composition root builds and fails for
any route without a row here (and for any row without a route), walks the DICOM node's event bindings and the
HL7 gateway's message table the same way, and then executes every row against a real server on each database.

What a row says
    ``expect``: for each role (requester, reader, coordinator, admin, integration, anonymous), the HTTP status
    when the target is in the caller's scope ("own") and when it belongs to another county of another city
    ("other"). The accounts are the demo network's (``ACCOUNTS``); "own" data is ordered by the township
    NL-C01-K01-T01 and read at the county centers NL-C01-K01-*, "other" data by NL-C02-K01-T01 and read at
    NL-C02-K01-*; see ``Side`` and the scenario in ``test_surface.py``.
    ``target``: the concrete URL (and JSON body) for a side, built from the scenario's ids.
    ``audit``: for a read of patient data, the row it must leave when it succeeds: action, object type, and the
    institution that owns the data (``owner``: ``"institution"`` = the side's requesting institution,
    ``"center"`` = the institution of the side's center, ``"actor"`` = the caller's own institution, for lists
    that range over the caller's scope, ``"none"`` for the registry directory). A refused read must leave no
    ``ok`` row, and one refused by scope alone a refusal row naming the institution it tried to read.

Writes are fired at objects in a state where the action is illegal (a final request, an acknowledged
critical finding, a refunded fee line), so nothing changes: ``409`` proves the caller got past role and scope,
``403`` that it did not. ``201`` appears only where a write is harmless to repeat (an order, a message, a
recognition decision).

How to add a row (a new endpoint fails ``test_every_route_has_a_row`` until you do)
    1. Append ``Row("METHOD", "/the/{canonical}/path", expect(...), target=..., audit=...)`` to ``ROUTES``
       (or to a list of your own module concatenated at the end of ``ROUTES``). ``path`` is aiohttp's
       canonical path as in ``app.router.add_route``.
    2. ``expect(requester=(own, other), reader=..., ...)``: a single int means the same status for both scopes;
       ``anonymous`` defaults to 401 and every role you leave out to 403; ``public(200)`` is a route that
       answers everyone the same.
    3. ``target=lambda side: Target(f"/path/{side.request_id}", json={...})``; omit it for a path without
       parameters. ``Side`` holds the ids the scenario creates; add a field there and create it in
       ``build_scenario`` when your route needs new data.
    4. A read of patient data gets ``audit=Read("action", "object_type", owner)``.
    5. A family of static assets under one prefix (e.g. the OHIF viewer under ``/ohif/``) is one row with
       ``prefix=True``: it covers every route whose canonical path starts with ``path``.
    6. Requests carry the role's bearer token and redirects are not followed (a 302/303 is the status). A
       console page authenticated by the session cookie says ``credential="session"``: it is sent with the
       session each role opened once through the login form (and, in a POST's form, that session's CSRF
       token); a logged-out visitor (anonymous) sends none. ``fresh_token=True`` then means a fresh session.
       Raw bodies (an attachment, a STOW-RS multipart) go in ``Target(data=..., headers=...)``. The DICOMweb,
       attachment and console rows are in ``surface_web.py``, the clinical ones (critical findings, practitioner
       registry, reassignment, the consultation session) in ``surface_clinical.py``.
    7. A WebSocket route says ``websocket=True``: the status is the handshake's (101, or the refusal), and a
       successful handshake counts as a success for its audit row. ``greets=True`` keeps the first message the
       server sends on its own (a welcome) as the body that ``test_no_answer_carries_the_other_sides_data`` reads.
    WebSocket topics go in ``TOPICS`` (expected ``"ok"`` or the refusal code), DICOM operations in ``DICOM``
    (keyed by the pynetdicom event they are bound to; ``test_every_dicom_and_hl7_operation_has_a_row`` walks the
    node's bindings), HL7 message types in ``HL7`` (keyed by message type and order control; the same test walks
    the codec's tables of supported types, so a new one fails until it has a row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROLES = ("requester", "reader", "coordinator", "admin", "integration", "anonymous")
SCOPES = ("own", "other")

#: The account that plays each role (the demo network's; anonymous sends no token).
ACCOUNTS = {
    "requester": "township_doc",
    "reader": "county_reader",
    "coordinator": "county_coord",
    "admin": "county_admin",
    "integration": "his_t01",
}


@dataclass(frozen=True)
class Side:
    """The ids of one side of the scenario: everything "own" or everything "other" (see ``build_scenario``)."""

    institution: str  # the requesting township
    center_institution: str  # the county hospital hosting the centers
    center: str  # its ECG reading center
    request_id: int  # a final stat ECG with a critical finding
    accession_number: str
    ecg_uid: str
    study_uid: str
    critical_id: int  # acknowledged
    fee_line_id: int  # refunded
    consultation_id: int  # with one message
    patient_id: str  # the HIS id at ``institution``
    ordered_accession: str  # an imaging order waiting for its study (the modality worklist's item)
    spare_user: str  # an account of the side that no row fires with (the account routes act on it)
    series_uid: str  # the ECG's series
    image_request_id: int  # a queued CT request with its study (DICOMweb frames, bulk data, rendered)
    image_study_uid: str
    image_series_uid: str
    image_uid: str
    attachment_id: int  # a PNG attached to the consultation


@dataclass(frozen=True)
class Target:
    url: str
    json: Any = None
    data: bytes | None = None  # a raw body (an attachment, a STOW multipart) instead of JSON
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Read:
    """The audit row a successful read of patient data leaves."""

    action: str
    object_type: str
    owner: str  # "institution" | "center" | "actor" | "none" (the registry directory belongs to no institution)


Cells = dict[str, tuple[int, int]]


def expect(default: int = 403, *, anonymous: int = 401, **roles: int | tuple[int, int]) -> Cells:
    """Expected statuses per role as (own, other); an int is the same for both."""
    unknown = set(roles) - set(ROLES)
    assert not unknown, f"unknown roles {unknown}"
    cells: Cells = {}
    for role in ROLES:
        value = roles.get(role, anonymous if role == "anonymous" else default)
        cells[role] = value if isinstance(value, tuple) else (value, value)
    return cells


def public(status: int = 200) -> Cells:
    return expect(status, anonymous=status)


def everyone(own: int, other: int | None = None) -> Cells:
    """Every authenticated role alike."""
    both = (own, own if other is None else other)
    return expect(**{role: both for role in ROLES if role != "anonymous"})


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expect: Cells
    target: Callable[[Side], Target] | None = None
    audit: Read | None = None
    prefix: bool = False
    websocket: bool = False
    # A WebSocket that speaks first (the consultation session's welcome): its first message is kept as the body.
    greets: bool = False
    # Fired with a token of its own, made just before (a row that ends the token it is sent with: logout).
    fresh_token: bool = False
    # Which credential the row sends: "token" (the role's bearer token) or "session" (the role's console session
    # cookie from the login form, and its CSRF token in the form of a POST; see ``_fire_route``).
    credential: str = "token"
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}{'*' if self.prefix else ''}"

    def covers(self, method: str, path: str) -> bool:
        if self.method != method:
            return False
        return path.startswith(self.path) if self.prefix else path == self.path

    def target_of(self, side: Side) -> Target:
        return self.target(side) if self.target else Target(self.path)


def _req(suffix: str = "", json: Any = None) -> Callable[[Side], Target]:
    return lambda side: Target(f"/api/v1/requests/{side.request_id}{suffix}", json)


def _of_institution(side: Side) -> str:
    return f"institution={side.institution}"


ORDER_NOTE = {"note": "surface table"}

ROUTES: list[Row] = [
    # --- operations and authentication --------------------------------------------------------------------
    Row("GET", "/healthz", public()),
    Row("GET", "/metrics", public()),
    Row("GET", "/api/v1/openapi.json", public()),
    Row(
        "POST",
        "/api/v1/auth/token",
        # own: the role's account with its password; other: the same account with a wrong password.
        expect(200, anonymous=401, **{r: (200, 401) for r in ACCOUNTS}),
        note="fired with credentials, not a token; anonymous sends an unknown user",
    ),
    # --- registry ------------------------------------------------------------------------------------------
    Row(
        "GET",
        "/api/v1/institutions",
        everyone(200),
        target=lambda side: Target(f"/api/v1/institutions?within={side.institution}"),
        audit=Read("institution.list", "institution", "none"),
        note="the directory is not patient data, but every read of it is audited too",
    ),
    Row(
        "GET",
        "/api/v1/institutions/{code}",
        everyone(200),
        target=lambda side: Target(f"/api/v1/institutions/{side.institution}"),
        audit=Read("institution.read", "institution", "institution"),
    ),
    Row("GET", "/api/v1/centers", everyone(200), audit=Read("center.list", "center", "none")),
    Row(
        "GET",
        "/api/v1/audit",
        expect(admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/audit?institution={side.institution}"),
        audit=Read("audit.read", "audit", "institution"),
    ),
    # --- requests ------------------------------------------------------------------------------------------
    Row(
        "POST",
        "/api/v1/requests",
        expect(requester=201, integration=201),
        target=lambda side: Target("/api/v1/requests", "ORDER"),
        note="the body is a fresh valid order (tests.factories.order) of the caller's institution",
    ),
    Row(
        "GET",
        "/api/v1/requests",
        everyone(200),
        audit=Read("request.list", "request", "actor"),
    ),
    Row(
        "GET",
        "/api/v1/requests/{id}",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=_req(),
        audit=Read("request.read", "request", "institution"),
    ),
    Row("POST", "/api/v1/requests/{id}/claim", expect(reader=(409, 403)), target=_req("/claim")),
    Row(
        "POST",
        "/api/v1/requests/{id}/release",
        expect(reader=(409, 403), coordinator=(409, 403)),
        target=_req("/release"),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/report",
        expect(reader=(409, 403)),
        target=_req("/report", {"findings": "窦性心律。", "impression": "正常心电图。", "final": True}),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/addenda",
        expect(reader=(201, 403)),
        target=_req("/addenda", {"text": "补充：复查心电图。"}),
        note="an addendum to a final report is legal: the signing center's reader adds one",
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/return",
        expect(reader=(409, 403)),
        target=_req("/return", {"reason": "bad_image_quality", "note": "surface table"}),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/resubmit",
        expect(requester=(409, 403), coordinator=(409, 403), admin=403, integration=(409, 403)),
        target=_req("/resubmit", ORDER_NOTE),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/escalate",
        expect(reader=(409, 403), coordinator=(409, 403)),
        target=_req("/escalate", {"reason": "surface table"}),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/cancel",
        expect(requester=(409, 403), coordinator=(409, 403), admin=403, integration=(409, 403)),
        target=_req("/cancel", ORDER_NOTE),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/data-complete",
        expect(integration=(409, 403)),
        target=_req("/data-complete", {}),
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/consent",
        expect(requester=(409, 403), coordinator=(409, 403), admin=403, integration=(409, 403)),
        target=_req("/consent", {"given_by": "患者本人", "given_at": "2026-03-02T09:50:00+08:00"}),
    ),
    Row(
        "GET",
        "/api/v1/requests/{id}/messages",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=lambda side: Target(f"/api/v1/requests/{side.consultation_id}/messages"),
        audit=Read("consultation.messages.read", "request", "institution"),
        note="the reader takes part in the own consultation (participants)",
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/messages",
        expect(requester=(201, 403), reader=(201, 403), coordinator=(201, 403), admin=403, integration=(201, 403)),
        target=lambda side: Target(f"/api/v1/requests/{side.consultation_id}/messages", {"body": "收到。"}),
    ),
    Row(
        "GET",
        "/api/v1/centers/{code}/worklist",
        expect(reader=(200, 403), coordinator=(200, 403)),
        target=lambda side: Target(f"/api/v1/centers/{side.center}/worklist"),
        audit=Read("worklist.read", "center", "center"),
        note="REST: the center's readers and coordinators only (admins follow the worklist topic, see TOPICS)",
    ),
    Row(
        "GET",
        "/api/v1/critical/{id}",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=lambda side: Target(f"/api/v1/critical/{side.critical_id}"),
        audit=Read("critical.read", "critical", "institution"),
    ),
    Row(
        "POST",
        "/api/v1/critical/{id}/ack",
        expect(requester=(409, 403), coordinator=(409, 403), admin=(409, 403), integration=(409, 403)),
        target=lambda side: Target(
            f"/api/v1/critical/{side.critical_id}/ack", {"read_back_by": "值班护士", "read_back": "急性下壁心肌梗死"}
        ),
    ),
    # --- DICOM over REST -------------------------------------------------------------------------------------
    Row(
        "GET",
        "/api/v1/requests/{id}/studies",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=_req("/studies"),
        audit=Read("dicom.studies.read", "request", "institution"),
    ),
    Row(
        "GET",
        "/api/v1/ecg/{uid}.svg",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=lambda side: Target(f"/api/v1/ecg/{side.ecg_uid}.svg"),
        audit=Read("dicom.ecg.read", "dicom_instance", "institution"),
    ),
    Row(
        "GET",
        "/api/v1/ecg/{uid}.json",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=lambda side: Target(f"/api/v1/ecg/{side.ecg_uid}.json"),
        audit=Read("dicom.ecg.read", "dicom_instance", "institution"),
    ),
    Row(
        "GET",
        "/api/v1/reconciliation",
        expect(coordinator=200, admin=200),
        audit=Read("dicom.reconciliation.read", "dicom_study", "actor"),
    ),
    Row(
        "POST",
        "/api/v1/reconciliation/{study}/link",
        expect(coordinator=(409, 403), admin=(409, 403)),
        target=lambda side: Target(
            f"/api/v1/reconciliation/{side.study_uid}/link", {"accession_number": side.accession_number}
        ),
    ),
    Row("GET", "/api/v1/forwarding", expect(coordinator=200, admin=200)),
    # --- HL7 queues ------------------------------------------------------------------------------------------
    Row("GET", "/api/v1/hl7/outbox", expect(admin=200), audit=Read("hl7.outbox.read", "hl7_outbox", "actor")),
    Row(
        "GET",
        "/api/v1/hl7/dead-letters",
        expect(admin=200),
        audit=Read("hl7.dead_letters.read", "hl7_dead_letter", "actor"),
    ),
    Row(
        "POST",
        "/api/v1/hl7/dead-letters/{id}/replay",
        expect(admin=404),
        target=lambda side: Target("/api/v1/hl7/dead-letters/999999999/replay"),
        note="no dead letter exists: an admin gets 404, everyone else is refused by role first",
    ),
    # --- fees, recognition, assessment ----------------------------------------------------------------------
    Row("GET", "/api/v1/fee-schedule", everyone(200)),
    Row(
        "GET",
        "/api/v1/fees",
        expect(requester=(200, 403), coordinator=(200, 403), admin=(200, 403), integration=(200, 403)),
        target=lambda side: Target(f"/api/v1/fees?{_of_institution(side)}"),
        audit=Read("fee.list", "fee_line", "institution"),
    ),
    Row(
        "POST",
        "/api/v1/fees/{id}/refund",
        expect(admin=(409, 403)),
        target=lambda side: Target(f"/api/v1/fees/{side.fee_line_id}/refund", {"reason": "surface table"}),
    ),
    Row(
        "GET",
        "/api/v1/settlements",
        expect(coordinator=(200, 403), admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/settlements?period=2026-03&{_of_institution(side)}"),
        audit=Read("settlement.read", "settlement", "institution"),
    ),
    Row(
        "GET",
        "/api/v1/patients/{id}/recognizable-results",
        expect(requester=(200, 403), coordinator=(200, 403), admin=(200, 403), integration=(200, 403)),
        target=lambda side: Target(f"/api/v1/patients/{side.patient_id}/recognizable-results?at={side.institution}"),
        audit=Read("recognition.results", "patient", "institution"),
    ),
    Row(
        "POST",
        "/api/v1/recognitions",
        expect(requester=(201, 404)),
        target=lambda side: Target(
            "/api/v1/recognitions",
            {
                "result_request_id": side.request_id,
                "patient_id": "P0001",
                "decision": "not_recognized",
                "reason_code": "patient_request",
            },
        ),
        note="the requester decides at its own institution; the other side's result is not its patient's (404)",
    ),
    Row(
        "GET",
        "/api/v1/stats/assessment",
        expect(coordinator=(200, 403), admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/stats/assessment?institution={side.institution}"),
        audit=Read("assessment.read", "assessment", "institution"),
    ),
    # --- the live channel ------------------------------------------------------------------------------------
    # --- accounts (issue 14) ----------------------------------------------------------------------------------
    Row(
        "POST",
        "/api/v1/auth/logout",
        everyone(204),
        fresh_token=True,
        note="ends the token it is sent with, so each firing logs in first",
    ),
    Row(
        "POST",
        "/api/v1/auth/password",
        everyone(401),
        target=lambda side: Target(
            "/api/v1/auth/password", {"current_password": "not-the-password-1", "new_password": "a-new-password-9"}
        ),
        note="a wrong current password: 401 for everyone, nothing changes",
    ),
    Row(
        "POST",
        "/api/v1/users/{username}/disable",
        expect(admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/users/{side.spare_user}/disable"),
        note="a spare account of the side that no other row uses; enabled again by the next row",
    ),
    Row(
        "POST",
        "/api/v1/users/{username}/enable",
        expect(admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/users/{side.spare_user}/enable"),
    ),
    Row(
        "POST",
        "/api/v1/users/{username}/unlock",
        expect(admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/users/{side.spare_user}/unlock"),
    ),
    Row(
        "POST",
        "/api/v1/users/{username}/password",
        expect(admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/users/{side.spare_user}/password", {"password": "a-new-password-9"}),
    ),
    # --- patient merges (issue 16) ----------------------------------------------------------------------------
    Row(
        "GET",
        "/api/v1/patients/merges",
        expect(admin=200),
        audit=Read("patient.merges.read", "patient_merge", "actor"),
    ),
    Row(
        "POST",
        "/api/v1/patients/merges/{id}/revert",
        expect(admin=404),
        target=lambda side: Target("/api/v1/patients/merges/999999999/revert"),
        note="no merge exists: an admin gets 404, everyone else is refused by role first",
    ),
    Row(
        "GET",
        "/api/v1/ws",
        public(101),
        websocket=True,
        note="the handshake is open to all; the first message authenticates (topics in TOPICS)",
    ),
]


@dataclass(frozen=True)
class Topic:
    """A WebSocket topic: per role (own, other), ``"ok"`` when the subscription is accepted or the refusal code.
    An accepted subscription is audited like a read (``events.subscribe``, object ``topic``, the owner)."""

    template: str
    build: Callable[[Side], str]
    expect: dict[str, tuple[str, str]]
    owner: str


def _topic_cells(**roles: tuple[str, str]) -> dict[str, tuple[str, str]]:
    return {role: roles.get(role, ("scope", "scope")) for role in ROLES if role != "anonymous"}


TOPICS: list[Topic] = [
    Topic(
        "worklist:{center}",
        lambda side: f"worklist:{side.center}",
        _topic_cells(reader=("ok", "scope"), coordinator=("ok", "scope"), admin=("ok", "scope")),
        owner="center",
    ),
    Topic(
        "requests:{institution}",
        lambda side: f"requests:{side.institution}",
        _topic_cells(
            requester=("ok", "scope"), coordinator=("ok", "scope"), admin=("ok", "scope"), integration=("ok", "scope")
        ),
        owner="institution",
    ),
    Topic(
        "request:{id}",
        lambda side: f"request:{side.request_id}",
        _topic_cells(
            requester=("ok", "scope"),
            reader=("ok", "scope"),
            coordinator=("ok", "scope"),
            admin=("break-glass-required", "scope"),
            integration=("ok", "scope"),
        ),
        owner="institution",
    ),
]

#: DICOM callers, per station: the calling AE title of the own side's institution, of the other side's, and one
#: nobody registered. A DICOM caller acts as its institution's integration account. Modalities (township
#: stations) query the worklist, store and report MPPS; the county hospital (the reading centers' host, whose
#: PACS is the move destination) queries and retrieves the studies routed to its centers.
STATIONS = {
    "township": {"own": "C01K01T01", "other": "C02K01T01", "unknown": "NOBODY"},
    "county": {"own": "C01K01", "other": "C02K01", "unknown": "NOBODY"},
}
DICOM_CALLERS = ("own", "other", "unknown")


@dataclass(frozen=True)
class DicomOp:
    """A DICOM operation of the node, keyed by the pynetdicom event its handler is bound to, with the outcome
    per caller when it addresses the own side's study or order: ``"rejected"`` (association refused),
    ``"ok:N"`` (success with N matches / instances), or ``"status:0xNNNN"`` (a failure status). A read of
    patient data names its audit row; the owner is the own side's institution when something was found, the
    caller's institution when nothing was."""

    name: str
    event: str
    station: str
    expect: dict[str, str]
    audit: Read | None = None


DICOM: list[DicomOp] = [
    DicomOp("C-ECHO", "EVT_C_ECHO", "township", {"own": "ok:0", "other": "ok:0", "unknown": "rejected"}),
    DicomOp("C-STORE", "EVT_C_STORE", "township", {"own": "ok:1", "other": "ok:1", "unknown": "rejected"}),
    DicomOp(
        "C-FIND study root",
        "EVT_C_FIND",
        "county",
        {"own": "ok:1", "other": "ok:0", "unknown": "rejected"},
        audit=Read("dicom.find", "dicom_study", "institution"),
    ),
    DicomOp(
        "C-FIND modality worklist",
        "EVT_C_FIND",
        "township",
        {"own": "ok:1", "other": "ok:0", "unknown": "rejected"},
        audit=Read("dicom.worklist.find", "request", "institution"),
    ),
    DicomOp(
        "C-MOVE study root",
        "EVT_C_MOVE",
        "county",
        {"own": "ok:1", "other": "status:0xA801", "unknown": "rejected"},
        audit=Read("dicom.move", "dicom_study", "institution"),
    ),
    DicomOp(
        "C-GET study root",
        "EVT_C_GET",
        "county",
        {"own": "ok:1", "other": "ok:0", "unknown": "rejected"},
        audit=Read("dicom.get", "dicom_study", "institution"),
    ),
    # Another institution's modality may report a step naming our accession: it is recorded as its own MPPS and
    # never linked to our order (logged); it cannot change our MPPS (0x0124 not authorised).
    DicomOp("MPPS N-CREATE", "EVT_N_CREATE", "township", {"own": "ok:0", "other": "ok:0", "unknown": "rejected"}),
    DicomOp("MPPS N-SET", "EVT_N_SET", "township", {"own": "ok:0", "other": "status:0x0124", "unknown": "rejected"}),
    # The own township asks the hub to commit the ECG it stored; another institution's modality asking for the
    # same instance gets it listed as a failure (it is not its to commit), so nothing says the instance exists.
    DicomOp(
        "Storage commitment N-ACTION",
        "EVT_N_ACTION",
        "township",
        {"own": "ok:1", "other": "ok:0", "unknown": "rejected"},
    ),
]


#: HL7 senders by MSH-4: the own township, the other side's township (it has an integration account), and a
#: facility nobody registered. Fired in this order, so the other side tries the own side's order first.
HL7_FACILITIES = {"unknown": "NOWHERE", "other": "NL-C02-K01-T01", "own": "NL-C01-K01-T01"}
#: The order control codes (ORC-1) the gateway supports on ORM^O01, OMI^O23 and OMG^O19.
HL7_ORDER_CONTROLS = ("NW", "CA", "XO", "DC")


@dataclass(frozen=True)
class HL7Message:
    """An inbound message type (with its order control), and the ACK code (MSA-1) per sender. New orders and
    patients are the sender's own; a cancel (CA), change (XO) or discontinue (DC) names an order the own
    township placed just before with the same message type, so only the own township may touch it; an A40
    merges two patients of the sender's own institution (the prior one registered just before)."""

    type: str  # "ADT^A04", "ORM^O01 NW", ...
    expect: dict[str, str]

    @property
    def key(self) -> tuple[str, str, str | None]:
        code_event, _, control = self.type.partition(" ")
        code, _, event = code_event.partition("^")
        return code, event, control or None


_NEW = {"own": "AA", "other": "AA", "unknown": "AE"}

_OWN_ORDER = {"own": "AA", "other": "AE", "unknown": "AE"}
#: Where an AE's ERR-2 points, per sender, so that each refusal is for the reason the row states (not, say, a
#: message the codec could not read): the unregistered facility at MSH-4, the other township's touch of the own
#: side's order at the accession (ORC-2, "outside your scope").
HL7_REFUSED_AT = {"unknown": ("MSH^1^4", "204"), "other": ("ORC^1^2", "outside your scope")}

HL7: list[HL7Message] = [
    HL7Message("ADT^A01", _NEW),
    HL7Message("ADT^A04", _NEW),
    HL7Message("ADT^A05", _NEW),
    HL7Message("ADT^A08", _NEW),
    HL7Message("ADT^A40", _NEW),
    *(
        HL7Message(f"{code} {control}", _NEW if control == "NW" else _OWN_ORDER)
        for code in ("ORM^O01", "OMI^O23", "OMG^O19")
        for control in HL7_ORDER_CONTROLS
    ),
]

# The DICOMweb, attachment, console and clinical rows live next door (this module would pass 600 lines otherwise).
from tests.integration.surface_clinical import CLINICAL  # noqa: E402
from tests.integration.surface_registry import REGISTRY  # noqa: E402
from tests.integration.surface_web import WEB_ROUTES  # noqa: E402

ROUTES += WEB_ROUTES + CLINICAL + REGISTRY
