"""`kit serve` as a real process on loopback: a burst of 1,000 requests against a bounded queue, malformed
and oversized requests, SIGTERM under load, the page in a real browser, and the command's own mistakes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.serve.load import load
from tests.serve.conftest import free_port

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
BODIES = [json.dumps({"rows": [{"text": text}]}).encode() for text in ("a wonderful film", "dull and flat", "warm")]


class Server:
    """`python -m kit serve RUN ...` in its own process, its output in a file."""

    def __init__(self, run: Path, folder: Path, *options: str):
        self.port = free_port()
        self.log = folder / f"serve-{self.port}.log"
        env = {**os.environ, "KIT_LOAD_PLUGINS": ""}
        command = [sys.executable, "-m", "kit", "serve", str(run), "--port", str(self.port), *options]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def get(self, path: str) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready in {timeout} s: {self.log.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


@pytest.fixture(scope="module")
def server(text_run, tmp_path_factory):
    running = Server(text_run, tmp_path_factory.mktemp("serve"), "--queue-size", "32", "--max-batch-size", "16",
                     "--max-body-kb", "64")  # fmt: skip
    running.wait_ready()
    yield running
    assert running.stop() == 0, running.log.read_text()


def test_a_burst_of_1000_requests_is_answered_in_full(server):
    result = asyncio.run(load(HOST, server.port, "/predict", BODIES, concurrency=1000, count=1000, timeout=120))
    statuses = result.statuses()
    lost = [reply.error for reply in result.replies if reply.status == 0]
    assert not lost, f"{len(lost)} requests got no answer: {lost[:3]}"
    assert set(statuses) <= {200, 503} and sum(statuses.values()) == 1000, statuses
    assert statuses.get(503, 0) > 0, "a queue of 32 cannot take 1,000 at once: some must be refused"
    assert statuses.get(200, 0) >= 32
    assert server.get("/health")[0] == 200
    stats = server.get("/stats")[1]
    assert stats["queue_depth"] == 0 and stats["errors"].get("predict busy") == statuses[503]


def raw(port: int, data: bytes, read: bool = True) -> bytes:
    """Send bytes as they are; the reply (a server that refuses a large body early may reset the rest)."""
    chunks = []
    with socket.create_connection((HOST, port), timeout=30) as connection:
        try:
            connection.sendall(data)
            if not read:
                return b""
        except ConnectionResetError:
            pass
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            chunks.append(b"" if chunks else b"RESET")
    return b"".join(chunks)


def post(body: bytes, extra: str = "") -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    return head.encode() + body


def test_malformed_and_oversized_requests_never_hurt_it(server):
    answers = {
        "garbage": raw(server.port, b"\x00\xffGARBAGE\r\n\r\n"),
        "deep": raw(server.port, post(b"[" * 50_000 + b"]" * 50_000)),
        "huge": raw(server.port, post(b'{"rows": [{"text": "' + b"x" * 5_000_000 + b'"}]}')),
        "chunked": raw(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n" + (b"8000\r\n" + b"x" * 0x8000 + b"\r\n") * 4 + b"0\r\n\r\n"),
        "numbers": raw(server.port, post(b'{"rows": [{"text": 1e999}]}')),
        "nul": raw(server.port, post(b'{"rows": [{"text": "\\u0000"}]}')),
    }  # fmt: skip
    raw(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", read=False)  # then hang up
    raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n", read=False)
    for name in ("deep", "chunked"):
        assert answers[name].startswith(b"HTTP/1.1 400"), (name, answers[name][:200])
    assert b"takes at most 65,536" in answers["chunked"]
    # 5 MB announced: refused before it is read (the client may see the 400, or its upload cut short).
    assert answers["huge"] == b"RESET" or b"takes at most 65,536" in answers["huge"], answers["huge"][:200]
    assert answers["numbers"].startswith((b"HTTP/1.1 200", b"HTTP/1.1 400")), answers["numbers"][:200]
    assert server.process.poll() is None
    assert server.get("/health")[0] == 200
    reply = asyncio.run(load(HOST, server.port, "/predict", BODIES, concurrency=2, count=4))
    assert reply.statuses() == {200: 4}


def test_sigterm_under_load_answers_every_request_taken(text_run, tmp_path):
    server = Server(text_run, tmp_path, "--queue-size", "400", "--max-batch-size", "1")
    server.wait_ready()

    async def main():
        requests = asyncio.ensure_future(load(HOST, server.port, "/predict", BODIES, concurrency=300, count=300))
        taken = 0
        for _ in range(600):  # until the server holds every request (none answered yet, or some)
            await asyncio.sleep(0.05)
            stats = await asyncio.to_thread(server.get, "/stats")
            taken = stats[1]["in_flight"] + stats[1]["requests"]
            if taken >= 300:
                break
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        late = await load(HOST, server.port, "/predict", BODIES, concurrency=1, count=1, timeout=10)
        return await requests, stats[1]["in_flight"], late

    result, in_flight, late = asyncio.run(main())
    code = server.process.wait(120)
    log = server.log.read_text()
    assert in_flight > 0, "the test must stop the server while requests are in flight"
    assert result.statuses() == {200: 300}, (result.statuses(), [r.error for r in result.replies if r.error][:3])
    assert late.replies[0].status in (0, 503)  # refused: nothing new is taken after SIGTERM
    assert code == 0 and "SIGTERM: no new requests" in log and "kit: stopped" in log, log


def chromium():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    selenium = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = selenium.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(argument)
    return selenium.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def open_page(browser, server):
    """The server's page, once it says it is ready; returns the waiter the test goes on with."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url("/"))
    wait = WebDriverWait(browser, 60)
    wait.until(shown.text_to_be_present_in_element((By.ID, "status"), "ready"))
    return wait


