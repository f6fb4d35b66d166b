// adapterhub web console: registry browser, playground and live view over the server's own JSON routes.
// No framework and no build step: a hash router, three pages, and small SVG charts.
"use strict";

const state = { key: sessionStorage.getItem("adapterhub-key") || "", me: null, live: null, ticket: 0 };
const main = () => document.getElementById("main");

// ---- tiny DOM helpers -------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}
const fmt = (value) => typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(4)) : String(value ?? "");
const when = (iso) => iso ? new Date(typeof iso === "number" ? iso * 1000 : iso).toLocaleString() : "";

// ---- talking to the server --------------------------------------------------------------------
function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}
class NeedsKey extends Error {}
async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) throw new NeedsKey("this server needs an API key");
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const body = isJson ? await response.json() : await response.text();
  if (!response.ok) throw new Error((body && body.error && body.error.message) || `${response.status} ${path}`);
  return body;
}
const post = (path, body) => call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function askForKey(message = "") {
  const form = document.getElementById("key-form").content.cloneNode(true);
  main().replaceChildren(form);
  main().dataset.rendered = "key";
  document.getElementById("key-error").textContent = message;
  document.getElementById("key").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.key = document.getElementById("key-input").value.trim();
    try {
      await whoami();
      sessionStorage.setItem("adapterhub-key", state.key);
      route();
    } catch (error) { askForKey(error.message); }
  });
}

async function whoami() {
  const response = await fetch("/v1/whoami", { headers: headers() });
  if (response.status === 401) throw new Error(state.key ? "the server refused this key" : "");
  state.me = await response.json();
  document.getElementById("who").textContent = state.me.auth ? `key: ${state.me.name}${state.me.admin ? " (admin)" : ""}` : "no auth";
  document.getElementById("signout").hidden = !state.me.auth;
  return state.me;
}

// ---- router -----------------------------------------------------------------------------------
function parseHash() {
  const [path, query] = (location.hash.slice(1) || "/adapters").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}
// Each page builds its nodes and route() shows them only if no newer navigation started meanwhile; the shown
// hash is recorded in main's data-rendered (what the browser tests wait for).
async function route() {
  const ticket = ++state.ticket;
  if (state.live) { clearInterval(state.live); state.live = null; }
  if (!state.me) {
    try { await whoami(); } catch (error) { askForKey(error.message); return; }
  }
  const { parts, params } = parseHash();
  const page = parts[0] || "adapters";
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (page === "adapter" ? "adapters" : page)));
  let nodes, tick = null;
  try {
    if (page === "adapter" && parts[1]) nodes = await adapterPage(parts[1]);
    else if (page === "playground") nodes = await playgroundPage(params);
    else if (page === "live") ({ nodes, tick } = await livePage());
    else nodes = await listPage(params);
  } catch (error) {
    if (ticket === state.ticket && error instanceof NeedsKey) { askForKey(error.message); return; }
    nodes = el("p", { class: "error", id: "page-error" }, error.message);
  }
  if (ticket !== state.ticket) return;
  main().replaceChildren(...[nodes].flat());
  main().dataset.rendered = location.hash || "#/adapters";
  if (tick) state.live = setInterval(() => tick().catch(() => {}), 1000);
}

