"""A real server against clients that stall, flood, lie in their headers or probe for names (loopback only).

Every wait is bounded: a stalled socket must be closed by the server within its timeout plus slack,
while an ordinary client keeps getting answers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json, metric_value

from serving_harness.__main__ import _parser, resolve
from serving_harness.config import LimitsSettings, ServingConfig
from serving_harness.model import ModelConfig

ONE = np.ones((1, 4), dtype=np.float32)
TIMEOUT_S = 1.0  # the header and body timeouts of the servers below
SLACK_S = 4.0  # a loaded test machine; the body backstop adds its 1 s grace on top of this
INFER = b"POST /v2/models/double/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10.0)


def _closed_by_server(sock: socket.socket, deadline_s: float) -> bytes | None:
    """Everything the server sent before closing ``sock``; None if it is still open at ``deadline_s``."""
    received = b""
    while (left_s := deadline_s - time.monotonic()) > 0:
        sock.settimeout(left_s)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


@contextlib.contextmanager
def _sockets(count: int, url: str, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    opened = [_connect(url) for _ in range(count)]
    try:
        for sock in opened:
            if first_bytes:
                sock.sendall(first_bytes)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _answers(url: str, requests: int) -> list[int]:
    with httpx.Client(base_url=url, timeout=5.0) as http:
        return [http.post("/v2/models/double/infer", json=infer_json(ONE)).status_code for _ in range(requests)]


# -------------------------------------------------------------------------------------- slow clients


@pytest.fixture(scope="module")
def strict_url(models_dir: Path) -> Iterator[str]:
    limits = LimitsSettings(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S)
    model = ModelConfig("double", models_dir / "double.onnx")
    with support.running_server([model], ServingConfig(limits=limits)) as url:
        yield url


def test_stalled_clients_are_closed_while_others_get_answers(strict_url: str) -> None:
    idle = _sockets(20, strict_url, b"")  # connect, send nothing
    half_headers = _sockets(15, strict_url, INFER)  # the blank line never comes
    half_body = _sockets(15, strict_url, INFER + b'Content-Length: 1000\r\n\r\n{"inputs": [')
    with idle as silent, half_headers as slow, half_body as stalled:
        assert _answers(strict_url, 10) == [200] * 10
        deadline_s = time.monotonic() + TIMEOUT_S + SLACK_S
        closed_silent = [_closed_by_server(sock, deadline_s) for sock in (*silent, *slow)]
        closed_stalled = [_closed_by_server(sock, deadline_s) for sock in stalled]

    assert all(answer == b"" for answer in closed_silent)  # closed without a word: there was no request
    assert all(answer is not None and answer.startswith(b"HTTP/1.1 408") for answer in closed_stalled)
    assert all(b"did not arrive within 1 s" in answer for answer in closed_stalled if answer)
    metrics = httpx.get(f"{strict_url}/metrics").text
    assert metric_value(metrics, "sh_connections_closed_total", reason="header_timeout") >= 35
    assert metric_value(metrics, "sh_requests_total", model="double", status="408") >= 15


def test_a_body_trickled_byte_by_byte_still_meets_its_deadline(strict_url: str) -> None:
    with _sockets(1, strict_url, INFER + b"Content-Length: 100\r\n\r\n") as (sock,):
        deadline_s = time.monotonic() + TIMEOUT_S + SLACK_S
        for _ in range(8):  # a byte every 0.25 s keeps a per-read timeout happy, not a deadline
            with contextlib.suppress(OSError):
                sock.sendall(b" ")
            time.sleep(0.25)
        answer = _closed_by_server(sock, deadline_s)

    assert answer is not None and answer.startswith(b"HTTP/1.1 408")


def test_a_stalled_body_on_a_route_that_never_reads_it_is_closed(strict_url: str) -> None:
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n"
    with _sockets(1, strict_url, request) as (sock,):
        answer = _closed_by_server(sock, time.monotonic() + TIMEOUT_S + SLACK_S)

    assert answer is not None and answer.startswith(b"HTTP/1.1 200")  # answered, then closed: no next request


def test_the_connection_cap_closes_idle_connections_to_let_others_in(models_dir: Path) -> None:
    limits = LimitsSettings(max_connections=20, header_timeout_s=60.0)  # only the cap can close them here
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], ServingConfig(limits=limits)) as url:  # fmt: skip
        with _sockets(40, url, b"") as idle:
            assert _answers(url, 5) == [200] * 5
            deadline_s = time.monotonic() + SLACK_S
            still_open = [sock for sock in idle if _closed_by_server(sock, deadline_s) is None]
        metrics = httpx.get(f"{url}/metrics").text

    assert len(still_open) < 20  # the oldest idle ones made room
    assert metric_value(metrics, "sh_connections_closed_total", reason="limit") >= 20


def test_serve_flags_set_the_connection_limits(models_dir: Path) -> None:
    flags = ("--model", str(models_dir / "double.onnx"), "--header-timeout-s", "0.5", "--max-connections", "50")
    with support.harness_process(*flags) as (_, url), _sockets(1, url, b"GET /v2 HTTP/1.1\r\n") as (sock,):
        answer = _closed_by_server(sock, time.monotonic() + 0.5 + SLACK_S)

    assert answer == b""


# -------------------------------------------------------------------------------------- rate limit


def test_a_made_up_authorization_header_per_request_does_not_escape_the_rate_limit(models_dir: Path) -> None:
    settings = ServingConfig(rate_limit_rps=0.2)  # auth off: one request per 5 s per peer address
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as url:
        statuses = [
            httpx.post(
                f"{url}/v2/models/double/infer",
                json=infer_json(ONE),
                headers={"Authorization": f"Bearer {uuid.uuid4()}"},
            ).status_code
            for _ in range(3)
        ]

    assert statuses == [200, 429, 429]


def test_respelling_the_token_does_not_escape_the_rate_limit(models_dir: Path) -> None:
    settings = ServingConfig(auth_token="s3cret", rate_limit_rps=0.2)
    spellings = ["Bearer s3cret", "bearer s3cret", "Bearer  s3cret", "Bearer \ts3cret", "BEARER \t s3cret"]
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as url:
        statuses = [
            httpx.post(
                f"{url}/v2/models/double/infer", json=infer_json(ONE), headers={"Authorization": spelling}
            ).status_code
            for spelling in spellings
        ]

    assert statuses == [200, 429, 429, 429, 429]


# ------------------------------------------------------------------------------ routes, names, paths


@pytest.fixture(scope="module")
def guarded_url(models_dir: Path) -> Iterator[str]:
    models = [ModelConfig("double", models_dir / "double.onnx"), ModelConfig("broken", models_dir / "broken.onnx")]
    with support.running_server(models, ServingConfig(auth_token="s3cret"), wait_ready=False) as url:
        support.wait_for(url + "/v2/health/live")
        yield url


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/nope", 404, set()),
        ("GET", "/v2/models/double/infer/extra", 404, set()),
        ("GET", "/v2/models/double/infer", 405, {"POST"}),
        ("DELETE", "/v2/health/live", 405, {"GET", "HEAD"}),
    ],
)
def test_unknown_routes_and_wrong_methods_answer_oip_json_and_are_counted(
    guarded_url: str, method: str, path: str, status: int, allow: set[str]
) -> None:
    scrape = {"Authorization": "Bearer s3cret"}  # with auth on, /metrics (it names models) needs the token
    before = metric_value(
        httpx.get(f"{guarded_url}/metrics", headers=scrape).text, "sh_unmatched_requests_total", status=str(status)
    )

    response = httpx.request(method, guarded_url + path)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert path in response.json()["error"]
    assert {m for m in response.headers.get("allow", "").split(", ") if m} == allow
    after = metric_value(
        httpx.get(f"{guarded_url}/metrics", headers=scrape).text, "sh_unmatched_requests_total", status=str(status)
    )
    assert after == before + 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2"),
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
        ("GET", "/v2/models/double/ready"),
        ("GET", "/v2/models/double/versions/9"),
        ("POST", "/v2/models/nope/infer"),
        ("GET", "/nope"),
    ],
)
def test_without_the_token_a_caller_learns_no_model_name(guarded_url: str, method: str, path: str) -> None:
    response = httpx.request(method, guarded_url + path, json=infer_json(ONE) if method == "POST" else None)

    assert response.status_code in (401, 404)
    assert response.status_code == 401 or path == "/nope"
    assert "double" not in response.text and "broken" not in response.text


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_no_answer_carries_an_absolute_path(guarded_url: str, models_dir: Path) -> None:
    token = {"Authorization": "Bearer s3cret"}
    support.wait_for_metric(guarded_url, "sh_model_ready", 1.0, token="s3cret", model="double")

    metadata = httpx.get(f"{guarded_url}/v2/models/broken", headers=token)
    refused = httpx.post(f"{guarded_url}/v2/models/broken/infer", json=infer_json(ONE), headers=token)

    assert metadata.json()["state"] == "UNAVAILABLE"
    assert refused.status_code == 503
    for answer in (metadata.text, refused.text):
        assert str(models_dir) not in answer
        assert "broken.onnx" in answer  # the file name stays: it is what the operator must fix


@pytest.mark.parametrize("metrics_auth", [None, True], ids=["by-default-with-auth", "metrics-auth"])
def test_metrics_auth_puts_the_model_names_in_metrics_behind_the_token(
    models_dir: Path, metrics_auth: bool | None
) -> None:
    settings = ServingConfig(auth_token="s3cret", metrics_auth=metrics_auth)
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as url:
        refused = httpx.get(f"{url}/metrics")
        allowed = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"})

    assert refused.status_code == 401
    assert "double" not in refused.text
    assert 'model="double"' in allowed.text


def test_the_hostile_client_settings_have_flags(models_dir: Path) -> None:
    flags = ["--body-timeout-s", "5", "--header-timeout-s", "2.5", "--max-connections", "7", "--metrics-auth"]
    args = _parser().parse_args(["serve", "--model", str(models_dir / "double.onnx"), *flags])

    _, settings = resolve(args, {})

    assert (settings.limits.body_timeout_s, settings.limits.header_timeout_s) == (5.0, 2.5)
    assert (settings.limits.max_connections, settings.metrics_auth) == (7, True)


def test_metrics_can_be_opened_for_annotation_scraping(models_dir: Path) -> None:
    settings = ServingConfig(auth_token="s3cret", metrics_auth=False)
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as url:
        opened = httpx.get(f"{url}/metrics")

    assert opened.status_code == 200 and 'model="double"' in opened.text


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 10\r\n\r\n" + json.dumps(infer_json(ONE)).encode(),  # says 10 bytes, sends more
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n",
    ],
    ids=["lying-content-length", "broken-chunks"],
)
def test_bad_http_framing_answers_oip_json_and_others_go_on(strict_url: str, framing: bytes) -> None:
    sock = _connect(strict_url)
    sock.sendall(b"POST /v2/models/double/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing)

    received = _closed_by_server(sock, time.monotonic() + 10.0)
    sock.close()

    assert received is not None and received.startswith(b"HTTP/1.1 400")
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert "error" in json.loads(body)
    assert _answers(strict_url, 3) == [200, 200, 200]