def test_the_page_in_a_real_browser(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select

    browser = chromium()
    try:
        wait = open_page(browser, server)
        field = browser.find_element(By.ID, "in-text")
        field.clear()
        field.send_keys("a wonderful moving film with a warm cast")
        browser.find_element(By.ID, "send").click()
        label = wait.until(shown.visibility_of_element_located((By.ID, "predicted-label"))).text
        assert label in ("pos", "neg")
        wrong = "neg" if label == "pos" else "pos"
        Select(browser.find_element(By.ID, "truth")).select_by_value(wrong)
        browser.find_element(By.ID, "send-feedback").click()
        wait.until(shown.text_to_be_present_in_element((By.ID, "feedback-said"), "thank you"))
        wait.until(lambda b: b.find_element(By.ID, "stat-accuracy").text.endswith("%"))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#drift-table tr[data-column='text']"))
        requests = int(browser.find_element(By.ID, "stat-requests").text)
        assert requests >= 1
        accuracy = browser.find_element(By.ID, "stat-accuracy").text
        feedback = server.get("/stats")[1]["feedback"]
        assert accuracy == f"{100 * feedback['accuracy']:.1f}%"  # what the page shows is what the server counts
        field.clear()
        field.send_keys(" ")
        browser.find_element(By.ID, "send").click()
        error = wait.until(shown.visibility_of_element_located((By.ID, "error"))).text
        assert "empty text" in error
        browser.save_screenshot(os.environ.get("KIT_PAGE_SCREENSHOT", str(tmp_path / "page.png")))
    finally:
        browser.quit()


def test_the_generation_page_streams_a_completion(lm_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = chromium()
    server = Server(lm_run, tmp_path)
    try:
        server.wait_ready()
        wait = open_page(browser, server)
        prompt = browser.find_element(By.ID, "in-prompt")
        prompt.clear()
        prompt.send_keys("The for statement")
        Select(browser.find_element(By.ID, "in-sampler")).select_by_value("greedy")
        tokens = browser.find_element(By.ID, "in-max_new_tokens")
        tokens.clear()
        tokens.send_keys("8")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda b: server.get("/stats")[1]["requests"] >= 1)  # the stream has ended
        on_page = browser.execute_script("return document.getElementById('completion').textContent")
        asked = json.dumps({"prompt": "The for statement", "sampler": "greedy", "max_new_tokens": 8}).encode()
        reply = asyncio.run(load(HOST, server.port, "/generate", [asked], 1, 1, keep_bodies=True)).replies[0]
    finally:
        browser.quit()
        assert server.stop() == 0
    assert on_page and on_page == json.loads(reply.body)["completion"]


def test_command_mistakes_are_one_line(tmp_path, text_run):
    env = {**os.environ, "KIT_LOAD_PLUGINS": ""}

    def kit(*argv):
        return subprocess.run([sys.executable, "-m", "kit", "serve", *argv], capture_output=True, text=True, env=env,
                              timeout=120)  # fmt: skip

    missing = kit(str(tmp_path / "nope"), "--port", str(free_port()))
    assert missing.returncode == 1 and "No run directory at" in missing.stderr and "Traceback" not in missing.stderr
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        busy = kit(str(text_run), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "is in use" in busy.stderr
    zero = kit(str(text_run), "--queue-size", "0")
    assert zero.returncode == 2 and "--queue-size must be at least 1" in zero.stderr
