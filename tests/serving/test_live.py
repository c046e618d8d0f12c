"""A real server on 127.0.0.1 (uvicorn in a thread): 32 clients at once, /healthz under load."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from padless.decoding.batched import decode_texts
from padless.decoding.options import SearchOptions
from padless.runs.loading import load_model
from padless.serving.app import create_app
from padless.serving.server import load_app
from padless.serving.settings import ServeSettings
from tests.helpers import QUESTIONS, GatedModel, serve_in_thread

CLIENTS = 32
REQUESTS_PER_CLIENT = 3


class Client:
    """One keep-alive HTTP/1.1 connection (the standard library's), JSON in and out."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def call(self, method: str, route: str, body: dict | None = None) -> tuple[int, dict]:
        payload = None if body is None else json.dumps(body)
        self.connection.request(method, route, body=payload,
                                headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())


def message(client: int, request: int) -> tuple[str, dict]:
    """Client ``client``'s ``request``-th message and search (a mix of greedy and beam)."""
    text = f"{QUESTIONS[(client + request) % len(QUESTIONS)]} {client % 5}"
    return text, ({"beam": 2} if (client + request) % 3 == 0 else {})


def test_32_clients_at_once_each_get_their_own_correct_answer(qa_run_dir: Path) -> None:
    options = SearchOptions(max_length=12)
    model, text, _ = load_model(qa_run_dir, device="cpu")
    settings = ServeSettings(max_batch_size=32, max_wait_ms=20)
    app = load_app(qa_run_dir, device="cpu", defaults=options, settings=settings)
    start = threading.Barrier(CLIENTS)
    answers: dict[tuple[int, int], tuple[int, dict]] = {}

    def client_loop(index: int, url: str) -> None:
        client = Client(url)
        start.wait(timeout=30)
        for request in range(REQUESTS_PER_CLIENT):
            line, search = message(index, request)
            answers[index, request] = client.call("POST", "/v1/chat", {"message": line, **search})

    with serve_in_thread(app) as url:
        threads = [threading.Thread(target=client_loop, args=(i, url)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        _, health = Client(url).call("GET", "/healthz")

    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT  # none lost
    for (index, request), (status, body) in answers.items():
        line, search = message(index, request)
        expected_options = SearchOptions("beam", 12, beam_size=2) if search else options
        assert status == 200, body
        assert body["reply"] == decode_texts(model, text, [line], expected_options)[0]
    assert health["requests"] == CLIENTS * REQUESTS_PER_CLIENT
    assert health["largest_batch_requests"] > 1  # requests were decoded together


def test_healthz_answers_while_the_model_works(qa_run_dir: Path) -> None:
    """The model is held in the middle of a decoding step while /healthz is asked."""
    model, text, _ = load_model(qa_run_dir, device="cpu")
    gated = GatedModel(model)
    app = create_app(gated, text, defaults=SearchOptions(max_length=30),
                     settings=ServeSettings(max_batch_size=4, max_lines=8))
    work = {"lines": [f"{q} and {q}" for q in QUESTIONS[:8]], "beam": 8}
    results: list[int] = []
    with serve_in_thread(app) as url:
        thread = threading.Thread(
            target=lambda: results.append(Client(url).call("POST", "/v1/translate", work)[0]))
        thread.start()
        assert gated.entered.wait(60), "the request never reached the model"
        status, body = Client(url).call("GET", "/healthz")  # the model is mid-step
        gated.release.set()
        thread.join(timeout=120)
    assert status == 200 and body["status"] == "ok" and body["in_flight"] == 1
    assert results == [200]


@pytest.mark.parametrize("route", ["/", "/chat.js", "/healthz"])
def test_a_real_server_serves_the_page_and_health(qa_run_dir: Path, route: str) -> None:
    with serve_in_thread(load_app(qa_run_dir, device="cpu")) as url:
        connection = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port)
        connection.request("GET", route)
        assert connection.getresponse().status == 200
