"""No request, however malformed, gets a 5xx: schemathesis over the OpenAPI schema, then hypothesis
over raw bodies and headers the schema does not describe. Runs without Ray (ASGI in-process)."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadasg_dist.serving.api import create_app
from cadasg_dist.serving.auth import KeyRing, hash_key, parse_keys
from cadasg_dist.serving.service import SamplingService
from cadasg_dist.serving.settings import ServeArgs

KEY = "fuzz-key-0c1d"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory):
    model_dir = str(tiny_model.save(tmp_path_factory.mktemp("fuzz") / "tiny"))
    args = ServeArgs(model_dir=model_dir, model_name="tiny", max_rows=300, rate_limit_per_s=None)
    service = SamplingService(args, keys=KeyRing(parse_keys(f"{hash_key(KEY)} model=tiny", "fuzz")))
    service.load(model_dir)
    return create_app(service)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_error(app, mode):
    """Every operation of the OpenAPI schema, with data that fits it (positive) and data that does
    not (negative), with and without a key. (schemathesis's pytest plugin does not run on pytest
    9, so its strategies are driven by hypothesis directly.)"""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.checks import not_a_server_error

    strategy = schemathesis.openapi.from_asgi("/openapi.json", app).as_strategy(schemathesis.GenerationMode(mode))

    @FAST
    @given(case=strategy)
    def check(case):
        for headers in ({"X-API-Key": KEY}, {}):
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

    check()


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
bodies = st.fixed_dictionaries({}, optional={
    "n": st.integers(-5, 400) | json_values, "context": st.dictionaries(
        st.sampled_from(["group", "sex", ""]) | st.text(max_size=5),
        st.sampled_from(["a", "b", "rare", "zzz"]) | scalars, max_size=3) | json_values,
    "seed": st.integers(-(2**70), 2**70) | json_values, "format": st.sampled_from(["json", "csv", "arrow", "xml"]),
}) | json_values


@FAST
@given(body=bodies)
def test_any_json_body_is_a_4xx_or_rows(client, body):
    try:
        content = json.dumps(body).encode()
    except ValueError:
        content = json.dumps(body, allow_nan=True).encode()
    r = client.post("/v1/sample", content=content, headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.status_code in (200, 400, 413, 422), r.text


@FAST
@given(content=st.binary(max_size=300), key=st.text(max_size=30))
def test_any_bytes_and_any_key_are_not_a_5xx(client, content, key):
    try:
        headers = httpx.Headers({"X-API-Key": key})
    except (UnicodeEncodeError, ValueError):
        headers = httpx.Headers({})
    for path in ("/v1/sample",):
        assert client.post(path, content=content, headers=headers).status_code < 500
    assert client.post("/v1/sample", content=content, headers={"X-API-Key": KEY}).status_code in (200, 400, 413, 422)
