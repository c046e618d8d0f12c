"""The HTTP API through FastAPI's test client: every route, every error a client can cause."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from padless.decoding.batched import decode_ids, decode_lines, decode_texts, make_generator
from padless.decoding.options import SearchOptions
from padless.runs.loading import load_model
from padless.serving.app import PAGE_FILES, create_app
from padless.serving.server import load_app
from padless.serving.settings import ServeSettings

LIMITS = ServeSettings(max_chars=200, max_input_tokens=12, max_lines=5, max_beam=4,
                       max_body_bytes=4096, timeout_s=30)
OPTIONS = SearchOptions(max_length=10)


@pytest.fixture(scope="module")
def run(qa_run_dir: Path):
    """``(model, text)`` of the tiny run, as the server loads it."""
    model, text, _ = load_model(qa_run_dir, device="cpu")
    return model, text


@pytest.fixture(scope="module")
def client(qa_run_dir: Path) -> Iterator[TestClient]:
    app = load_app(qa_run_dir, device="cpu", defaults=OPTIONS, settings=LIMITS,
                   precision="fp32")  # answers compared with the fp32 model's own
    with TestClient(app) as client:  # runs the lifespan: the batcher's worker
        yield client


def test_chat_answers_as_decoding_alone_with_the_heatmap_data(client, run) -> None:
    model, text = run
    response = client.post("/v1/chat", json={"message": "How are you?"})
    assert response.status_code == 200, response.text
    body = response.json()
    ids = text.encode("How are you?")
    ((hyp,),) = decode_ids(model, [ids], OPTIONS)
    assert body["reply"] == text.decode(hyp.tokens) and body["method"] == "greedy"
    assert body["tokens"] == text.vocab.decode(hyp.tokens)
    assert body["score"] == pytest.approx(hyp.score, abs=1e-4)
    assert body["source_tokens"] == ["how", "are", "you", "?"]
    attention = body["attention"]
    assert len(attention) == len(hyp.tokens) + hyp.finished
    assert all(len(row) == 4 and sum(row) == pytest.approx(1, abs=1e-3) for row in attention)
    assert body["latency_ms"] > 0


def test_chat_search_options(client, run) -> None:
    model, text = run
    ids = text.encode("hello there")

    def chat(**fields) -> dict:
        response = client.post("/v1/chat", json={"message": "hello there", **fields})
        assert response.status_code == 200, response.text
        return response.json()

    beam = chat(beam=3)
    ((expected,),) = decode_ids(model, [ids], SearchOptions("beam", 10, beam_size=3))
    assert beam["method"] == "beam" and beam["tokens"] == text.vocab.decode(expected.tokens)
    assert chat(beam=1)["method"] == "greedy"
    sampled = chat(sample=True, temperature=1.5, top_p=0.9, seed=3)
    options = SearchOptions("sample", 10, temperature=1.5, top_p=0.9)
    ((expected,),) = decode_ids(model, [ids], options, generator=make_generator(3, model.device))
    assert sampled["method"] == "sample" and sampled["reply"] == text.decode(expected.tokens)
    assert chat(sample=True, temperature=1.5, top_p=0.9, seed=3)["reply"] == sampled["reply"]


@pytest.mark.parametrize("fields", [{"temperature": 1e-45}, {"temperature": 1e-39},
                                    {"temperature": 5e-324}, {"top_p": 1e-300}])
def test_sampling_at_the_smallest_values_the_schema_takes_is_greedy(client, run,
                                                                      fields) -> None:
    """These were 500s (multinomial: probability tensor contains inf/nan)."""
    model, text = run
    response = client.post("/v1/chat", json={"message": "hello there", "sample": True,
                                             "seed": 1, **fields})
    assert response.status_code == 200, response.text
    ((greedy,),) = decode_ids(model, [text.encode("hello there")], SearchOptions(max_length=10))
    assert response.json()["tokens"] == text.vocab.decode(greedy.tokens)


@pytest.mark.parametrize("message", ["", "   ", "#%&"])
def test_a_message_with_no_words_gets_an_empty_reply(client, message) -> None:
    """As an empty line at chat's prompt and in translate; it was a 422 that the schema did
    not foresee."""
    response = client.post("/v1/chat", json={"message": message})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == "" and body["tokens"] == [] and body["attention"] == []


def test_the_openapi_document_states_the_servers_limits_and_the_field_rules(client) -> None:
    """So that a body the schema calls valid is one the server takes (schemathesis's
    positive-data check, tests/serving/fuzz_api.py)."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    chat, translate = schemas["ChatRequest"], schemas["TranslateRequest"]
    assert chat["properties"]["message"]["maxLength"] == LIMITS.max_chars
    assert translate["properties"]["lines"]["maxItems"] == LIMITS.max_lines
    assert translate["properties"]["lines"]["items"]["maxLength"] == LIMITS.max_chars
    assert chat["properties"]["beam"]["anyOf"][0]["maximum"] == LIMITS.max_beam
    (rule,) = chat["allOf"]
    assert rule["then"]["properties"] == {"beam": {"type": "null"}}
    assert set(rule["else"]["properties"]) == {"temperature", "top_k", "top_p"}
    assert client.post("/v1/chat", json={"message": "hi", "beam": 2.0}).status_code == 200


