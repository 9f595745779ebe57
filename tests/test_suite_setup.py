"""The test run itself: `make test` runs with `--dist loadgroup` so that the tests of one `xdist_group`
(the compile tests, the tests sharing one transformers SmolLM2) run on one worker. pytest-xdist marks
them by appending `@group` to the node id; a pytest it cannot do that with spreads the group over both
workers and makes each pay for the compiles (pyproject.toml pins pytest below that version)."""

import pytest


@pytest.mark.xdist_group("compile")
def test_loadgroup_marks_the_node_id(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks `--dist loadgroup` runs (make test); this run has no groups to keep")
    assert request.node.nodeid.endswith("@compile")
