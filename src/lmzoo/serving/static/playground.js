// The lmzoo playground: streams a completion from this server and draws, per token, what the
// architecture did (the `lmzoo` field the server adds to each chunk when asked for token stats).
"use strict";

const $ = (id) => document.getElementById(id);
const LABELS = {  // how each statistic is named in the table; by its shape otherwise
  spiked: (i) => `layer ${i} spiked`,
  spike_rate: (i) => `layer ${i} spike rate`,
  expert: () => "expert",
  fusion: (i) => `layer ${i} fusion`,
};
const STREAM_RGB = [[230, 90, 90], [90, 190, 90], [90, 120, 230]];  // efficia-1's lcp, gmg, ccu
let model = { arch: "?", streams: ["lcp", "gmg", "ccu"] };
let controller = null;
let times = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("api_key").value) h.Authorization = `Bearer ${$("api_key").value}`;
  return h;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error.message);
    const info = data.data[0];
    const config = info.lmzoo.config;
    model = { id: info.id, arch: info.lmzoo.architecture,
              streams: ["lcp", ...(config.memory ? ["gmg"] : []), ...(config.compression ? ["ccu"] : [])] };
    $("model").textContent = `${info.id} (${model.arch})`;
  } catch (err) {
    $("model").textContent = `model info unavailable: ${err.message}`;
  }
}

function requestBody() {
  const number = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  const prompt = $("prompt").value;
  const chat = $("mode").value === "chat";
  const body = {
    model: model.id, max_tokens: number("max_tokens"), temperature: number("temperature"), top_p: number("top_p"),
    top_k: number("top_k"), seed: number("seed"), stream: true, lmzoo_token_stats: true,
  };
  if ($("stop").value) body.stop = $("stop").value;
  if (chat) body.messages = [{ role: "user", content: prompt }];
  else body.prompt = prompt;
  return { chat, body };
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function reset(prompt, chat) {
  $("output").textContent = "";
  if (!chat) {
    const span = document.createElement("span");
    span.className = "prompt";
    span.textContent = prompt;
    $("output").appendChild(span);
  }
  $("stats").innerHTML = "";
  $("legend").textContent = "";
  times = [];
  drawTimeline();
}

async function generate(event) {
  event.preventDefault();
  const { chat, body } = requestBody();
  reset($("prompt").value, chat);
  controller = new AbortController();
  $("submit").disabled = true;
  $("cancel").disabled = false;
  setStatus("generating…");
  let tokens = 0;
  try {
    const response = await fetch(chat ? "/v1/chat/completions" : "/v1/completions",
      { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) throw new Error((await response.json()).error.message);
    for await (const chunk of sseChunks(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices[0];
      if (!choice) continue;
      const text = chat ? (choice.delta.content || "") : choice.text;
      $("output").appendChild(document.createTextNode(text));
      if (chunk.lmzoo) {
        addColumn(chunk.lmzoo);
        tokens += 1;
      }
      if (choice.finish_reason) setStatus(`done: ${tokens} tokens (${choice.finish_reason})`);
    }
  } catch (err) {
    setStatus(err.name === "AbortError" ? `stopped after ${tokens} tokens` : `error: ${err.message}`,
              err.name !== "AbortError");
  } finally {
    $("submit").disabled = false;
    $("cancel").disabled = true;
  }
}

async function* sseChunks(response) {
  // Server-sent events: `data: JSON` lines, blank lines between events, `data: [DONE]` at the end.
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function visible(text) {
  return text.replace(/\n/g, "↵").replace(/ /g, "·") || "∅";
}

function row(key, label) {
  let tr = document.getElementById(`row-${key}`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.id = `row-${key}`;
    if (key === "tokens") tr.className = "tokens";
    const th = document.createElement("th");
    th.textContent = label;
    tr.appendChild(th);
    $("stats").appendChild(tr);
  }
  return tr;
}

function cell(tr, color, text, title) {
  const td = document.createElement("td");
  td.style.background = color;
  td.textContent = text;
  td.title = title;
  tr.appendChild(td);
}

function addColumn(info) {
  cell(row("tokens", "input token"), "", visible(info.input), `read ${JSON.stringify(info.input)}, ` +
       `wrote ${JSON.stringify(info.token)} in ${info.ms} ms`);
  for (const [name, value] of Object.entries(info.token_stats)) {
    const label = LABELS[name] || ((i) => (i === undefined ? name : `${name} ${i}`));
    if (!Array.isArray(value)) {  // one number per token: a category (expert) or a level
      const hue = (Number(value) * 137) % 360;
      cell(row(name, label()), `hsl(${hue} 65% 72%)`, String(value), `${name} = ${value}`);
      continue;
    }
    value.forEach((v, i) => {
      const tr = row(`${name}-${i}`, label(i));
      if (Array.isArray(v)) {  // weights over streams (efficia-1 fusion): the leading stream's colour,
        // the stronger the further its weight is above an even split (the tooltip has every weight)
        const top = v.indexOf(Math.max(...v));
        const even = 1 / v.length;
        const strength = Math.min(1, 0.15 + (v[top] - even) / (1 - even));
        cell(tr, `rgb(${STREAM_RGB[top % 3].join(" ")} / ${strength.toFixed(2)})`, "",
             v.map((w, k) => `${model.streams[k] || k} ${w.toFixed(2)}`).join(", "));
      } else if (typeof v === "boolean") {  // a spike
        cell(tr, v ? "rgb(214 69 65)" : "", "", `${label(i)}: ${v}`);
      } else {  // a rate in [0, 1], written as a percentage
        cell(tr, `rgb(214 69 65 / ${Number(v)})`, Math.round(100 * v), `${label(i)}: ${Number(v).toFixed(3)}`);
      }
    });
    if (name === "fusion" && !$("legend").textContent) fusionLegend();
  }
  times.push(info.ms);
  drawTimeline();
}

function fusionLegend() {
  $("legend").innerHTML = "Fusion: the stream with the largest weight (stronger colour: further above an even split)" +
    model.streams
    .map((s, k) => `<span class="swatch" style="background:rgb(${STREAM_RGB[k].join(" ")})"></span>${s}`).join(" ");
}

function drawTimeline() {
  // The first token also waited for the prompt (and the queue): it is named, not drawn, so that
  // the line shows the decoding steps at their own scale.
  const svg = $("timeline");
  svg.innerHTML = "";
  if (!times.length) return;
  const steps = times.slice(1);
  const max = Math.max(...steps, 1);
  const dx = steps.length > 1 ? 600 / (steps.length - 1) : 0;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", steps.map((t, i) => `${i * dx},${115 - (t / max) * 100}`).join(" "));
  svg.appendChild(line);
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 12);
  label.textContent = `first token ${times[0].toFixed(1)} ms (prompt and queue)` +
    (steps.length ? `; then up to ${max.toFixed(1)} ms, last ${steps[steps.length - 1].toFixed(1)} ms` : "");
  svg.appendChild(label);
}

$("form").addEventListener("submit", generate);
$("cancel").addEventListener("click", () => controller && controller.abort());
$("api_key").addEventListener("change", loadModel);
loadModel();