def test_translate_answers_every_line_in_input_order(client, run) -> None:
    model, text = run
    lines = ["what is your name ?", "", "hi", "where do you live today my friend ?"]
    response = client.post("/v1/translate", json={"lines": lines, "beam": 2})
    assert response.status_code == 200, response.text
    expected = decode_texts(model, text, lines, SearchOptions("beam", 10, beam_size=2))
    assert response.json()["translations"] == expected and expected[1] == ""
    assert client.post("/v1/translate", json={"lines": ["", " "]}).json()["translations"] == [
        "", ""]
    assert client.post("/v1/translate", json={"lines": []}).json()["translations"] == []


def test_model_describes_the_run_and_the_server(client, run) -> None:
    info = client.get("/v1/model").json()
    assert info["arch"] == "gru" and info["checkpoint"] == "best" and info["step"] == 1
    assert info["vocab_size"] == len(run[1].vocab)
    assert info["parameters"] == sum(p.numel() for p in run[0].parameters())
    assert info["model"]["hidden_size"] == 16
    assert info["best_valid_loss"] == pytest.approx(info["valid"]["loss"])
    assert info["limits"]["max_lines"] == 5 and info["defaults"]["max_length"] == 10
    assert info["precision"]["name"] == "fp32" and info["precision"]["hardware"].startswith("cpu")


def test_healthz_counts_the_work(client) -> None:
    before = client.get("/healthz").json()
    client.post("/v1/chat", json={"message": "hi"})
    after = client.get("/healthz").json()
    assert after["status"] == "ok" and after["queued"] == 0 and after["in_flight"] == 0
    assert after["requests"] == before["requests"] + 1


