"""Property-based API test: schemathesis generates requests from the served OpenAPI document and
checks every answer against it (no server error, documented status, content type and body)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from live_service import TOKEN, Service

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def operations(url: str) -> list[Any]:
    document = httpx.get(f"{url}/api/v1/openapi.json", headers=AUTH).json()
    # The endless streams cannot be called and awaited like the rest; their own tests cover them.
    schema = schemathesis.openapi.from_dict(document).exclude(path_regex="/stream")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    service = Service(tmp_path / "data" / "events.db", manager={"batch_timeout": 0.01})
    try:
        found = operations(service.http.url)
        assert len(found) >= 12, [op.label for op in found]
        for operation in found:

            @given(case=operation.as_strategy())
            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: Any) -> None:
                case.call_and_validate(base_url=service.http.url, headers=AUTH)

            try:
                check()
            except Exception as exc:
                raise AssertionError(f"{operation.label}: {exc}") from exc
    finally:
        service.close()
