// padless chat: talks to this server's /v1/model and /v1/chat, shows greedy and sampled
// answers word by word as the server streams them, and draws the attention of the last
// answer on a canvas. Loads nothing from anywhere else.
"use strict";

const $ = (id) => document.getElementById(id);
let heatmap = null; // what the canvas shows, for the hover text

function describeModel(info) {
  const parts = [
    `${info.run}: ${info.arch} model`,
    `${info.parameters.toLocaleString("en")} parameters`,
    `vocabulary of ${info.vocab_size.toLocaleString("en")}`,
    `${info.step.toLocaleString("en")} training steps`,
  ];
  if (typeof info.best_valid_loss === "number") {
    parts.push(`best validation loss ${info.best_valid_loss.toFixed(3)}`);
  }
  return parts.join(" · ");
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) throw new Error(response.statusText);
    const info = await response.json();
    $("model-info").textContent = describeModel(info);
    $("message").maxLength = info.limits.max_chars;
    $("beam").max = info.limits.max_beam;
    $("beam").value = Math.min(info.defaults.beam_size, info.limits.max_beam);
    $("method").value = info.defaults.method;
  } catch (error) {
    $("model-info").textContent = `Could not read the model's description (${error.message}).`;
  }
  updateOptions();
}

function updateOptions() {
  const method = $("method").value;
  $("beam").disabled = method !== "beam";
  for (const id of ["temperature", "top-k", "top-p", "seed"]) {
    $(id).disabled = method !== "sample";
  }
}

function requestBody(message) {
  const body = { message };
  const method = $("method").value;
  if (method === "greedy") body.beam = 1;
  if (method === "beam") body.beam = Number($("beam").value);
  if (method === "sample") {
    body.sample = true;
    body.temperature = Number($("temperature").value);
    body.top_k = Number($("top-k").value);
    body.top_p = Number($("top-p").value);
    if ($("seed").value !== "") body.seed = Number($("seed").value);
  }
  return body;
}

function addTurn(who, text, meta) {
  const item = document.createElement("li");
  item.className = `turn ${who}`;
  $("conversation").appendChild(item);
  showTurn(item, text, meta);
  return item;
}

function showTurn(item, text, meta) {
  item.textContent = text;
  if (meta) {
    const small = document.createElement("span");
    small.className = "meta";
    small.textContent = meta;
    item.appendChild(small);
  }
  item.scrollIntoView({ block: "end" });
}

