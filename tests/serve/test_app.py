"""The HTTP API in this process: the same answers as `kit predict` / `kit generate`, refusals in their words,
feedback and accuracy, drift on data with a known shift, metrics."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.serve.conftest import served

pytestmark = pytest.mark.slow

ROWS = [
    {"text": "a wonderful moving film"},
    {"text": "dull tedious plot and a flat cast"},
    {"text": "the director is   clever\tand warm"},
    {"text": "awful"},
]


def kit_predict(run, rows, tmp_path):
    from kit.inference import TrainedModel

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return list(TrainedModel(run).predict_rows(str(path)))


def test_predict_answers_what_kit_predict_answers(text_run, tmp_path):
    async def test(app):
        alone = [(await app.post("/predict", {"rows": [row]})).json()["predictions"][0] for row in ROWS]
        together = (await app.post("/predict", {"rows": ROWS})).json()["predictions"]
        concurrent = await asyncio.gather(*(app.post("/predict", [row]) for row in ROWS))
        return alone, together, [r.json()["predictions"][0] for r in concurrent]

    alone, together, concurrent = served(text_run, test, max_batch_size=3)
    expected = kit_predict(text_run, ROWS, tmp_path)
    assert together == expected  # line numbers, labels, probabilities: the same JSON
    for answers in (alone, concurrent):
        assert [{**a, "line": n} for n, a in enumerate(answers, start=1)] == expected


def test_tabular_regression_rows_in_json_types(table_run, tmp_path):
    rows = [{"x1": 0.5, "x2": -0.25, "colour": "red"}, {"x1": "0.1", "x2": 0, "colour": "blue"}]

    async def test(app):
        return (await app.post("/predict", {"rows": rows})).json()

    answer = served(table_run, test)
    assert answer["predictions"] == kit_predict(table_run, rows, tmp_path)
    assert answer["predictions"][0]["y"] == pytest.approx(3 * 0.5 + 2 * 0.25 + 1, abs=0.5)  # in the user's units


BAD = [
    (b"{not json", "The request body is not valid JSON (Expecting property name enclosed in double quotes"),
    (b'{"text": "a", "text": "b"}', "Key 'text' appears twice in one object; keep one."),
    (b"\xff\xfe", "The request body is not UTF-8 text."),
    (b'"just text"', "Expected rows as JSON objects keyed by column"),
    (b'{"rows": []}', "The request holds no rows."),
    (b'{"rows": [{"review": "no text column"}]}', "row 1: missing column 'text'. The model reads: text."),
    (b'{"rows": [{"text": "fine"}, {"text": "   "}]}', "row 2: column 'text': empty text."),
    (b'{"rows": [{"text": ["a", "list"]}]}', "row 1: column 'text': expected text, got an array."),
    (b'{"rows": [[1, 2]]}', "row 1: expected a JSON object (column -> value), got an array."),
]


def test_bad_requests_get_400_with_kit_predicts_words(text_run):
    async def test(app):
        answers = [await app.post("/predict", body) for body, _ in BAD]
        big = await app.post("/predict", {"rows": [{"text": "x" * 3000}]})
        wrong_route = await app.post("/generate", {"prompt": "hi"})
        still = await app.post("/predict", {"rows": ROWS[:1]})
        return answers, big, wrong_route, still

    answers, big, wrong_route, still = served(text_run, test, max_body_bytes=2048)
    for (body, words), answer in zip(BAD, answers):
        assert answer.status_code == 400, body
        assert answer.json()["error"].startswith(words), answer.json()
    assert big.status_code == 400 and "takes at most 2,048" in big.json()["error"]
    assert wrong_route.status_code == 400 and "POST /predict" in wrong_route.json()["error"]
    assert still.status_code == 200  # none of that hurt the server


def test_the_same_parse_error_as_kit_predict(text_run, tmp_path, runner):
    """The reason kit predict gives for a bad row is the one the server gives."""
    from kit.cli import cli

    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": ["a", "list"]}\n', encoding="utf-8")
    said = runner.invoke(cli, ["predict", str(text_run), str(path)]).output

    async def test(app):
        return (await app.post("/predict", {"rows": [{"text": "fine"}, {"text": ["a", "list"]}]})).json()["error"]

    reason = "column 'text': expected text, got an array"
    assert reason in said and reason in served(text_run, test)


def test_feedback_gives_rolling_accuracy(text_run):
    async def test(app):
        answer = (await app.post("/predict", {"rows": ROWS})).json()
        predicted = [p["label"] for p in answer["predictions"]]
        truths = ["pos", "neg", "pos", "neg"]
        replies = [await app.post("/feedback", {"id": answer["id"], "line": n, "label": t})
                   for n, t in enumerate(truths, start=1)]  # fmt: skip
        repeated = await app.post("/feedback", {"id": answer["id"], "line": 1, "label": "pos"})
        unknown = await app.post("/feedback", {"id": "nope", "label": "pos"})
        bad_label = await app.post("/feedback", {"id": answer["id"], "line": 2, "label": "meh"})
        metrics = (await app.client.get("/metrics")).text
        return predicted, truths, replies, repeated, unknown, bad_label, metrics

    predicted, truths, replies, repeated, unknown, bad_label, metrics = served(text_run, test)
    accuracy = sum(p == t for p, t in zip(predicted, truths)) / 4
    assert all(r.status_code == 200 for r in replies)
    assert replies[-1].json()["accuracy"] == accuracy
    assert f"kit_accuracy {accuracy}" in metrics
    assert repeated.status_code == 409 and unknown.status_code == 404
    assert (
        bad_label.status_code == 400 and "label 'meh' does not occur in the training data" in bad_label.json()["error"]
    )


def test_regression_feedback_and_drift_against_a_known_shift(table_run):
    import random

    rng = random.Random(5)

    async def test(app):
        calm = [{"x1": rng.uniform(-1, 1), "x2": rng.uniform(-1, 1), "colour": "red"} for _ in range(400)]
        await app.post("/predict", {"rows": calm})
        before = (await app.client.get("/stats")).json()["drift"]
        moved = [{"x1": rng.uniform(0, 2), "x2": rng.uniform(-1, 1), "colour": "purple"} for _ in range(400)]
        answer = (await app.post("/predict", {"rows": moved[:1]})).json()
        await app.post("/predict", {"rows": moved[1:]})
        after = (await app.client.get("/stats")).json()["drift"]
        truth = answer["predictions"][0]["y"] + 2.0
        feedback = (await app.post("/feedback", {"id": answer["id"], "y": truth})).json()
        metrics = (await app.client.get("/metrics")).text
        return before, after, feedback, metrics

    before, after, feedback, metrics = served(table_run, test, drift_window=400)
    assert abs(before["x1"]["mean_shift"]) < 0.25 and before["x1"]["psi"] < 0.1
    assert after["x1"]["mean_shift"] > 1.4  # uniform(0, 2) against uniform(-1, 1): +1 in units of std 0.577
    assert after["x1"]["psi"] > 1 and after["x2"]["psi"] < 0.1
    assert before["colour"]["unseen_rate"] == 0 and after["colour"]["unseen_rate"] == 1
    assert feedback["mae"] == pytest.approx(2.0)
    assert 'kit_drift_psi{feature="x1"}' in metrics and "kit_feedback_mae 2.0" in metrics


def test_metrics_and_health(text_run):
    async def test(app):
        await app.post("/predict", {"rows": ROWS})
        await app.post("/predict", b"oops")
        return (await app.client.get("/metrics")).text, await app.client.get("/health"), await app.client.get("/")

    metrics, health, page = served(text_run, test)
    for name in ("kit_request_latency_seconds_bucket", "kit_rows_total", "kit_batch_rows_bucket", "kit_queue_depth",
                 'kit_errors_total{endpoint="predict",reason="bad_request"} 1.0', "kit_ready 1.0",
                 'kit_drift_text_length_mean{feature="text"}', 'kit_drift_unknown_token_rate{feature="text"}'):  # fmt: skip
        assert name in metrics, name
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert page.status_code == 200 and "Live figures" in page.text


def test_health_is_503_until_warmed_up(text_run):
    import threading

    from kit.serve.model import Predictor

    release = threading.Event()
    original = Predictor.warm_up

    def slow_warm_up(self):
        release.wait(30)
        original(self)

    async def main():
        from tests.serve.conftest import App

        app = App(text_run)
        app.service.served.warm_up = slow_warm_up.__get__(app.service.served)
        lifespan = app.app.router.lifespan_context(app.app)
        await lifespan.__aenter__()
        import httpx

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://t") as client:
            cold = await client.get("/health")
            refused = await client.post("/predict", content=json.dumps(ROWS))
            release.set()
            while not app.service.ready:
                await asyncio.sleep(0.05)
            warm = await client.get("/health")
        await lifespan.__aexit__(None, None, None)
        return cold, refused, warm

    cold, refused, warm = asyncio.run(main())
    assert cold.status_code == 503 and cold.json()["status"] == "warming up"
    assert refused.status_code == 503 and "warming up" in refused.json()["error"]
    assert warm.status_code == 200


def sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_generate_answers_what_kit_generate_answers_and_streams_it(lm_run, runner):
    from kit.cli import cli

    prompt = "The if statement"
    said = runner.invoke(cli, ["generate", str(lm_run), prompt, "--sampler", "greedy", "-n", "12"]).stdout

    async def test(app):
        settings = {"sampler": "greedy", "max_new_tokens": 12}
        whole = (await app.post("/generate", {"prompt": prompt, **settings})).json()
        both = (await app.post("/generate", {"prompts": [prompt, "A class"], **settings})).json()
        stream = await app.post("/generate", {"prompt": prompt, "stream": True, **settings})
        together = await asyncio.gather(*(app.post("/generate", {"prompt": p, **settings}) for p in (prompt, "x")))
        return whole, both, stream, [r.json() for r in together]

    whole, both, stream, together = served(lm_run, test)
    assert prompt + whole["completion"] == said.rstrip("\n")
    assert both["completions"][0]["completion"] == whole["completion"]
    assert together[0]["completion"] == whole["completion"]  # batched with another request: the same
    events = sse(stream.text)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert events[-1][0] == "done" and events[-1][1]["completion"] == whole["completion"]
    assert "".join(data["text"] for name, data in events if name == "token") == whole["completion"]
    assert len([name for name, _ in events if name == "token"]) > 1  # piece by piece, not at the end


def test_generate_refusals(lm_run):
    async def test(app):
        bodies = [
            {"prompt": "word " * 200, "sampler": "greedy"},
            {"prompt": "x", "top_p": 2},
            {"prompt": "x", "temperature": "hot"},
            {"prompt": "x", "colour": "blue"},
            {"prompt": "x", "sampler": "beam", "stream": True},
            {"prompts": ["a", "b"], "stream": True},
            {"prompt": ""},
            {"text": "x"},
        ]
        answers = [await app.post("/generate", body) for body in bodies]
        ok = await app.post("/generate", {"prompt": "x", "sampler": "greedy", "max_new_tokens": 2})
        return [(a.status_code, a.json()["error"]) for a in answers], ok.status_code

    answers, ok = served(lm_run, test)
    assert all(status == 400 for status, _ in answers)
    words = ["tokens; the model's context is 32 tokens, so nothing could follow it. Shorten the prompt.",
             "top_p must be in (0, 1], got 2.", "Sampler setting 'temperature' must be a number, got 'hot'.",
             "Unknown sampler setting 'colour'.", "Beam search picks its best sequence at the end",
             "send one prompt", "a prompt must be non-empty text", 'Give "prompt" (one text)']  # fmt: skip
    for (_, error), expected in zip(answers, words):
        assert expected in error
    assert ok == 200


def test_a_run_reduced_to_its_record_and_model_serves_the_same(text_run, tmp_path):
    """What the Dockerfile copies (run.json and model/) is all kit serve needs."""
    import shutil

    from kit.rundir import RunDir

    original, copy = RunDir(text_run), RunDir(tmp_path / "run")
    copy.path.mkdir()
    shutil.copy(original.record_file, copy.record_file)
    shutil.copytree(original.model_dir, copy.model_dir)

    async def test(app):
        return (await app.post("/predict", {"rows": ROWS})).json()["predictions"]

    assert served(copy.path, test) == kit_predict(text_run, ROWS, tmp_path)


def test_generated_tokens_are_counted(lm_run):
    async def test(app):
        await app.post("/generate", {"prompts": ["The if", "A class"], "sampler": "greedy", "max_new_tokens": 5})
        return (await app.client.get("/metrics")).text

    metrics = served(lm_run, test)
    count = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("kit_generated_tokens_total"))
    )
    assert 2 <= count <= 10  # up to 5 per prompt (fewer if the end token comes first)
