"""Revocation reaches every hub process at once: a token cached by one process ends when another process
logs it out, disables its account or changes its password (PostgreSQL, separate `telenet serve` processes)."""

from __future__ import annotations

import aiohttp

from tests.conftest import TEST_PASSWORD, needs_postgres
from tests.scaleout.conftest import Cluster, HubNode

pytestmark = needs_postgres("several hub processes")
CLUSTER_SIZE = 2
CLUSTER_ENV = {"TELENET_DICOM_ENABLED": "false", "TELENET_HL7_ENABLED": "false"}


async def _status(http: aiohttp.ClientSession, node: HubNode, token: str) -> int:
    async with http.get(f"{node.url}/api/v1/requests", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def test_logout_on_one_process_ends_the_token_cached_by_the_others(cluster: Cluster) -> None:
    a, b = cluster.nodes
    token = cluster.token(a, "county_reader")
    async with aiohttp.ClientSession() as http:
        assert [await _status(http, n, token) for n in (a, b)] == [200, 200]  # cached everywhere
        async with http.post(f"{a.url}/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 204
        assert [await _status(http, n, token) for n in (b, a)] == [401, 401]


async def test_disabling_on_one_process_ends_every_token_everywhere(cluster: Cluster) -> None:
    a, b = cluster.nodes
    tokens = [cluster.token(node, "junior_reader") for node in (a, b)]
    admin = {"Authorization": f"Bearer {cluster.token(b, 'county_admin')}"}
    async with aiohttp.ClientSession() as http:
        assert [await _status(http, n, t) for t in tokens for n in (a, b)] == [200] * 4
        async with http.post(f"{b.url}/api/v1/users/junior_reader/disable", headers=admin) as r:
            assert r.status == 200 and (await r.json())["revoked_tokens"] == 2
        assert [await _status(http, n, t) for t in tokens for n in (a, b)] == [401] * 4
        async with http.post(f"{b.url}/api/v1/users/junior_reader/enable", headers=admin) as r:
            assert r.status == 200


async def test_a_password_change_on_one_process_ends_the_tokens_on_the_others(cluster: Cluster) -> None:
    a, b = cluster.nodes
    old = cluster.token(a, "city_reader")
    async with aiohttp.ClientSession() as http:
        assert [await _status(http, n, old) for n in (a, b)] == [200, 200]
        body = {"current_password": TEST_PASSWORD, "new_password": "another-pass-4321"}
        async with http.post(
            f"{b.url}/api/v1/auth/password", json=body, headers={"Authorization": f"Bearer {old}"}
        ) as r:
            assert r.status == 200, await r.text()
        assert [await _status(http, n, old) for n in (a, b)] == [401, 401]