def test_the_page_and_its_files_load_nothing_from_elsewhere(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for route, (name, _) in PAGE_FILES.items():
        body = client.get(route).text
        assert body == (files("padless.serving") / "static" / name).read_text("utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9]", body, re.IGNORECASE), name
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/v1/chat" in client.get("/openapi.json").json()["paths"]


LONG = "word " * 13  # 13 tokens: one over the limit
ERRORS = [  # (method, route, body or raw bytes, status, part of the message)
    ("post", "/v1/chat", b'{"message": ', 422, "not valid JSON"),
    ("post", "/v1/chat", b"\xff\xfe", 422, "not valid JSON"),
    ("post", "/v1/chat", [], 422, "body"),
    ("post", "/v1/chat", {}, 422, "body.message: Field required"),
    ("post", "/v1/chat", {"message": 3}, 422, "body.message"),
    ("post", "/v1/chat", {"message": "hi", "temprature": 2}, 422, "body.temprature"),
    ("post", "/v1/chat", {"message": "hi", "beam": 0}, 422, "body.beam"),
    ("post", "/v1/chat", {"message": "hi", "beam": 5}, 422, "at most 4"),
    ("post", "/v1/chat", {"message": "hi", "beam": 2, "sample": True}, 422, "exclude"),
    ("post", "/v1/chat", {"message": "hi", "top_k": 5}, 422, "top_k applies to sampling"),
    ("post", "/v1/chat", {"message": "hi", "sample": True, "top_p": 0}, 422, "body.top_p"),
    ("post", "/v1/chat", b'{"message": "hi", "sample": true, "temperature": NaN}', 422,
     "body.temperature"),
    ("post", "/v1/chat", {"message": "hi", "sample": True, "seed": -1}, 422, "body.seed"),
    ("post", "/v1/chat", {"message": "hi", "sample": True, "seed": 2**70}, 422, "body.seed"),
    ("post", "/v1/chat", {"message": "hi", "sample": True, "seed": 2**53}, 422, "body.seed"),
    # what JSON Schema calls no number or no boolean, which pydantic's lax mode took
    ("post", "/v1/chat", {"message": "hi", "sample": True, "seed": False}, 422, "body.seed"),
    ("post", "/v1/chat", {"message": "hi", "beam": "2"}, 422, "body.beam"),
    ("post", "/v1/chat", {"message": "hi", "sample": 1}, 422, "body.sample"),
    ("post", "/v1/chat", {"message": " ?! "}, 200, ""),
    ("post", "/v1/chat", {"message": "a" * 201}, 413, "201 characters"),
    ("post", "/v1/chat", {"message": LONG}, 413, "13 tokens"),
    ("post", "/v1/chat", b'{"message": "\\ud800 hi"}', 422, "lone surrogate"),
    ("post", "/v1/chat", {"message": "x" * 5000}, 413, "the request body has"),
    ("post", "/v1/translate", {"lines": ["hi"] * 6}, 413, "6 lines"),
    ("post", "/v1/translate", {"lines": ["hi", LONG]}, 413, "lines[1]: 13 tokens"),
    ("post", "/v1/translate", {"lines": "hi"}, 422, "body.lines"),
    ("post", "/v1/translate", {"lines": [None]}, 422, "body.lines.0"),
    ("get", "/v1/chat", None, 405, "Method Not Allowed"),
    ("get", "/nowhere", None, 404, "Not Found"),
    ("get", "/../../etc/passwd", None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "route", "body", "status", "message"), ERRORS)
def test_client_errors_are_4xx_with_a_json_message(client, method, route, body, status,
                                                   message) -> None:
    if method == "get":
        response = client.get(route)
    elif isinstance(body, bytes):
        response = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(route, json=body)
    assert response.status_code == status, response.text
    if status != 200:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and message in detail and "\n" not in detail


def test_a_chunked_body_over_the_limit_is_refused(client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"message": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = client.post("/v1/chat", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "more than 4096 bytes" in response.json()["detail"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(
    st.sampled_from(["message", "beam", "sample", "temperature", "top_k", "top_p", "seed",
                     "lines", "extra"]),
    st.none() | st.booleans() | st.integers(-3, 10)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.lists(st.text(max_size=10), max_size=3),
))
def test_no_request_body_makes_a_server_error(client, body) -> None:
    for route in ("/v1/chat", "/v1/translate"):
        response = client.post(route, json=body)
        assert response.status_code in (200, 413, 422), response.text
        assert response.status_code == 200 or isinstance(response.json()["detail"], str)


def test_a_full_queue_answers_429_and_a_late_answer_504(run) -> None:
    model, text = run
    app = create_app(model, text, settings=ServeSettings(max_queue=1, timeout_s=0.2))
    client = TestClient(app)  # no lifespan: the batcher's worker never starts
    response = client.post("/v1/chat", json={"message": "hi"})
    assert response.status_code == 504 and "0.2 s" in response.json()["detail"]
    batcher = app.state.batcher
    assert batcher.queued == 0 and batcher.stats.requests == 0  # given up on: it left
    waiting = batcher.submit([text.encode("hi")], SearchOptions())
    assert batcher.queued == 1 and not waiting.cancelled()
    full = client.post("/v1/chat", json={"message": "hi"})
    assert full.status_code == 429 and full.headers["retry-after"] == "1"
    assert "busy" in full.json()["detail"]
    batcher.draining = True
    draining = client.post("/v1/chat", json={"message": "hi"})
    assert draining.status_code == 503 and "shutting down" in draining.json()["detail"]
    assert client.get("/healthz").status_code == 503


@pytest.mark.parametrize("field", ["max_chars", "max_batch_size", "max_queue", "timeout_s",
                                   "max_wait_ms"])
def test_bad_settings_name_the_setting(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ServeSettings(**{field: -1})


def test_model_info_is_plain_json(client) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200 and response.json()["arch"] == "gru"

    def refuse(constant: str) -> None:
        raise AssertionError(f"/v1/model holds {constant}, which JSON has not")

    json.loads(response.text, parse_constant=refuse)  # NaN, Infinity


def test_a_search_the_server_cannot_combine_with_its_defaults_is_422(run) -> None:
    model, text = run
    app = create_app(model, text, defaults=SearchOptions("beam", 10, beam_size=4, n_best=3))
    with TestClient(app) as client:
        response = client.post("/v1/chat", json={"message": "hi", "beam": 2})
        assert response.status_code == 422 and "n_best" in response.json()["detail"]
        assert client.post("/v1/chat", json={"message": "hi"}).status_code == 200


def test_translate_returns_n_best_alternatives_and_refuses_more_than_the_beams(client,
                                                                                 run) -> None:
    model, text = run
    lines = ["what is your name ?", "hi"]
    response = client.post("/v1/translate", json={"lines": lines, "beam": 3, "n_best": 2})
    assert response.status_code == 200, response.text
    expected = decode_lines(model, text, lines, SearchOptions("beam", 10, beam_size=3,
                                                              n_best=2))
    body = response.json()
    assert body["translations"] == [nbest[0][0] for nbest in expected]
    assert [[(a["text"], a["score"], a["log_prob"]) for a in alternatives]
            for alternatives in body["n_best"]] == [
        [(answer, pytest.approx(h.score, abs=1e-4), pytest.approx(h.log_prob, abs=1e-4))
         for answer, h in nbest] for nbest in expected]
    assert client.post("/v1/translate", json={"lines": lines}).json()["n_best"] is None
    for fields in ({"beam": 2, "n_best": 3}, {"n_best": 2}):
        response = client.post("/v1/translate", json={"lines": lines, **fields})
        assert response.status_code == 422 and "n_best" in response.json()["detail"]


def test_chat_and_translate_answers_start_with_the_prefix_asked_for(client, run) -> None:
    model, text = run
    reply = client.post("/v1/chat", json={"message": "what is your name ?", "prefix": "my name"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["reply"].startswith("my name")
    lines = ["what is your name ?", "hi"]
    body = {"lines": lines, "prefixes": ["my name", ""], "beam": 2}
    response = client.post("/v1/translate", json=body)
    assert response.status_code == 200, response.text
    expected = decode_lines(model, text, lines, SearchOptions("beam", 10, beam_size=2),
                            prefixes=["my name", ""])
    assert response.json()["translations"] == [nbest[0][0] for nbest in expected]
    for fields, words in (({"prefixes": ["my"]}, "1 prefixes for 2 inputs"),
                          ({"prefixes": ["zyxxy", ""]}, "outside the model's vocabulary")):
        response = client.post("/v1/translate", json={"lines": lines, **fields})
        assert response.status_code == 422 and words in response.json()["detail"]