// ---- registry browser -------------------------------------------------------------------------
async function listPage(params) {
  const limit = Number(params.get("limit") || 50), offset = Number(params.get("offset") || 0);
  const query = new URLSearchParams({ q: params.get("q") || "", domain: params.get("domain") || "", method: params.get("method") || "",
    tag: params.get("tag") || "", base: params.get("base") || "", limit, offset });
  const page = await call(`/v1/registry/adapters?${query}`);
  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [name, value] of Object.entries(changes)) value === "" ? next.delete(name) : next.set(name, value);
    location.hash = `#/adapters?${next}`;
  };
  const select = (name, values) => el("select", { id: `filter-${name}`, on: { change: (e) => go({ [name]: e.target.value, offset: 0 }) } },
    el("option", { value: "" }, `any ${name}`), values.map((v) => el("option", { value: v, selected: v === params.get(name) }, v)));
  const search = el("input", { id: "filter-q", type: "search", placeholder: "search name or description", value: params.get("q") || "",
    on: { change: (e) => go({ q: e.target.value, offset: 0 }) } });
  const base = el("input", { id: "filter-base", placeholder: "base fingerprint", value: params.get("base") || "",
    on: { change: (e) => go({ base: e.target.value, offset: 0 }) } });
  const rows = page.data.map((a) => el("tr", { class: "adapter-row" },
    el("td", {}, el("a", { href: `#/adapter/${encodeURIComponent(a.name)}` }, a.name)),
    el("td", {}, `v${a.latest}`, a.versions > 1 ? el("span", { class: "muted" }, ` (${a.versions})`) : ""),
    el("td", {}, a.domain || ""), el("td", {}, a.method), el("td", {}, a.task),
    el("td", {}, a.headline ? `${a.headline.metric} ${fmt(a.headline.value)}` : el("span", { class: "muted" }, "—")),
    el("td", {}, a.tags.map((t) => el("span", { class: "tag" }, t))),
    el("td", { class: "muted" }, a.description)));
  const last = Math.min(offset + limit, page.total);
  return el("section", { class: "card" },
    el("h2", {}, "Adapters"),
    el("div", { class: "filters" }, search, select("domain", page.facets.domains), select("method", page.facets.methods),
      select("tag", page.facets.tags), base),
    el("table", { id: "adapters" }, el("thead", {}, el("tr", {}, ["name", "version", "domain", "method", "task", "headline", "tags", "description"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)),
    el("div", { class: "pager" },
      el("button", { id: "prev", class: "secondary", disabled: offset === 0, on: { click: () => go({ offset: Math.max(0, offset - limit) }) } }, "Previous"),
      el("span", { id: "range" }, page.total ? `${offset + 1}–${last} of ${page.total}` : "no adapters match"),
      el("button", { id: "next", class: "secondary", disabled: last >= page.total, on: { click: () => go({ offset: offset + limit }) } }, "Next")));
}

async function adapterPage(name) {
  const story = await call(`/v1/registry/adapters/${encodeURIComponent(name)}`);
  const version = story.versions_detail[0];
  const sections = [
    el("section", { class: "card" },
      el("h2", { id: "adapter-name" }, story.name, " ", el("span", { class: "muted" }, `${story.method} · ${story.task}${story.domain ? " · " + story.domain : ""}`)),
      el("p", {}, story.description),
      versionsTable(story)),
    metricsCard(version),
  ];
  const curve = ((version.metrics.train || {}).curve) || null;
  if (curve && curve.length > 1) sections.push(el("section", { class: "card" }, el("h3", {}, "Training loss"), lossChart(curve)));
  const confusion = ((version.metrics.test || version.metrics.validation || {}).confusion);
  if (confusion) sections.push(el("section", { class: "card" }, el("h3", {}, "Confusion matrix (rows: true, columns: predicted)"), heatmap(confusion)));
  if (version.source.parents.length) sections.push(el("section", { class: "card", id: "lineage" }, el("h3", {}, `Lineage (${version.source.kind})`),
    el("ul", {}, version.source.parents.map((ref) => el("li", {}, el("a", { href: `#/adapter/${encodeURIComponent(ref.split("@")[0])}` }, ref))))));
  if (version.contract) sections.push(el("section", { class: "card", id: "contract" }, el("h3", {}, "Serving contract"), el("pre", {}, JSON.stringify(version.contract, null, 2))));
  if (story.channels.length) sections.push(el("section", { class: "card", id: "channels" }, el("h3", {}, "Channels"),
    el("table", {}, el("thead", {}, el("tr", {}, ["channel", "holder", "canary"].map((h) => el("th", {}, h)))),
      el("tbody", {}, story.channels.map((c) => el("tr", {}, el("td", {}, c.channel), el("td", {}, c.holder ? `v${c.holder}` : "—"),
        el("td", {}, c.canary ? `v${c.canary} (${c.percent}%)` : "—")))))));
  if (story.history.length) sections.push(el("section", { class: "card", id: "history" }, el("h3", {}, "Channel history"), historyTable(story.history)));
  if (version.recipe) sections.push(el("section", { class: "card" }, el("h3", {}, "Recipe"), el("pre", { id: "recipe" }, JSON.stringify(version.recipe, null, 2))));
  sections.push(el("section", { class: "card" }, el("h3", {}, "Model card"), el("pre", { id: "card" }, story.card)));
  if (state.me && state.me.admin) sections.splice(1, 0, adminCard(story));
  return sections;
}

function versionsTable(story) {
  return el("table", { id: "versions" }, el("thead", {}, el("tr", {}, ["version", "created", "tags", "headline", "base", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, story.versions_detail.map((v) => el("tr", {},
      el("td", {}, v.ref), el("td", {}, when(v.created)), el("td", {}, v.tags.map((t) => el("span", { class: "tag" }, t))),
      el("td", {}, v.headline ? `${v.headline.split} ${v.headline.metric} ${fmt(v.headline.value)}` : "—"),
      el("td", { class: "muted" }, v.base.name || ""),
      el("td", {}, el("a", { href: "#", class: "export", on: { click: (e) => { e.preventDefault(); download(story.name, v.version); } } }, "export .zip"))))));
}

async function download(name, version) {
  const response = await fetch(`/v1/registry/adapters/${encodeURIComponent(name)}/${version}/export`, { headers: headers() });
  if (!response.ok) return;
  const url = URL.createObjectURL(await response.blob());
  el("a", { href: url, download: `${name}-${version}.zip` }).click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function metricsCard(version) {
  const splits = Object.entries(version.metrics).filter(([split, values]) => values && typeof values === "object" && split !== "train");
  const scalar = (values) => Object.entries(values).filter(([, v]) => typeof v === "number");
  const keys = [...new Set(splits.flatMap(([, values]) => scalar(values).map(([k]) => k)))];
  if (!keys.length) return el("section", { class: "card" }, el("h3", {}, "Metrics"), el("p", { class: "muted" }, "no evaluation recorded for this version"));
  return el("section", { class: "card" }, el("h3", {}, `Metrics of ${version.ref}`),
    el("table", { id: "metrics" }, el("thead", {}, el("tr", {}, el("th", {}, "metric"), splits.map(([split]) => el("th", {}, split)))),
      el("tbody", {}, keys.map((k) => el("tr", {}, el("td", {}, k), splits.map(([, values]) => el("td", {}, fmt(values[k]))))))));
}

function historyTable(rows) {
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))].filter((c) => rows.every((row) => row[c] === null || typeof row[c] !== "object"));
  return el("table", {}, el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => el("td", {}, c === "when" || c === "ts" ? when(row[c]) : fmt(row[c])))))));
}

