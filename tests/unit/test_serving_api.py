"""The HTTP API without Ray: routes, auth, validation, formats, determinism, version swaps, client.

The app is ``cadasg_dist.serving.api.create_app`` over a ``SamplingService`` holding a model trained in-process
(the session's ``tiny_model``); requests go through starlette's TestClient or httpx's ASGI
transport, so nothing here starts Ray or opens a port.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from cadasg_dist.client import Client, ServingError
from cadasg_dist.errors import ArtifactError, ConfigError
from cadasg_dist.serving.api import create_app
from cadasg_dist.serving.auth import KeyRing, hash_key, parse_keys
from cadasg_dist.serving.formats import read_arrow
from cadasg_dist.serving.service import SamplingService
from cadasg_dist.serving.settings import ServeArgs

KEY, OTHER_MODEL_KEY = "test-key-7f3a9c", "other-model-key-51e2"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    return str(tiny_model.save(tmp_path_factory.mktemp("serving") / "tiny"))


@pytest.fixture(scope="module")
def second_model_dir(mixed_table, tiny_config, tmp_path_factory):
    from cadasg_dist.synthesizer import CADASG

    model = CADASG(tiny_config.replace(**{"train.seed": 1})).fit(mixed_table)
    return str(model.save(tmp_path_factory.mktemp("serving") / "tiny-v2"))


def make_service(model_dir: str | None, **overrides) -> SamplingService:
    settings = {"model_dir": model_dir or "unused", "model_name": "tiny", "max_rows": 2_000, "chunk_rows": 500,
                "merge_max_n": 200, "rate_limit_per_s": 1_000, "rate_limit_burst": 1_000, **overrides}
    args = ServeArgs(**settings)
    keys = KeyRing(parse_keys(f"{hash_key(KEY)} model=tiny label=tests\n{hash_key(OTHER_MODEL_KEY)} model=other",
                              "test-keys"))
    service = SamplingService(args, keys=keys)
    if model_dir:
        service.load(model_dir)
    return service


@pytest.fixture(scope="module")
def service(model_dir):
    return make_service(model_dir)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal values; Arrow brings text back as pandas' string dtype where the library has object."""
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def post(client, body=None, *, content=None, headers=HEADERS):
    if content is not None:
        return client.post("/v1/sample", content=content, headers={**headers, "Content-Type": "application/json"})
    return client.post("/v1/sample", json=body, headers=headers)


# --- routes -----------------------------------------------------------------------------------
def test_healthz_reports_the_version_without_a_key(client, service):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": "tiny", "model_version": service.current.version}


def test_healthz_is_503_and_sampling_is_503_when_no_model_loaded():
    service = make_service(None)
    service.load_error = "ArtifactError: /models/x is missing"
    with pytest.raises(RuntimeError, match="is missing"):  # Serve's health check: the replica is replaced
        service.check_health()
    with TestClient(create_app(service)) as c:
        assert c.get("/healthz").status_code == 503
        r = post(c, {"n": 5})
        assert r.status_code == 503 and "Retry-After" in r.headers


def test_model_shows_public_metadata_only(client, service, tiny_model):
    r = client.get("/v1/model", headers=HEADERS)
    assert r.status_code == 200
    info = r.json()
    assert info["version"] == service.current.version == r.headers["X-Model-Version"]
    assert info["created"] == tiny_model.meta["created"]
    assert info["contexts"]["columns"] == ["group"]
    assert sorted(info["contexts"]["values"]["group"]) == ["a", "b", "rare"]
    assert info["privacy"] == {"private": False, "epsilon": None, "delta": None, "accountant": "none",
                               "note": "NOT PRIVATE: trained without differential privacy"}
    assert info["limits"]["max_rows"] == 2_000
    columns = {c["name"]: c for c in info["schema"]["columns"]}
    assert set(columns) == set(tiny_model.schema.names)
    # bounds and categories estimated from the rows are withheld; booleans' {False, True} is declared
    assert "min" not in columns["amount"] and "categories" not in columns["label"]
    assert columns["flag"]["categories"] == [False, True]
    text = r.text
    assert "training_rows" not in text and "history" not in text and "cache" not in text


