"""``"stream": true``: answers as Server-Sent Events, a token at a time from the continuous
batch, then the whole answer; a client that leaves mid-stream frees its row."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from padless.decoding.options import SearchOptions
from padless.runs.loading import load_model
from padless.serving.app import create_app
from padless.serving.server import load_app
from padless.serving.settings import ServeSettings
from tests.helpers import QUESTIONS, serve_in_thread, wait_until

OPTIONS = SearchOptions(max_length=12)


def events(body: str) -> list[tuple[str, dict]]:
    """The ``(event, data)`` pairs of a text/event-stream body."""
    found = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((fields["event"], json.loads(fields["data"])))
    return found


# answers that end with EOS, and answers that are all cut at max_length (whose last token
# comes from the step on which their row leaves the batch)
@pytest.fixture(scope="module", params=[OPTIONS, SearchOptions(max_length=4, min_length=4)],
                ids=["ended", "cut"])
def client(qa_run_dir: Path, request):
    app = load_app(qa_run_dir, device="cpu", defaults=request.param, precision="fp32")
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("search", [{}, {"sample": True, "seed": 4}])
def test_chat_streams_its_tokens_then_the_answer_it_would_give(client, search) -> None:
    body = {"message": "what is your name ?", **search}
    plain = client.post("/v1/chat", json=body).json()
    response = client.post("/v1/chat", json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    (last, final), tokens = got[-1], [data for name, data in got[:-1]]
    assert last == "done" and all(name == "token" for name, _ in got[:-1])
    assert {k: final[k] for k in ("reply", "tokens", "score")} == {
        k: plain[k] for k in ("reply", "tokens", "score")}
    assert [t["token"] for t in tokens] == final["tokens"]
    assert tokens[-1]["text"] == final["reply"]


def test_translate_streams_each_lines_tokens_with_its_index(client) -> None:
    lines = QUESTIONS[:3]
    plain = client.post("/v1/translate", json={"lines": lines}).json()
    got = events(client.post("/v1/translate", json={"lines": lines, "stream": True}).text)
    assert got[-1][0] == "done" and got[-1][1]["translations"] == plain["translations"]
    for index in range(3):
        texts = [data["text"] for name, data in got[:-1] if data["index"] == index]
        assert texts[-1] == plain["translations"][index]


def test_beam_search_does_not_stream(client) -> None:
    response = client.post("/v1/chat", json={"message": "hi", "beam": 2, "stream": True})
    assert response.status_code == 422 and "beam search cannot stream" in (
        response.json()["detail"])


class Stepwise:
    """A model whose decoding steps each wait for a permit (``allow``)."""

    def __init__(self, model) -> None:
        self.model, self.permits = model, threading.Semaphore(0)

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def decode_step(self, prev, state):
        assert self.permits.acquire(timeout=60), "the test gave no permit"
        return self.model.decode_step(prev, state)


def test_a_client_that_leaves_mid_stream_frees_its_row(qa_run_dir: Path) -> None:
    model, text, _ = load_model(qa_run_dir, device="cpu")
    stepwise = Stepwise(model)
    app = create_app(stepwise, text, defaults=SearchOptions(max_length=30, min_length=30),
                     settings=ServeSettings(max_batch_size=4))
    with serve_in_thread(app) as url:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        connection.request("POST", "/v1/chat", body=json.dumps(
            {"message": "hello there", "stream": True}),
            headers={"Content-Type": "application/json"})
        stepwise.permits.release(2)
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"event: token")  # decoding has begun
        connection.close()  # the client leaves with 28 steps to go
        for _ in range(40):
            stepwise.permits.release()
        health = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

        def cancelled() -> bool:
            health.request("GET", "/healthz")
            body = json.loads(health.getresponse().read())
            return body["cancelled"] == 1 and body["in_flight"] == 0

        wait_until(cancelled, "the row's release")