// Admin keys: load/unload on this server, and channel moves (a gated promotion, a rollback) on its registry.
function adminCard(story) {
  const status = el("span", { class: "muted", id: "admin-status" });
  const act = (path, body, reload = false) => post(path, body).then(() => { status.textContent = "done"; if (reload) route(); },
    (e) => { status.textContent = e.message; });
  const base = `/v1/adapters/${encodeURIComponent(story.name)}`;
  const channel = el("input", { id: "promote-channel", placeholder: "channel", value: (story.channels[0] || {}).channel || "prod", size: 8 });
  const version = el("select", { id: "promote-version" }, story.versions_detail.map((v) => el("option", { value: v.version }, `v${v.version}`)));
  const gate = el("input", { id: "promote-gate", placeholder: "gate, e.g. accuracy >= prod - 0.5 (optional)", size: 34 });
  return el("section", { class: "card", id: "admin" }, el("h3", {}, "Admin"),
    el("div", { class: "filters" },
      el("button", { id: "load", on: { click: () => act("/v1/load_lora_adapter", { lora_name: story.name }) } }, "Load"),
      el("button", { id: "unload", class: "secondary", on: { click: () => act("/v1/unload_lora_adapter", { lora_name: story.name }) } }, "Unload")),
    el("div", { class: "filters" }, channel, version, gate,
      el("button", { id: "promote", on: { click: () => act(`${base}/promote`, { channel: channel.value, version: Number(version.value), gate: gate.value || null }, true) } }, "Promote"),
      el("button", { id: "rollback", class: "secondary", on: { click: () => act(`${base}/rollback`, { channel: channel.value }, true) } }, "Roll back")),
    status);
}

