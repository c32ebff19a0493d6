"""The surface table's rows for the clinical routes (issue 15): critical findings raised from the claim and their
phone calls, the practitioner registry, the coordinator's reassignment and the consultation's live session (its
WebSocket and its static page), concatenated at the end of ``surface_table.ROUTES``. Read the docstring of
``surface_table`` first: the rows here follow its rules.

The scenario's ECG request is final and its critical finding acknowledged, so raising a finding from the claim
and releasing the claim are illegal (409) for whoever gets past role and scope. A phone call has no illegal
state (a late call may still be recorded), so its row states a call time before the finding was raised: the
service refuses it (422) only after the role and the center have been checked, and nothing is recorded. The
practitioner rows act on the side's spare account (``Side.spare_user``), which no clinical rule reads.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.surface_table import Read, Row, Side, Target, expect, public

# Whoever may see the scenario's consultation: its requesting side (clinic, HIS, the coordinators above it) and
# the reader invited to it; an admin needs a stated reason (break-glass) like for any patient record.
_SEES_CONSULTATION = {
    # Without a credential the handshake is accepted and the first message must authenticate (a browser page
    # cannot set headers; see test_consultation_signalling), so anonymous is 101 with nothing sent to it.
    "anonymous": 101,
    "requester": (101, 403),
    "reader": (101, 403),
    "coordinator": (101, 403),
    "admin": 403,
    "integration": (101, 403),
}

CLINICAL: list[Row] = [
    Row(
        "POST",
        "/api/v1/requests/{id}/critical",
        expect(reader=(409, 403)),
        target=lambda side: Target(f"/api/v1/requests/{side.request_id}/critical", {"items": ["室性心动过速"]}),
        note="only the reader holding the claim raises one; the final request has no claim holder (not-holder)",
    ),
    Row(
        "POST",
        "/api/v1/critical/{id}/calls",
        expect(reader=(422, 403), coordinator=(422, 403)),
        target=lambda side: Target(
            f"/api/v1/critical/{side.critical_id}/calls",
            {
                "callee": "值班护士",
                "callee_role": "护士",
                "called_at": "2000-01-01T08:00:00+08:00",
                "read_back": "急性下壁心肌梗死",
                "confirmed": True,
            },
        ),
        note="the reading center's readers and coordinators; a call before the finding was raised is refused "
        "(bad-called-at) after role and scope, so nothing is recorded",
    ),
    Row(
        "PUT",
        "/api/v1/practitioners/{username}",
        expect(admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/practitioners/{side.spare_user}", {"title": "住院医师"}),
        note="admins of the physician's institution or above; the same record each time (idempotent)",
    ),
    Row(
        "GET",
        "/api/v1/practitioners/{username}",
        expect(coordinator=(200, 403), admin=(200, 403)),
        target=lambda side: Target(f"/api/v1/practitioners/{side.spare_user}"),
        audit=Read("practitioner.read", "user", "institution"),
        note="a physician's licence record is personal data: audited under the physician's institution",
    ),
    Row(
        "POST",
        "/api/v1/requests/{id}/reassign",
        expect(coordinator=(409, 403)),
        target=lambda side: Target(
            f"/api/v1/requests/{side.request_id}/reassign", {"to": None, "reason": "surface table"}
        ),
        note="the center's coordinators; releasing the claim of a final request is illegal",
    ),
    Row(
        "GET",
        "/api/v1/consultations/{id}/ws",
        expect(**_SEES_CONSULTATION),
        target=lambda side: Target(f"/api/v1/consultations/{side.consultation_id}/ws"),
        audit=Read("consultation.session.join", "request", "institution"),
        websocket=True,
        greets=True,
        note="the handshake decides (101 or the refusal); the hub's welcome (peers present) is the body",
    ),
    Row(
        "GET",
        "/consultation/{name}",
        public(200),
        target=lambda side: Target("/consultation/session.html"),
        note="the session page is static; it takes the request and the token from its fragment",
    ),
]

# --- consultation sessions (issue 15) ----------------------------------------------------------------------
# The scenario's consultation is queued in phase ``requested`` (no wished time), with the side's reader invited
# for the side's ECG center. Every write below is refused after role and scope (422 / 404 / 409), so nothing
# changes: the requesting side (clinic, HIS, the coordinators above it) speaks for the consultation, the invited
# reader is a participant but not the consultant center, admins need a stated reason.


def _sides(status: int) -> dict[str, tuple[int, int]]:
    """The requesting side gets ``status`` on its own consultation, 403 on the other side's."""
    return {role: (status, 403) for role in ("requester", "coordinator", "integration")}


def _consultation(suffix: str = "", json: object = None) -> Callable[[Side], Target]:
    return lambda side: Target(f"/api/v1/consultations/{side.consultation_id}{suffix}", json)


CONSULTATION_SESSIONS: list[Row] = [
    Row(
        "GET",
        "/api/v1/consultations/{id}",
        expect(requester=(200, 403), reader=(200, 403), coordinator=(200, 403), admin=403, integration=(200, 403)),
        target=_consultation(),
        audit=Read("consultation.read", "request", "institution"),
        note="whoever sees the consultation; the reader as an invited participant",
    ),
    Row(
        "POST",
        "/api/v1/consultations/{id}/time",
        expect(**_sides(422)),
        target=_consultation("/time", {"time": "2026-03-03T10:00:00"}),
        note="a time without its UTC offset is refused (bad-time) once the side is known",
    ),
    Row(
        "POST",
        "/api/v1/consultations/{id}/time/agree",
        expect(**_sides(409)),
        target=_consultation("/time/agree"),
        note="nothing proposed yet: agreeing is an illegal transition",
    ),
    Row(
        "POST",
        "/api/v1/consultations/{id}/start",
        expect(),
        target=_consultation("/start"),
        note="only the consultant holding it or its center's coordinator starts a session; nobody here is",
    ),
    Row(
        "POST",
        "/api/v1/consultations/{id}/centers",
        expect(**_sides(422)),
        target=_consultation("/centers", {"center": "NO-SUCH-CENTER"}),
        note="an unknown center is refused (unknown-center) once the side is known",
    ),
    Row(
        "DELETE",
        "/api/v1/consultations/{id}/centers/{code}",
        expect(**_sides(404)),
        target=_consultation("/centers/NL-PROV-IMG"),
        note="a center that is not invited: 404 once the side is known",
    ),
    Row(
        "POST",
        "/api/v1/consultations/{id}/participants",
        expect(**_sides(422)),
        target=_consultation("/participants", {"username": "no_such_user"}),
        note="an unknown user is refused (unknown-participant) once the side is known",
    ),
    Row(
        "DELETE",
        "/api/v1/consultations/{id}/participants/{username}",
        expect(**_sides(404)),
        target=_consultation("/participants/township_doc"),
        note="someone who is not a participant: 404 once the side is known (the invited reader stays)",
    ),
]

CLINICAL += CONSULTATION_SESSIONS
