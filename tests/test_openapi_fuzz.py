"""Schemathesis over the OpenAPI schema: generated requests to every operation, zero server errors,
and every status and body the schema documents (few examples per operation, seeded: a quick run)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from monitor.config import Settings  # noqa: E402
from monitor.pipeline.builder import build_service  # noqa: E402
from tests.helpers.server import running_server  # noqa: E402

ADMIN = "admin-fuzz-secret-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# Bodies the schema declares as text or bytes go on the wire as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")


@pytest.fixture(scope="module")
def live(embedder):
    config = Settings(judge="prototype", admin_tokens=f"fuzz:{ADMIN}", max_events_per_request=50, queue_capacity=2000)
    with running_server(config, lambda s: build_service(s, embedder=embedder)) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_dict(live.app.openapi())


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation; building the app loads no model."""
    from monitor.api.app import create_app

    paths = create_app(Settings(admin_tokens=f"fuzz:{ADMIN}")).openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def _fuzz(api_schema, live, method: str, path: str, examples: int, token: str | None) -> list[int]:
    """Run ``examples`` positive and negative cases of one operation; returns the statuses seen."""
    from hypothesis import given, strategies as st

    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE), operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)
    )
    seen: list[int] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    @given(case=cases)
    @settings(max_examples=examples, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(base_url=live.url, headers=headers, timeout=60)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
    return seen


@pytest.mark.parametrize("method, path", _operations())
def test_no_server_errors_and_documented_answers(api_schema, live, method, path):
    seen = _fuzz(api_schema, live, method, path, examples=12, token=ADMIN)
    print(method, path, sorted(set(seen)))
    assert seen and all(code < 500 for code in seen)


@pytest.mark.parametrize("method, path", _operations())
def test_without_a_token_every_data_endpoint_answers_a_documented_401(api_schema, live, method, path):
    seen = _fuzz(api_schema, live, method, path, examples=2, token=None)
    if path not in ("/healthz", "/readyz", "/metrics"):
        assert set(seen) == {401}