# --- auth -------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-API-Key": "not-a-key"}, 401),
    ({"X-API-Key": OTHER_MODEL_KEY}, 403),
    ({"Authorization": f"Bearer {KEY}"}, 200),
    ({"X-API-Key": KEY}, 200),
])
def test_auth_statuses(client, headers, status):
    assert client.get("/v1/model", headers=headers).status_code == status
    assert post(client, {"n": 3, "seed": 1}, headers=headers).status_code == status


def test_auth_comes_before_body_parsing(client):
    assert post(client, content=b"{not json", headers={}).status_code == 401


def test_keys_are_never_logged(client, caplog):
    with caplog.at_level(logging.DEBUG):
        for key in (KEY, OTHER_MODEL_KEY, "wrong-key-xyz"):
            post(client, {"n": 2}, headers={"X-API-Key": key})
    assert caplog.records, "expected at least the 403 to be logged"
    for key in (KEY, OTHER_MODEL_KEY, "wrong-key-xyz", hash_key(KEY)[7:]):
        assert key not in caplog.text


def test_rate_limit_is_per_key_with_retry_after(model_dir):
    service = make_service(model_dir, rate_limit_per_s=0.5, rate_limit_burst=2)
    with TestClient(create_app(service)) as c:
        codes = [c.get("/v1/model", headers=HEADERS).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.get("/v1/model", headers=HEADERS)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert c.get("/v1/model", headers={"X-API-Key": OTHER_MODEL_KEY}).status_code == 403  # own bucket


def test_every_kth_answer_asks_the_client_to_reconnect(model_dir):
    service = make_service(model_dir, reconnect_every=3)
    with TestClient(create_app(service)) as c:
        closes = [post(c, {"n": 5, "seed": i}).headers.get("connection") for i in range(6)]
        assert closes == [None, None, "close", None, None, "close"]
    never = make_service(model_dir, reconnect_every=0)
    with TestClient(create_app(never)) as c:
        assert all("connection" not in post(c, {"n": 5}).headers for _ in range(4))


def test_no_keys_refuses_to_start_unless_anonymous_is_explicit(model_dir):
    with pytest.raises(ConfigError, match="no API keys"):
        SamplingService(ServeArgs(model_dir=model_dir), keys=KeyRing([]))
    service = SamplingService(ServeArgs(model_dir=model_dir, allow_anonymous=True), keys=KeyRing([]))
    service.load(model_dir)
    with TestClient(create_app(service)) as c:
        assert post(c, {"n": 2}, headers={}).status_code == 200


# --- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, fragment", [
    ({"n": 0}, 422, "greater than 0"),
    ({"n": -5}, 422, "greater than 0"),
    ({"n": "5"}, 422, "valid integer"),
    ({"n": 2.5}, 422, "valid integer"),
    ({"n": True}, 422, "valid integer"),
    ({}, 422, "n: Field required"),
    ({"n": 5, "seed": -1}, 422, "seed"),
    ({"n": 5, "format": "xml"}, 422, "format"),
    ({"n": 5, "colour": "red"}, 422, "colour"),
    ({"n": 5, "context": {"group": [1, 2]}}, 422, "context.group"),
    ({"n": 5, "context": {"group": 10**30}}, 422, "unknown value"),
    ({"n": 5, "context": {"group": 10**400}}, 422, "context.group"),
    ({"n": 2_001}, 413, "maximum of 2000"),
    ({"n": 10**40}, 413, "maximum"),
    ([1, 2, 3], 422, "body"),
])
def test_invalid_bodies(client, body, status, fragment):
    r = post(client, body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


@pytest.mark.parametrize("content", [b"{bad", b"", b"\xff\xfe\x00", b"[" * 100_000, b'{"n": 5,}'])
def test_malformed_json_is_400(client, content):
    r = post(client, content=content)
    assert r.status_code == (413 if len(content) > 65_536 else 400), r.text


def test_nan_literal_is_422_not_500(client):
    assert post(client, content=b'{"n": NaN}').status_code == 422
    assert post(client, content=b'{"n": 3, "context": {"group": Infinity}}').status_code == 422


def test_unknown_context_column_lists_the_valid_ones(client):
    r = post(client, {"n": 5, "context": {"sex": "F"}})
    assert r.status_code == 422
    body = r.json()
    assert "unknown context column 'sex'" in body["detail"] and "group" in body["detail"]
    assert sorted(body["valid"]["group"]) == ["a", "b", "rare"]


def test_unknown_context_value_lists_the_valid_ones(client):
    r = post(client, {"n": 5, "context": {"group": "zzz"}})
    assert r.status_code == 422
    assert "valid values: a, b, rare" in r.json()["detail"]


# --- formats and determinism -------------------------------------------------------------------
def test_json_rows_with_nulls_and_iso_datetimes(client):
    r = post(client, {"n": 150, "context": {"group": "rare"}, "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["n"] == 150 and body["seed"] == 3 and len(body["rows"]) == 150
    assert body["columns"] == list(body["rows"][0])
    assert {row["group"] for row in body["rows"]} == {"rare"}
    assert any(row["amount"] is None for row in body["rows"])  # NaN -> null
    pd.Timestamp(body["rows"][0]["when"])  # an ISO string
    assert body["rows"][0]["when"][4] == "-"


def test_csv_and_arrow_media_types(client, tiny_model):
    csv = post(client, {"n": 40, "seed": 9, "format": "csv"})
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert len(pd.read_csv(io.BytesIO(csv.content))) == 40
    arrow = post(client, {"n": 40, "seed": 9, "format": "arrow"})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    same_rows(read_arrow(arrow.content), tiny_model.sample(40, seed=9))


@pytest.mark.parametrize("fmt", ["json", "csv", "arrow"])
def test_same_seed_same_bytes(client, fmt):
    body = {"n": 120, "context": {"group": "a"}, "seed": 11, "format": fmt}
    first, second = post(client, body), post(client, body)
    assert first.status_code == 200 and first.content == second.content
    assert post(client, {**body, "seed": 12}).content != first.content


def test_rows_equal_the_library_sample(client, tiny_model):
    r = post(client, {"n": 77, "context": {"group": "b"}, "seed": 5, "format": "arrow"})
    same_rows(read_arrow(r.content), tiny_model.sample(77, context={"group": "b"}, seed=5))


def test_no_seed_returns_the_one_used(client):
    r = post(client, {"n": 10, "format": "arrow"})
    seed = int(r.headers["X-Seed"])
    assert post(client, {"n": 10, "format": "arrow", "seed": seed}).content == r.content


@pytest.mark.parametrize("fmt", ["json", "csv", "arrow"])
def test_large_answers_are_streamed_and_complete(client, tiny_model, fmt):
    r = post(client, {"n": 1_700, "seed": 2, "format": fmt})  # chunk_rows=500: 4 chunks
    assert r.status_code == 200 and "content-length" not in r.headers
    if fmt == "arrow":
        same_rows(read_arrow(r.content), tiny_model.sample(1_700, seed=2))
    elif fmt == "csv":
        assert len(pd.read_csv(io.BytesIO(r.content))) == 1_700
    else:
        assert len(json.loads(r.content)["rows"]) == 1_700


# --- model versions ---------------------------------------------------------------------------
def test_version_swap_under_concurrent_requests(model_dir, second_model_dir):
    service = make_service(model_dir)
    first = service.current.version
    app = create_app(service)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            async def one(i):
                return await c.post("/v1/sample", json={"n": 30, "seed": i}, headers=HEADERS)

            before = [asyncio.create_task(one(i)) for i in range(20)]
            swap = asyncio.create_task(service.load_async(second_model_dir, "v2"))
            during = [asyncio.create_task(one(i)) for i in range(20, 40)]
            await swap
            after = [await one(i) for i in range(40, 45)]
            info = (await c.get("/v1/model", headers=HEADERS)).json()
            return [await t for t in before + during] + after, info

    responses, info = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * len(responses)
    versions = [r.headers["X-Model-Version"] for r in responses]
    assert set(versions) <= {first, "v2"} and versions[-5:] == ["v2"] * 5
    assert info["version"] == "v2"


def test_a_bad_artifact_keeps_the_current_version(model_dir, tmp_path):
    service = make_service(model_dir)
    before = service.current
    with pytest.raises(ArtifactError):
        service.load(str(tmp_path / "missing"))
    assert service.current is before


def test_non_latin1_names_are_percent_encoded_in_headers(model_dir):
    args = ServeArgs(model_dir=model_dir, model_name="modèle-α", version="v-é", allow_anonymous=True)
    service = SamplingService(args, keys=KeyRing([]))
    service.load(model_dir, "v-é")
    with TestClient(create_app(service)) as c:
        r = post(c, {"n": 2}, headers={})
        assert r.status_code == 200 and r.json()["model"] == "modèle-α"
        rows = Client(http=c).sample(2)
        assert (rows.attrs["model"], rows.attrs["model_version"]) == ("modèle-α", "v-é")


# --- the Python client ------------------------------------------------------------------------
def test_client_returns_dataframes(client, tiny_model):
    c = Client(api_key=KEY, http=client)
    assert c.model()["name"] == "tiny"
    for fmt in ("arrow", "json", "csv"):
        rows = c.sample(25, context={"group": "a"}, seed=4, format=fmt)
        assert isinstance(rows, pd.DataFrame) and len(rows) == 25
        assert rows.attrs["seed"] == 4 and rows.attrs["model"] == "tiny"
    same_rows(c.sample(25, context={"group": "a"}, seed=4),
                                  tiny_model.sample(25, context={"group": "a"}, seed=4))


def test_client_raises_serving_errors(client):
    with pytest.raises(ServingError, match="valid values") as err:
        Client(api_key=KEY, http=client).sample(5, context={"group": "nope"})
    assert err.value.status == 422
    with pytest.raises(ServingError) as err:
        Client(api_key="wrong", http=client).model()
    assert err.value.status == 401


@pytest.mark.parametrize("fmt", ["json", "arrow"])
def test_streamed_answers_are_sample_rows_and_generated_lazily(client, tiny_model, fmt, monkeypatch):
    from cadasg_dist.serving import sampler

    drawn: list[int] = []
    real = sampler._numbered

    def counting(*args):
        for frame in real(*args):
            drawn.append(len(frame))
            yield frame

    monkeypatch.setattr(sampler, "_numbered", counting)
    monkeypatch.setitem(sampler.iter_sample.__kwdefaults__, "chunk", 400)  # 3 library chunks, not 1
    r = post(client, {"n": 1_100, "seed": 4, "format": fmt, "context": {"group": "a"}})
    assert r.status_code == 200 and r.headers["X-Rows"] == "1100" and drawn == [400, 400, 300]
    want = tiny_model.sample(1_100, seed=4, context={"group": "a"}, chunk=400)
    got = read_arrow(r.content) if fmt == "arrow" else pd.DataFrame(json.loads(r.content)["rows"])
    assert len(got) == 1_100 and list(got.columns) == list(want.columns)
    if fmt == "arrow":
        same_rows(got, want)


def test_a_bad_context_on_a_streamed_request_is_a_422_not_a_broken_stream(client):
    r = post(client, {"n": 1_700, "context": {"group": "nowhere"}})
    assert r.status_code == 422