function heatmap(confusion) {
  const peak = Math.max(1, ...confusion.matrix.flat());
  return el("table", { class: "heat", id: "confusion" }, el("thead", {}, el("tr", {}, el("th", {}, ""), confusion.labels.map((l) => el("th", {}, l)))),
    el("tbody", {}, confusion.matrix.map((row, i) => el("tr", {}, el("th", {}, confusion.labels[i]), row.map((count) => {
      const cell = el("td", {}, count);
      cell.style.background = `rgba(47, 111, 219, ${(count / peak * 0.85).toFixed(3)})`;
      if (count / peak > 0.5) cell.style.color = "#fff";
      return cell;
    })))));
}

// ---- charts (SVG polylines: a few dozen lines instead of a charting library) -------------------
function chart(series, { id, label, second } = {}) {
  const ns = "http://www.w3.org/2000/svg", width = 600, height = 140, pad = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  if (id) svg.id = id;
  const all = [...series, ...(second || [])];
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(0, ...ys), Math.max(...ys, 1e-9)];
  const point = ([x, y]) => `${pad + (x - x0) / Math.max(x1 - x0, 1e-9) * (width - 2 * pad)},${height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)}`;
  for (const [points, cls] of [[series, ""], [second || [], "second"]]) {
    if (!points.length) continue;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(point).join(" "));
    if (cls) line.setAttribute("class", cls);
    svg.append(line);
  }
  for (const [text, x, y] of [[fmt(y1), 2, pad - 8], [fmt(y0), 2, height - pad + 12], [label || "", width - 160, 12]]) {
    const node = document.createElementNS(ns, "text");
    node.setAttribute("x", x); node.setAttribute("y", y); node.textContent = text;
    svg.append(node);
  }
  return svg;
}
const lossChart = (curve) => chart(curve.filter((p) => p.loss !== undefined && p.split !== "validation").map((p) => [p.step, p.loss]),
  { id: "loss-chart", label: "train (blue) · validation (orange)", second: curve.filter((p) => p.split === "validation").map((p) => [p.step, p.loss]) });

// ---- playground -------------------------------------------------------------------------------
async function playgroundPage(params) {
  const [models, catalog] = await Promise.all([call("/v1/models"), call("/v1/registry/adapters?limit=200")]);
  const tasks = Object.fromEntries(catalog.data.map((a) => [a.name, a.task]));
  const ids = [...(state.me.routing ? ["auto"] : []), ...models.data.map((m) => m.id)];  // auto: the router chooses
  const chosen = (params.get("models") || ids.slice(0, 2).join(",")).split(",").filter(Boolean);
  const pickers = [0, 1, 2].map((i) => el("select", { id: `model-${i}` }, el("option", { value: "" }, i ? "(none)" : "choose…"),
    ids.map((id) => el("option", { value: id, selected: chosen[i] === id }, id))));
  const input = el("textarea", { id: "prompt", rows: 4, placeholder: "Type or paste an input…" }, params.get("text") || "");
  const maxTokens = el("input", { id: "max-tokens", type: "number", min: 1, max: 512, value: params.get("max_tokens") || 32 });
  const panes = el("div", { class: "grid", id: "answers" });
  const run = el("button", { id: "run", on: { click: () => {
    panes.replaceChildren();
    for (const model of pickers.map((p) => p.value).filter(Boolean)) {
      const pane = el("section", { class: "card answer-pane", "data-model": model }, el("h3", {}, model));
      panes.append(pane);
      ask(model, tasks[model.split("@")[0]] || "generation", input.value, Number(maxTokens.value), pane);
    }
  } } }, "Run");
  return [el("section", { class: "card" }, el("h2", {}, "Playground"),
    el("div", { class: "filters" }, pickers, el("label", {}, "max tokens ", maxTokens), run), input), panes];
}