// Server-Sent Events of a streamed answer: onEvent(name, data) for each, as they come
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const fields = {};
      for (const line of buffer.slice(0, end).split("\n")) {
        const colon = line.indexOf(": ");
        fields[line.slice(0, colon)] = line.slice(colon + 2);
      }
      buffer = buffer.slice(end + 2);
      onEvent(fields.event, JSON.parse(fields.data));
    }
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function send(event) {
  event.preventDefault();
  const message = $("message").value;
  if (!message.trim()) return;
  showError("");
  addTurn("user", message);
  $("message").value = "";
  $("send").disabled = true;
  let bubble = null;
  try {
    const body = requestBody(message);
    body.stream = !body.beam || body.beam === 1; // beam search cannot stream
    const response = await fetch("/v1/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let answer = null;
    const type = response.headers.get("Content-Type") || "";
    if (response.ok && type.startsWith("text/event-stream")) {
      bubble = addTurn("bot", "…");
      let tokens = 0;
      await readEvents(response, (name, data) => {
        if (name === "token") {
          tokens += 1;
          bubble.dataset.streamed = String(tokens);
          showTurn(bubble, data.text);
        } else if (name === "done") {
          answer = data;
        } else {
          throw new Error(data.detail);
        }
      });
    } else {
      answer = await response.json();
      if (!response.ok) throw new Error(answer.detail || response.statusText);
    }
    const score = answer.score === null ? "n/a" : answer.score.toFixed(2);
    const meta = `${answer.method} · score ${score} · ${Math.round(answer.latency_ms)} ms`;
    if (bubble) showTurn(bubble, answer.reply, meta);
    else addTurn("bot", answer.reply, meta);
    drawHeatmap(answer);
  } catch (error) {
    if (bubble) bubble.remove();
    showError(`No answer: ${error.message}`);
  } finally {
    $("send").disabled = false;
    $("message").focus();
  }
}

// weight 0 -> near white, 1 -> dark blue (linear in the weight)
function colour(weight) {
  const w = Math.max(0, Math.min(1, weight));
  const mix = (a, b) => Math.round(a + (b - a) * w);
  return `rgb(${mix(247, 8)}, ${mix(251, 48)}, ${mix(255, 107)})`;
}

function drawHeatmap(answer) {
  const canvas = $("heatmap");
  const rows = answer.tokens.slice();
  if (answer.attention.length > rows.length) rows.push("</s>");
  const columns = answer.source_tokens;
  const weights = answer.attention;
  const font = "13px system-ui, sans-serif";
  const ctx = canvas.getContext("2d");
  ctx.font = font;
  const widest = (labels) => Math.max(0, ...labels.map((t) => ctx.measureText(t).width));
  const left = Math.ceil(widest(rows)) + 12;
  const top = Math.ceil(widest(columns)) + 12;
  const cell = Math.max(16, Math.min(34, Math.floor(420 / Math.max(1, columns.length))));
  const legendWidth = Math.max(140, cell * columns.length);
  const width = left + legendWidth + 8;
  const legend = 30; // the colour scale under the cells
  const height = top + cell * rows.length + legend + 4;
  const scale = window.devicePixelRatio || 1;
  canvas.width = Math.ceil(width * scale);
  canvas.height = Math.ceil(height * scale);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  ctx.font = font;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = "#1d2433";
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  columns.forEach((label, j) => {
    ctx.save();
    ctx.translate(left + (j + 0.5) * cell, top - 6);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(label, 0, 0);
    ctx.restore();
  });
  ctx.textAlign = "right";
  rows.forEach((label, i) => ctx.fillText(label, left - 6, top + (i + 0.5) * cell));
  weights.forEach((row, i) => row.forEach((weight, j) => {
    ctx.fillStyle = colour(weight);
    ctx.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
  }));
  drawLegend(ctx, left, top + cell * rows.length + 10, legendWidth);
  heatmap = { rows, columns, weights, left, top, cell };
  canvas.dataset.rows = String(rows.length);
  canvas.dataset.columns = String(columns.length);
  $("heatmap-hover").textContent = "Point at a cell to read its weight.";
}

function drawLegend(ctx, x, y, width) {
  const steps = 50;
  for (let k = 0; k < steps; k++) {
    ctx.fillStyle = colour(k / (steps - 1));
    ctx.fillRect(x + (k * width) / steps, y, width / steps + 0.5, 8);
  }
  ctx.fillStyle = "#5d6678";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText("weight 0", x, y + 11);
  ctx.textAlign = "right";
  ctx.fillText("1", x + width, y + 11);
}

function hover(event) {
  if (!heatmap) return;
  const box = $("heatmap").getBoundingClientRect();
  const j = Math.floor((event.clientX - box.left - heatmap.left) / heatmap.cell);
  const i = Math.floor((event.clientY - box.top - heatmap.top) / heatmap.cell);
  if (i < 0 || j < 0 || i >= heatmap.rows.length || j >= heatmap.columns.length) return;
  $("heatmap-hover").textContent =
    `answer “${heatmap.rows[i]}” ← message “${heatmap.columns[j]}”: ` +
    heatmap.weights[i][j].toFixed(3);
}

$("composer").addEventListener("submit", send);
$("method").addEventListener("change", updateOptions);
$("heatmap").addEventListener("mousemove", hover);
loadModel();
