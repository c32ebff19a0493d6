"""DICOMweb test helpers: a dicomweb-client (PyPI, a peer nobody here wrote) bound to the test server with a
bearer token, run off the event loop (it is synchronous: requests), and instances to store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.dicom_fixtures import instance

T = TypeVar("T")


class Web:
    """One user's dicomweb-client against the test hub; ``await web.call(lambda c: c.search_for_studies())``."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.client = DICOMwebClient(url=f"{base_url}/dicom-web", headers=headers)

    async def call(self, fn: Callable[[DICOMwebClient], T]) -> T:
        return await asyncio.to_thread(fn, self.client)


async def web_for(client: Any, username: str) -> Web:
    headers = await client.login(username)
    return Web(str(client.make_url("")).rstrip("/"), headers)


def study(count: int = 2, *, source: str = "CT_small.dcm", **kwargs: Any) -> list[Dataset]:
    """``count`` instances of one new study and series (same UIDs), numbered 1..count."""
    first = instance(source, **kwargs)
    out = [first]
    for _ in range(count - 1):
        out.append(
            instance(
                source,
                study_uid=first.StudyInstanceUID,
                series_uid=first.SeriesInstanceUID,
                **{k: v for k, v in kwargs.items() if k not in ("study_uid", "series_uid")},
            )
        )
    for number, ds in enumerate(out, start=1):
        ds.InstanceNumber = number
    return out