async function ask(model, task, text, maxTokens, pane) {
  const started = performance.now();
  const status = el("p", { class: "muted stats" }, "…");
  const body = el("div", { class: "answer" });
  pane.append(body, status);
  try {
    if (task === "classification" || task === "sequence_classification") {
      const answer = (await post("/v1/classify", { model, input: text })).data[0];
      body.append(...answer.labels.map((label, i) => bar(label, answer.probs[i])));
      status.textContent = `${answer.label} · ${Math.round(performance.now() - started)} ms`;
    } else if (task === "token_classification") {
      const entities = (await post("/v1/tag", { model, input: text })).data[0].entities;
      body.append(...highlight(text, entities));
      status.textContent = `${entities.length} entities · ${Math.round(performance.now() - started)} ms`;
    } else {
      await streamCompletion(model, text, maxTokens, body, status, started);
    }
  } catch (error) {
    body.append(el("span", { class: "error" }, error.message));
    status.textContent = "";
  }
  pane.classList.add("done");
}

async function streamCompletion(model, text, maxTokens, body, status, started) {
  const response = await fetch("/v1/completions", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ model, prompt: text, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }) });
  if (!response.ok) throw new Error(((await response.json()).error || {}).message || `${response.status}`);
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "", answer = "", first = null, usage = null, servedBy = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).replace(/^data: ?/, "");
      buffer = buffer.slice(cut + 2);
      if (event === "[DONE]") continue;
      const chunk = JSON.parse(event);
      if (chunk.usage) usage = chunk.usage;
      if (chunk.model) servedBy = chunk.model;
      for (const choice of chunk.choices || []) {
        if (first === null) first = performance.now();
        answer += choice.text || "";
      }
      body.textContent = answer;
    }
  }
  const parsed = tryObject(answer);
  if (parsed) body.append(el("pre", { class: "parsed" }, JSON.stringify(parsed, null, 2)));
  const total = Math.round(performance.now() - started);
  status.textContent = `${model === "auto" && servedBy ? `served by ${servedBy} · ` : ""}${usage ? usage.completion_tokens : "?"} tokens · first token ${first ? Math.round(first - started) : "—"} ms · ${total} ms`;
  body.dataset.text = answer;
}

function tryObject(text) {
  try { const value = JSON.parse(text); return value && typeof value === "object" ? value : null; } catch { return null; }
}

function bar(label, prob) {
  const fill = el("div", { class: "fill" });
  fill.style.width = `${(prob * 100).toFixed(1)}%`;
  return el("div", { class: "bar" }, el("span", { class: "label" }, label), el("div", { class: "track" }, fill), el("span", {}, `${(prob * 100).toFixed(1)}%`));
}

function highlight(text, entities) {
  const nodes = [];
  let at = 0;
  for (const entity of [...entities].sort((a, b) => a.start - b.start)) {
    if (entity.start < at) continue;
    nodes.push(text.slice(at, entity.start), el("mark", {}, text.slice(entity.start, entity.end), el("small", {}, entity.label || entity.type)));
    at = entity.end;
  }
  nodes.push(text.slice(at));
  return nodes;
}

// ---- live view --------------------------------------------------------------------------------
function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+\d.eEinfNa]+)/);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) sums[match[1]] = (sums[match[1]] || 0) + value;
    const tier = (match[2] || "").match(/tier="([^"]+)"/);
    if (tier) sums[`${match[1]}{${tier[1]}}`] = (sums[`${match[1]}{${tier[1]}}`] || 0) + value;
  }
  return sums;
}

