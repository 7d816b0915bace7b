"""The page `kit serve` shows at `/`: try the model, send feedback, and watch the figures live.

One self-contained HTML document (no files, nothing fetched from elsewhere): it
reads `/info` to build its form, posts to `/predict` or `/generate` (streamed),
and polls `/stats` every second for throughput, latency, batch sizes, queue
depth, errors, accuracy from feedback and drift.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kit serve</title>
<link rel="icon" href="data:,">
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d232b; }
  header { background: #1d232b; color: #fff; padding: 12px 24px; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 20px; margin: 0; }
  #status { padding: 2px 10px; border-radius: 10px; background: #8a6d00; font-size: 13px; }
  #status.ready { background: #1e7d32; }
  main { display: grid; grid-template-columns: minmax(320px, 1fr) minmax(420px, 1.4fr); gap: 16px; padding: 16px 24px; }
  section { background: #fff; border-radius: 8px; padding: 16px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  h2 { font-size: 16px; margin: 0 0 12px; }
  label { display: block; font-size: 13px; margin: 8px 0 2px; color: #46505c; }
  input, textarea, select { width: 100%; box-sizing: border-box; font: inherit; padding: 6px; }
  textarea { min-height: 70px; }
  button { margin-top: 12px; padding: 8px 16px; font: inherit; background: #2458c6; color: #fff; border: 0;
           border-radius: 6px; cursor: pointer; }
  pre { background: #f0f2f5; padding: 8px; white-space: pre-wrap; word-break: break-word; max-height: 260px;
        overflow: auto; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 8px; }
  .card { background: #f0f2f5; border-radius: 6px; padding: 8px; }
  .card b { display: block; font-size: 20px; }
  .card span { font-size: 12px; color: #46505c; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; margin-top: 8px; }
  th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e3e6ea; }
  .bar { height: 10px; background: #2458c6; border-radius: 3px; }
  .warn { color: #b3261e; font-weight: 600; }
  canvas { width: 100%; height: 90px; }
</style>
</head>
<body>
<header><h1>kit serve</h1><span id="model"></span><span id="status">loading</span></header>
<main>
<section id="try">
  <h2>Try the model</h2>
  <form id="form"></form>
  <button id="send" type="button">Send</button>
  <div id="answer"></div>
  <div id="feedback-box" hidden>
    <label for="truth">The true answer (sent to /feedback; the accuracy figures use it)</label>
    <div id="truth-input"></div>
    <button id="send-feedback" type="button">Send feedback</button>
    <span id="feedback-said"></span>
  </div>
</section>
<section id="live">
  <h2>Live figures <small>(last 10 seconds; updated every second)</small></h2>
  <div class="cards">
    <div class="card"><b id="stat-rps">-</b><span>requests / s</span></div>
    <div class="card"><b id="stat-rows">-</b><span>rows / s</span></div>
    <div class="card"><b id="stat-p50">-</b><span>p50 latency (ms)</span></div>
    <div class="card"><b id="stat-p99">-</b><span>p99 latency (ms)</span></div>
    <div class="card"><b id="stat-batch">-</b><span>mean batch (rows)</span></div>
    <div class="card"><b id="stat-queue">-</b><span>queue depth</span></div>
    <div class="card"><b id="stat-requests">-</b><span>requests answered</span></div>
    <div class="card"><b id="stat-errors">-</b><span>errors</span></div>
    <div class="card"><b id="stat-accuracy">-</b><span id="accuracy-label">accuracy (feedback)</span></div>
    <div class="card"><b id="stat-feedback">-</b><span>feedback received</span></div>
  </div>
  <canvas id="chart" width="600" height="90"></canvas>
  <h2 style="margin-top:12px">Drift of live inputs against training</h2>
  <table id="drift-table"><thead><tr><th>column</th><th>kind</th><th>rows</th><th>mean shift (std)</th>
    <th>PSI</th><th>unseen categories</th><th>text length</th><th>unknown tokens</th></tr></thead>
    <tbody></tbody></table>
  <p style="font-size:12px;color:#46505c">PSI: under 0.1 no shift, 0.1-0.25 moderate, above 0.25 large.
    Prometheus metrics: <a href="metrics">/metrics</a>.</p>
</section>
</main>
<script>
"use strict";
let info = null, lastId = null, history = [];
const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 1) => (x === null || x === undefined) ? "-" : Number(x).toFixed(digits);

function field(name, value, multiline) {
  const wrap = document.createElement("div");
  const label = document.createElement("label");
  label.textContent = name; label.htmlFor = "in-" + name;
  const long = multiline || typeof value === "string" && value.length > 20;
  const input = document.createElement(long ? "textarea" : "input");
  input.id = "in-" + name; input.name = name;
  input.value = typeof value === "string" ? value : JSON.stringify(value);
  wrap.append(label, input);
  return wrap;
}

async function load() {
  info = await (await fetch("info")).json();
  $("model").textContent = info.task + (info.run ? " - " + info.run : "");
  const form = $("form");
  if (info.generates) {
    form.append(field("prompt", info.example.prompt, true));
    const sampler = document.createElement("select");
    sampler.id = "in-sampler";
    for (const s of ["top_k", "top_p", "greedy", "random", "beam"]) sampler.add(new Option(s, s));
    const l = document.createElement("label"); l.textContent = "sampler"; l.htmlFor = "in-sampler";
    form.append(l, sampler, field("max_new_tokens", "32"), field("temperature", "1.0"));
    $("in-max_new_tokens").type = "number"; $("in-temperature").type = "number";
  } else {
    for (const column of info.columns) form.append(field(column, info.example[column]));
  }
  $("send").onclick = info.generates ? generate : predict;
  $("send-feedback").onclick = sendFeedback;
}

function readValue(column) {
  const text = $("in-" + column).value;
  const example = info.example[column];
  if (typeof example === "string") return text;
  try { return JSON.parse(text); } catch (e) { return text; }
}

function showError(body) {
  $("answer").innerHTML = "";
  const p = document.createElement("p"); p.className = "warn"; p.id = "error";
  p.textContent = body.error || "failed"; $("answer").append(p);
}

async function predict() {
  const row = {};
  for (const column of info.columns) row[column] = readValue(column);
  const response = await fetch("predict", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({rows: [row]})});
  const body = await response.json();
  if (!response.ok) { showError(body); return; }
  lastId = body.id;
  showPrediction(body.predictions[0]);
}

function showPrediction(p) {
  const answer = $("answer"); answer.innerHTML = "";
  const result = document.createElement("div"); result.id = "result";
  if (p.label !== undefined) {
    const h = document.createElement("p"); h.innerHTML = "<b></b> (" + fmt(100 * p.probability) + "%)";
    h.querySelector("b").textContent = p.label; h.querySelector("b").id = "predicted-label"; result.append(h);
    for (const [label, probability] of Object.entries(p.probabilities || {})) {
      const row = document.createElement("div");
      row.innerHTML = "<span></span><div class='bar'></div>";
      row.querySelector("span").textContent = label + " " + fmt(100 * probability) + "%";
      row.querySelector(".bar").style.width = (100 * probability) + "%";
      result.append(row);
    }
  }
  const pre = document.createElement("pre"); pre.textContent = JSON.stringify(p, null, 2);
  result.append(pre); answer.append(result);
  setUpFeedback(p);
}

function setUpFeedback(p) {
  const box = $("truth-input"); box.innerHTML = "";
  if (info.labels) {
    const select = document.createElement("select"); select.id = "truth";
    for (const label of info.labels) select.add(new Option(label, label));
    select.value = p.label; box.append(select);
  } else if (info.targets.length) {
    for (const target of info.targets) {
      const input = document.createElement("input"); input.id = "truth-" + target; input.placeholder = target;
      input.type = "number"; input.value = p[target]; box.append(input);
    }
  } else { return; }
  $("feedback-box").hidden = false; $("feedback-said").textContent = "";
}

async function sendFeedback() {
  const body = {id: lastId, line: 1};
  if (info.labels) body[info.targets[0]] = $("truth").value;
  else for (const target of info.targets) body[target] = Number($("truth-" + target).value);
  const response = await fetch("feedback", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body)});
  const said = await response.json();
  $("feedback-said").textContent = response.ok ? "thank you" : said.error;
}

async function generate() {
  const body = {prompt: $("in-prompt").value, sampler: $("in-sampler").value,
                max_new_tokens: Number($("in-max_new_tokens").value),
                temperature: Number($("in-temperature").value)};
  const streaming = body.sampler !== "beam";
  body.stream = streaming;
  const answer = $("answer"); answer.innerHTML = "";
  const pre = document.createElement("pre"); pre.id = "result"; answer.append(pre);
  const prompt = document.createElement("b"); prompt.textContent = body.prompt;
  const completion = document.createElement("span"); completion.id = "completion";
  pre.append(prompt, completion);
  const response = await fetch("generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body)});
  if (!response.ok) { showError(await response.json()); return; }
  if (!streaming) { completion.textContent = (await response.json()).completion; return; }
  const reader = response.body.getReader(); const decoder = new TextDecoder(); let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      const name = (event.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((event.match(/^data: (.*)$/m) || [])[1] || "{}");
      if (name === "token") completion.textContent += data.text;
      if (name === "error") showError(data);
    }
  }
}

function drawChart() {
  const canvas = $("chart"), ctx = canvas.getContext("2d");
  canvas.width = canvas.clientWidth; canvas.height = canvas.clientHeight;  // draw at the size shown
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1, ...history);
  ctx.strokeStyle = "#2458c6"; ctx.lineWidth = 2; ctx.beginPath();
  history.forEach((v, i) => {
    const x = i * canvas.width / 59, y = canvas.height - 4 - (v / top) * (canvas.height - 8);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke(); ctx.fillStyle = "#46505c"; ctx.font = "11px sans-serif";
  ctx.fillText("rows/s, last 60 s (max " + fmt(top) + ")", 4, 12);
}

function cell(row, text, warn) {
  const td = document.createElement("td"); td.textContent = text; if (warn) td.className = "warn"; row.append(td);
}

function showDrift(drift) {
  const body = $("drift-table").querySelector("tbody"); body.innerHTML = "";
  for (const [column, d] of Object.entries(drift)) {
    const row = document.createElement("tr"); row.dataset.column = column;
    cell(row, column); cell(row, d.kind); cell(row, d.rows);
    cell(row, d.mean_shift === undefined ? "" : fmt(d.mean_shift, 2), Math.abs(d.mean_shift) > 0.5);
    cell(row, d.psi === undefined ? "" : fmt(d.psi, 3), d.psi > 0.25);
    cell(row, d.unseen_rate === undefined ? "" : fmt(100 * d.unseen_rate) + "%", d.unseen_rate > 0.05);
    cell(row, d.length_mean === undefined ? "" : fmt(d.length_mean) + " chars" +
         (d.length_shift === undefined ? "" : " (" + fmt(d.length_shift, 2) + " std)"), Math.abs(d.length_shift) > 0.5);
    cell(row, d.unknown_token_rate === undefined ? "" : fmt(100 * d.unknown_token_rate) + "%");
    body.append(row);
  }
}

async function poll() {
  try {
    const s = await (await fetch("stats")).json();
    $("status").textContent = s.ready ? "ready" : "warming up";
    $("status").className = s.ready ? "ready" : "";
    $("stat-rps").textContent = fmt(s.requests_per_second);
    $("stat-rows").textContent = fmt(s.rows_per_second);
    $("stat-p50").textContent = fmt(s.latency_p50_ms);
    $("stat-p99").textContent = fmt(s.latency_p99_ms);
    $("stat-batch").textContent = fmt(s.mean_batch_rows);
    $("stat-queue").textContent = s.queue_depth;
    $("stat-requests").textContent = s.requests;
    $("stat-errors").textContent = Object.values(s.errors).reduce((a, b) => a + b, 0);
    const f = s.feedback;
    if (f.accuracy !== undefined) $("stat-accuracy").textContent = fmt(100 * f.accuracy) + "%";
    else if (f.mae !== undefined) { $("stat-accuracy").textContent = fmt(f.mae, 3);
                                    $("accuracy-label").textContent = "mean abs. error (feedback)"; }
    $("stat-feedback").textContent = f.feedback;
    history.push(s.rows_per_second || 0); if (history.length > 60) history.shift();
    drawChart(); showDrift(s.drift);
  } catch (e) { $("status").textContent = "unreachable"; $("status").className = ""; }
}

load().then(poll);
setInterval(poll, 1000);
</script>
</body>
</html>
"""
