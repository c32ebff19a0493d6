"""The surface table's rows for the registry changes (issue 15, "records are never deleted"): admins change
institutions, centers, agreements and accounts as new versions, and read the history. Read the docstring of
``surface_table`` first. Each PATCH sends a value the record already holds or a harmless note, so it writes no
version that another row could notice (a repeated PATCH is no new version); the POST names a member that has an
agreement already (409 once past role and scope)."""

from __future__ import annotations

from tests.integration.surface_table import Row, Target, expect

ADMINS = expect(admin=(200, 403))

REGISTRY = [
    Row(
        "PATCH",
        "/api/v1/institutions/{code}",
        ADMINS,
        target=lambda side: Target(f"/api/v1/institutions/{side.institution}", {"qc_failed": False}),
        note="admins of the institution's subtree; the value it holds already, so no new version",
    ),
    Row(
        "PATCH",
        "/api/v1/centers/{code}",
        ADMINS,
        target=lambda side: Target(f"/api/v1/centers/{side.center}", {"note": "surface table"}),
        note="admins of the center's institution or above",
    ),
    Row(
        "POST",
        "/api/v1/networks/{code}/agreements",
        expect(admin=(409, 403)),
        target=lambda side: Target(
            f"/api/v1/networks/NET-{side.center_institution}/agreements",
            {
                "member": side.institution,
                "valid_from": "2026-01-01",
                "valid_to": "2026-12-31",
                "services": ["ecg"],
                "invited_share_bp": 5000,
            },
        ),
        note="admins of the network lead; the township has an agreement already: PATCH it",
    ),
    Row(
        "PATCH",
        "/api/v1/networks/{code}/agreements/{member}",
        ADMINS,
        target=lambda side: Target(
            f"/api/v1/networks/NET-{side.center_institution}/agreements/{side.institution}",
            {"services": ["imaging", "ecg"]},
        ),
        note="admins of the network lead; the services it covers already",
    ),
    Row(
        "PATCH",
        "/api/v1/users/{username}",
        ADMINS,
        target=lambda side: Target(f"/api/v1/users/{side.spare_user}", {"title": "住院医师"}),
        note="admins of the account's institution or above; the side's spare account",
    ),
    Row(
        "POST",
        "/api/v1/forwarding/{id}/replay",
        expect(coordinator=(404, 404), admin=(404, 404)),
        target=lambda side: Target("/api/v1/forwarding/999999999/replay"),
        note="coordinators of the destination center and admins above it; the scenario has no dead letter, so "
        "a job that does not exist (scope is proven by tests/integration/test_dicom_forwarding.py)",
    ),
    Row(
        "GET",
        "/api/v1/registry/history",
        ADMINS,
        target=lambda side: Target(f"/api/v1/registry/history?kind=center&key={side.center}"),
        note="the versions of a record of the admin's subtree",
    ),
]