async function livePage() {
  const history = [], windowSize = 300;
  const stats = el("div", { class: "grid" });
  const charts = el("div", { class: "grid" });
  const resident = el("section", { class: "card", id: "resident" }, el("h3", {}, "Resident adapters"));
  const errors = el("section", { class: "card", id: "errors" }, el("h3", {}, "Recent errors"));
  const stat = (label, value, id) => el("section", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "stat", id }, value));
  async function tick() {
    const text = await call("/metrics");
    const m = parseMetrics(text), now = Date.now() / 1000;
    history.push({ t: now, tokens: m.adapterhub_generated_tokens_total || 0, requests: m.adapterhub_requests_total || 0,
      latencySum: m.adapterhub_request_seconds_sum || 0, latencyCount: m.adapterhub_request_seconds_count || 0,
      queue: m.adapterhub_queue_depth || 0, running: m.adapterhub_running_rows || 0 });
    if (history.length > windowSize) history.shift();
    const rate = (field) => history.slice(1).map((h, i) => [h.t - now, (h[field] - history[i][field]) / Math.max(h.t - history[i].t, 1e-3)]);
    const latency = history.slice(1).map((h, i) => [h.t - now, (h.latencyCount - history[i].latencyCount) ? (h.latencySum - history[i].latencySum) / (h.latencyCount - history[i].latencyCount) * 1000 : 0]);
    const last = history[history.length - 1];
    stats.replaceChildren(stat("tokens generated", fmt(last.tokens), "stat-tokens"), stat("requests", fmt(last.requests), "stat-requests"),
      stat("queue depth", fmt(last.queue), "stat-queue"), stat("running rows", fmt(last.running), "stat-running"),
      stat("resident adapters", fmt(m.adapterhub_resident_adapters || 0), "stat-resident"));
    if (history.length > 1) charts.replaceChildren(
      el("section", { class: "card" }, el("h3", {}, "tokens/s"), chart(rate("tokens"), { id: "chart-tokens" })),
      el("section", { class: "card" }, el("h3", {}, "queue depth (blue) · running rows (orange)"), chart(history.map((h) => [h.t - now, h.queue]), { id: "chart-queue", second: history.map((h) => [h.t - now, h.running]) })),
      el("section", { class: "card" }, el("h3", {}, "mean latency, ms"), chart(latency, { id: "chart-latency" })));
    await residentTable(resident);
    if (state.me.admin) {
      const recent = (await call("/v1/console/errors")).data.slice(0, 10);
      errors.replaceChildren(el("h3", {}, "Recent errors"), recent.length ? historyTable(recent) : el("p", { class: "muted" }, "none"));
    }
  }
  await tick();
  return { nodes: [el("h2", {}, "Live"), stats, charts, resident, state.me.admin ? errors : ""], tick };
}

// Admin keys see every tier (GET /v1/adapters: tier, bytes, pins, hits; each tier's use of its budget);
// other keys see the adapters resident on the device, from /v1/models.
async function residentTable(section) {
  let rows, tiers = null;
  if (state.me.admin) {
    const payload = await call("/v1/adapters");
    rows = payload.data;
    tiers = payload.tiers;
  } else {
    rows = (await call("/v1/models")).data.filter((m) => m.resident && m.parent).map((m) => ({ name: m.id, method: m.method, task: m.task }));
  }
  const mb = (bytes) => bytes === null || bytes === undefined ? "—" : `${(bytes / 2 ** 20).toFixed(1)} MB`;
  const usage = tiers ? el("table", { id: "tiers" }, el("thead", {}, el("tr", {}, ["tier", "adapters", "max", "memory", "budget"].map((h) => el("th", {}, h)))),
    el("tbody", {}, Object.entries(tiers).map(([tier, u]) => el("tr", {}, el("td", {}, tier), el("td", {}, fmt(u.adapters)),
      el("td", {}, u.max_resident ?? "—"), el("td", {}, mb(u.bytes)), el("td", {}, mb(u.budget_bytes)))))) : "";
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((c) => rows.every((r) => typeof r[c] !== "object"));
  section.replaceChildren(el("h3", {}, `Resident adapters (${rows.length})`), usage, rows.length
    ? el("table", {}, el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))), el("tbody", {}, rows.map((r) => el("tr", {}, columns.map((c) => el("td", {}, c === "last_used" ? when(r[c]) : c === "bytes" ? mb(r[c]) : fmt(r[c])))))))
    : el("p", { class: "muted" }, "none"));
}

// ---- start ------------------------------------------------------------------------------------
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem("adapterhub-key");
    state.key = ""; state.me = null; route();
  });
  route();
});
