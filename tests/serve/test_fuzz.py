"""schemathesis over the server's own OpenAPI schema (/openapi.json): generated requests, valid by the
schema and invalid on purpose, to every operation on a loopback server; none may get a 5xx. Bounded
(a fixed number of examples per operation, no example database), so it ends by itself."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_request_gets_a_server_error(fuzz_server, mode):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    if mode == GenerationMode.NEGATIVE:  # an operation that takes nothing has no invalid input
        operations = [op for op in operations if len(op.body)]
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case):
            response = case.call(base_url=fuzz_server.url, timeout=60)
            assert response.status_code < 500, (
                f"{case.method} {case.path} {case.body!r}: {response.text[:300]}"
            )
            seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)

        call()
    assert len(seen) == len(operations)
    print({k: sorted(v) for k, v in seen.items()})
