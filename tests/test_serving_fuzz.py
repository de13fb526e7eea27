"""Property-based fuzz of the server's own OpenAPI schema (schemathesis over hypothesis) against a real
server process: no generated request, valid or not, gets a 5xx, and the server is healthy afterwards.
Every route of the schema is fuzzed: KServe's (V1, V2, health, metadata) and DuoGen's (/openai/v1)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

sys.path.insert(0, str(Path(__file__).parent))
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    root = tmp_path_factory.mktemp("fuzz")
    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(root / "pair")
    command = [
        DUOGEN,
        "serve",
        "--model",
        str(root / "pair"),
        "--max-new-tokens",
        "8",
        "--max-image-side",
        "64",
        "--timeout",
        "60",
    ]
    with predictor_server(command, root / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def api(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case, server):
    case.call_and_validate(base_url=server.url, checks=[not_a_server_error], timeout=60)


def test_the_server_is_healthy_after_the_fuzz(server):
    assert server.healthy()
