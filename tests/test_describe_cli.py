"""``headstrong describe`` against a small chat-completions server on the loopback interface.

The server answers like an OpenAI-compatible endpoint, echoing the question it was asked, and
can be told to fail: once with a 500, or for good after a number of requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headstrong.cli.main import app
from headstrong.textguided import descriptions, llm

runner = CliRunner()

QUESTIONS = ["What does a {class} look like?", "Where is a {class} usually seen?"]


class FakeServer:
    """A /v1/chat/completions endpoint that records what it is asked."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail_first = 0  # answer this many requests with an error first
        self.fail_status = 500  # ... with this status
        self.empty_first = 0  # then answer this many with empty content
        self.keys: list[str] = []
        self.fail_after: int | None = None  # after this many good answers, fail every request
        self.echo_key = False  # answer 401 quoting the key it was sent, as some servers do
        self.delay = 0.0  # seconds to stay silent before answering
        self.good = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.keys.append(self.headers.get("Authorization", ""))
                time.sleep(server.delay)
                status, payload = server.respond(self.path, body)
                if server.echo_key:
                    key = server.keys[-1].removeprefix("Bearer ")
                    status, payload = 401, {"error": {"message": f"Incorrect API key provided: {key}."}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left


        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def respond(self, path: str, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(body)
            if path != "/v1/chat/completions":
                return 404, {"error": {"message": f"no route {path}"}}
            if self.fail_first > 0:
                self.fail_first -= 1
                return self.fail_status, {"error": {"message": "temporary failure", "type": "server_error"}}
            if self.fail_after is not None and self.good >= self.fail_after:
                return 503, {"error": {"message": "server is down", "type": "server_error"}}
            self.good += 1
            empty = self.empty_first > 0
            self.empty_first -= empty
        question = body["messages"][-1]["content"]
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "" if empty else f"  Answer to: {question}\n"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def questions(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()


def _run(server: FakeServer, tmp_path: Path, classes: str, out: Path, *extra: str):
    qfile = tmp_path / "questions.json"
    qfile.write_text(json.dumps(QUESTIONS))
    args = [
        "describe", "--classes", classes, "--model", "tiny-model", "--base-url", server.url,
        "--out", str(out), "--questions", str(qfile), "--retry-wait", "0", "--no-progress", *extra,
    ]
    return runner.invoke(app, args, env={"OPENAI_API_KEY": "test-key"})


def test_key_comes_from_the_named_environment_variable(server: FakeServer, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("owl\n")
    result = _run(server, tmp_path, str(classes), tmp_path / "a.json", "--api-key-env", "HS_TEST_KEY")
    assert result.exit_code == 0, result.output
    assert set(server.keys) == {"Bearer not-needed"}  # HS_TEST_KEY is unset: local servers need none
    server.keys.clear()
    args = ["describe", "--classes", str(classes), "--model", "tiny-model", "--base-url", server.url,
            "--out", str(tmp_path / "b.json"), "--api-key-env", "HS_TEST_KEY", "--no-progress"]
    result = runner.invoke(app, args, env={"HS_TEST_KEY": "sk-secret"})
    assert result.exit_code == 0, result.output
    assert set(server.keys) == {"Bearer sk-secret"}
    assert len(server.keys) == len(descriptions.DEFAULT_QUESTIONS)  # the shipped six by default


@pytest.mark.parametrize("status", [429, 500, 503])
def test_ask_backs_off_exponentially(server: FakeServer, status: int) -> None:
    server.fail_first, server.fail_status = 3, status
    waits: list[float] = []
    client = llm.make_client(server.url)
    answer = llm.ask(client, "m", "Why?", retry=llm.RetryPolicy(attempts=4, base=0.5), sleep=waits.append)
    assert answer == "Answer to: Why?"
    assert waits == [0.5, 1.0, 2.0]


def test_empty_answers_are_retried_then_reported(server: FakeServer) -> None:
    client = llm.make_client(server.url)
    server.empty_first = 1
    assert llm.ask(client, "m", "Why?", retry=llm.RetryPolicy(attempts=2, base=0), sleep=lambda _: None)
    server.empty_first = 2
    with pytest.raises(llm.GenerationError, match="after 2 attempts.*empty answer"):
        llm.ask(client, "m", "Why?", retry=llm.RetryPolicy(attempts=2, base=0), sleep=lambda _: None)


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        llm.RetryPolicy(attempts=0)
    assert llm.RetryPolicy(base=4, cap=10).delay(3) == 10


def test_generates_a_loadable_file_from_a_class_list(server: FakeServer, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("red fox\n\nsea_otter\n")
    out = tmp_path / "desc.json"
    result = _run(server, tmp_path, str(classes), out)
    assert result.exit_code == 0, result.output
    loaded = descriptions.load(out, classes=["red fox", "sea_otter"])
    assert loaded == {
        "red fox": ["Answer to: What does a red fox look like?", "Answer to: Where is a red fox usually seen?"],
        "sea_otter": [
            "Answer to: What does a sea otter look like?",
            "Answer to: Where is a sea otter usually seen?",
        ],
    }
    record = json.loads(out.read_text())
    assert record["questions"] == QUESTIONS
    assert "tiny-model" in record["generator"]
    assert len(server.requests) == 4
    assert all(r["model"] == "tiny-model" and r["messages"][0]["role"] == "system" for r in server.requests)


def test_a_server_error_is_retried(server: FakeServer, tmp_path: Path) -> None:
    server.fail_first = 1
    out = tmp_path / "desc.json"
    result = _run(server, tmp_path, "stl10", out)
    assert result.exit_code == 0, result.output
    assert list(descriptions.load(out)) == descriptions.shipped_classes("stl10")
    assert json.loads(out.read_text())["dataset"] == "stl10"
    assert len(server.requests) == 10 * len(QUESTIONS) + 1
    assert server.questions()[0] == server.questions()[1]  # the failed request was asked again


def test_gives_up_after_max_retries_and_resumes_where_it_stopped(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "desc.json"
    server.fail_after = 5
    result = _run(server, tmp_path, "cifar10", out, "--max-retries", "2")
    assert result.exit_code == 1
    assert "5 of 20 answers are saved" in result.output and "rerun" in result.output
    assert len(server.requests) == 5 + 3  # five answers, then one request tried three times
    partial = descriptions.read(out, partial=True).classes
    assert list(partial) == ["airplane", "automobile", "bird"]
    assert [len(v) for v in partial.values()] == [2, 2, 1]
    with pytest.raises(ValueError, match="has 1 answers but the file records 2 questions"):
        descriptions.load(out)

    server.fail_after = None
    server.requests.clear()
    result = _run(server, tmp_path, "cifar10", out)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 15  # only what was missing
    assert server.questions()[0] == "Where is a bird usually seen?"
    loaded = descriptions.load(out, classes=descriptions.shipped_classes("cifar10"))
    assert loaded["airplane"][0] == "Answer to: What does a airplane look like?"
    assert all(len(v) == 2 for v in loaded.values())


def test_a_client_error_is_not_retried(server: FakeServer, tmp_path: Path) -> None:
    qfile = tmp_path / "questions.json"
    qfile.write_text(json.dumps(QUESTIONS))
    out = tmp_path / "desc.json"
    bad_url = server.url.removesuffix("/v1") + "/wrong"
    args = ["describe", "--classes", "mnist", "--model", "m", "--base-url", bad_url, "--out", str(out),
            "--questions", str(qfile), "--retry-wait", "0", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "NotFoundError" in result.output and "'0 - zero'" in result.output
    assert len(server.requests) == 1
    assert not out.exists()


def test_resuming_with_other_questions_is_refused(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "desc.json"
    descriptions.save({"cat": ["a"]}, out, questions=["Q {class}?"], generator="x", partial=True)
    result = _run(server, tmp_path, "stl10", out)
    assert result.exit_code == 2
    assert "other questions" in result.output
    assert server.requests == []


def test_bad_class_argument_names_the_choices(tmp_path: Path) -> None:
    args = ["describe", "--classes", "imagenet-9", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--out", str(tmp_path / "o.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "imagenet-9" in result.output and "stl10" in result.output


def test_questions_must_name_the_class(tmp_path: Path) -> None:
    qfile = tmp_path / "q.txt"
    qfile.write_text("What does it look like?\n")
    args = ["describe", "--classes", "mnist", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--out", str(tmp_path / "o.json"), "--questions", str(qfile)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "{class}" in result.output and "What does it look like?" in result.output


def test_progress_bar_reports_the_count(server: FakeServer, tmp_path: Path) -> None:
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["owl"]))
    qfile = tmp_path / "questions.json"
    qfile.write_text(json.dumps(QUESTIONS))
    out = tmp_path / "desc.json"
    args = ["describe", "--classes", str(classes), "--model", "m", "--base-url", server.url, "--out", str(out),
            "--questions", str(qfile)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2/2" in result.output


def test_a_key_echoed_by_the_server_is_redacted(server: FakeServer, tmp_path: Path) -> None:
    server.echo_key = True
    args = ["describe", "--classes", "mnist", "--model", "m", "--base-url", server.url,
            "--out", str(tmp_path / "o.json"), "--no-progress"]
    result = runner.invoke(app, args, env={"OPENAI_API_KEY": "sk-live-abcdef123456"})
    assert result.exit_code != 0
    assert "Incorrect API key provided: [redacted]" in result.output
    assert "abcdef123456" not in result.output


def test_redact_hides_named_secrets_and_key_shaped_text() -> None:
    said = llm.redact("key my-own-secret-token rejected; also saw sk-proj-ABCDEFGH12 and Bearer tok.en-12345678",
                      ["my-own-secret-token"])
    assert said == "key [redacted] rejected; also saw [redacted] and Bearer [redacted]"
    assert llm.redact("temporary failure", [None, ""]) == "temporary failure"


def test_a_silent_server_is_given_up_on_after_two_timeouts(server: FakeServer, tmp_path: Path) -> None:
    server.delay = 1.0
    started = time.monotonic()
    with pytest.raises(llm.GenerationError, match=r"did not answer within 0\.2 s 2 times in a row.*--timeout"):
        llm.generate(["owl"], QUESTIONS, tmp_path / "o.json", model="m", base_url=server.url, timeout=0.2,
                     retry=llm.RetryPolicy(attempts=6, base=0), progress=False)
    assert time.monotonic() - started < 5
    assert len(server.keys) == 2  # two tries, not six


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        llm.make_client("http://127.0.0.1:9/v1", timeout=0)


def test_describe_timeout_option_ends_a_silent_server_quickly(server: FakeServer, tmp_path: Path) -> None:
    server.delay = 1.0
    started = time.monotonic()
    result = _run(server, tmp_path, "mnist", tmp_path / "o.json", "--timeout", "0.2")
    assert result.exit_code == 1
    assert time.monotonic() - started < 5
    assert "did not answer within 0.2 s 2 times in a row" in result.output
    assert runner.invoke(app, ["describe", "--classes", "mnist", "--model", "m", "--base-url", server.url,
                               "--out", str(tmp_path / "p.json"), "--timeout", "0"]).exit_code == 2


def test_not_a_terminal_gets_plain_progress_lines_and_a_resume_count(server: FakeServer, tmp_path: Path) -> None:
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["owl", "cat"]))
    qfile = tmp_path / "questions.json"
    qfile.write_text(json.dumps(QUESTIONS))
    out = tmp_path / "desc.json"
    args = ["describe", "--classes", str(classes), "--model", "m", "--base-url", server.url, "--out", str(out),
            "--questions", str(qfile)]
    descriptions.save({"owl": ["a", "b"]}, out, questions=QUESTIONS,
                      generator="model m via an OpenAI-compatible chat-completions server (headstrong describe)",
                      partial=True)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "describe: resuming: 2 of 4 planned answers (50%) were found done, 2 left to run" in result.output
    assert "answers 4/4 (100%)" in result.output and "\x1b[" not in result.output
