// The Tumbler console: one page over the public REST API (/v1), with the same bearer token as
// any client. Everything a sandbox or a run produced is shown as text (textContent), never as
// HTML: what comes out of a sandbox is hostile.
"use strict";

const TOKEN_KEY = "tumbler.token";
const app = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  stream: null,           // the open event stream of the current view
  view: null,             // {name, cleanup}
  sandboxes: [], pools: [], nodes: [],
};

// -- DOM ---------------------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);   // CSSOM: allowed by the page's CSP
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");

function toast(message, bad = false) {
  const box = $("#toast");
  box.textContent = message;
  box.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, bad ? 6000 : 2500);
}

// -- formatting --------------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function age(seconds) {
  if (seconds < 60) return Math.max(0, Math.floor(seconds)) + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + Math.floor(seconds % 3600 / 60) + "m";
  return Math.floor(seconds / 86400) + "d" + Math.floor(seconds % 86400 / 3600) + "h";
}

const when = (unix) => new Date(unix * 1000).toLocaleString();
function num(x, digits = 3) {
  if (x === undefined || x === null) return "";
  const text = (+x).toFixed(digits);
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;   // 2.50 -> 2.5, 10 stays 10
}
const ANSI = /\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]|\r(?!\n)/g;
const plain = (text) => text.replace(ANSI, "");

function fromB64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// -- the API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, kind, message) { super(message); this.status = status; this.kind = kind; }
}

async function api(method, path, { json, body, raw, signal } = {}) {
  const headers = {};
  if (app.token) headers.Authorization = "Bearer " + app.token;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "unreachable", "the server does not answer: " + err.message);
  }
  if (!response.ok) {
    let kind = "http", message = response.status + " " + response.statusText;
    try { const e = (await response.json()).error; kind = e.kind; message = e.message; } catch (_) { /* not JSON */ }
    if (response.status === 401) showLogin(message);
    throw new ApiError(response.status, kind, message);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

const sb = (id) => "/v1/sandboxes/" + encodeURIComponent(id);
const sessionPath = (id, name) => sb(id) + "/sessions/" + encodeURIComponent(name);

// Server-sent events read through fetch (EventSource cannot send the Authorization header).
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
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(kind, JSON.parse(data));
    }
  }
}

// The view's live feed: GET /v1/events, reconnecting with backoff until closed.
function openStream(params, handlers) {
  const controller = new AbortController();
  const query = new URLSearchParams(params).toString();
  const live = $("#live");
  let delay = 500;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const response = await api("GET", "/v1/events" + (query ? "?" + query : ""),
                                   { raw: true, signal: controller.signal });
        live.textContent = "live"; live.className = "live on"; delay = 500;
        if (handlers.open) handlers.open();    // a new stream sends everything again
        await readEvents(response, (kind, data) => handlers[kind] && handlers[kind](data));
      } catch (err) {
        if (controller.signal.aborted) return;
        if (err.status === 401 || err.status === 404) { live.textContent = "stopped"; live.className = "live"; return; }
      }
      live.textContent = "reconnecting"; live.className = "live off";
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return { close: () => controller.abort() };
}

function closeStream() {
  if (app.stream) app.stream.close();
  app.stream = null;
}

// -- login -------------------------------------------------------------------------------------

function showLogin(message) {
  closeStream();
  $("#login").hidden = false;
  $("#login-msg").textContent = app.token ? "Refused: " + message : "Enter a token this server accepts.";
  $("#token").focus();
}

function setupLogin() {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    app.token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, app.token);
    $("#token").value = "";
    $("#login").hidden = true;
    $("#signout").hidden = !app.token;
    route();
  });
  $("#signout").addEventListener("click", () => {
    app.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    $("#signout").hidden = true;
    showLogin("");
  });
  $("#signout").hidden = !app.token;
}

// -- small widgets -----------------------------------------------------------------------------

function button(label, onclick, cls) {
  return h("button", { type: "button", class: cls, onclick: async (ev) => {
    const btn = ev.currentTarget;
    btn.disabled = true;
    try { await onclick(ev); } catch (err) { if (err.name !== "AbortError") toast(err.message, true); }
    finally { btn.disabled = false; }
  } }, label);
}

function table(columns, rows, { empty = "nothing here", id } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", {}, c)));
  const body = rows.length ? rows : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("div", { class: "table-wrap" }, h("table", { id }, h("thead", {}, head), h("tbody", {}, body)));
}

function badge(state) { return h("span", { class: "badge " + state }, state); }

// A meter: `used` of `limit`; near full is hot, unless full is good (passed trials).
function bar(used, limit, label, { good = false } = {}) {
  const pct = limit > 0 ? Math.min(100, 100 * used / limit) : 0;
  const tone = good ? " good" : pct > 85 ? " hot" : "";
  return h("div", { class: "meter" }, h("div", { class: "meter-fill" + tone, style: { width: pct + "%" } }),
           h("span", {}, label));
}

function section(title, ...kids) { return h("section", { class: "card" }, h("h3", {}, title), ...kids); }

function tabs(names, render) {
  const bodies = {};
  const strip = h("div", { class: "tabs", role: "tablist" });
  const holder = h("div", { class: "tab-body" });
  const show = (name) => {
    for (const b of strip.children) b.classList.toggle("active", b.dataset.tab === name);
    holder.replaceChildren(bodies[name] || (bodies[name] = render(name)));
  };
  for (const name of names) strip.append(h("button", { type: "button", "data-tab": name, onclick: () => show(name) }, name));
  show(names[0]);
  return h("div", {}, strip, holder);
}

// A line chart in SVG: series of [x, y] points, axes with a few ticks.
function lineChart(title, series, { height = 180, yMin, yMax, xLabel = "step" } = {}) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 520, H = height, L = 44, R = 10, T = 10, B = 26;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const el = (tag, attrs) => { const n = document.createElementNS(NS, tag); for (const k in attrs) n.setAttribute(k, attrs[k]); svg.append(n); return n; };
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  let x0 = Math.min(...xs, 0), x1 = Math.max(...xs, 1);
  let y0 = yMin ?? Math.min(...ys, 0), y1 = yMax ?? Math.max(...ys, y0);
  if (y1 - y0 < 1e-6) y1 = y0 + 1;
  const sx = (x) => L + (W - L - R) * (x - x0) / (x1 - x0 || 1);
  const sy = (y) => H - B - (H - T - B) * (y - y0) / (y1 - y0);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    el("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" });
    el("text", { x: L - 4, y: sy(y) + 4, class: "tick", "text-anchor": "end" }).textContent = num(y, 2);
  }
  for (let i = 0; i <= 4; i++) {
    const x = x0 + (x1 - x0) * i / 4;
    el("text", { x: sx(x), y: H - 8, class: "tick", "text-anchor": "middle" }).textContent = num(x, x1 - x0 >= 8 ? 0 : 1);
  }
  series.forEach((s, i) => {
    const good = s.points.filter((p) => Number.isFinite(p[1]));
    if (!good.length) return;
    const cls = "series s" + (s.color ?? i);
    if (good.length > 1 && !s.dotsOnly) el("polyline", { points: good.map((p) => sx(p[0]) + "," + sy(p[1])).join(" "), class: cls });
    if (s.dots || good.length === 1 || s.dotsOnly) for (const p of good) el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3.5, class: cls + " dot" });
  });
  const legend = h("div", { class: "legend" }, series.map((s, i) => h("span", { class: "key s" + (s.color ?? i) }, s.name)));
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title, h("span", { class: "muted" }, " · by " + xLabel)), svg, legend);
}

// -- sandboxes ---------------------------------------------------------------------------------

const filters = { label: "", state: "", image: "", node: "" };

// The node each sandbox is on, from the nodes' sandbox_ids (one node, or each node host).
function nodeOf(sandboxId) {
  for (const n of app.nodes) if ((n.sandbox_ids || []).includes(sandboxId)) return n.name;
  return "";
}

function sandboxMatches(s) {
  if (filters.state && s.state !== filters.state) return false;
  if (filters.image && s.image !== filters.image) return false;
  if (filters.node && nodeOf(s.id) !== filters.node) return false;
  for (const want of filters.label.split(/[\s,]+/).filter(Boolean)) {
    const [k, ...rest] = want.split("=");
    const v = rest.join("=");
    if (!(k in s.labels) || (rest.length && s.labels[k] !== v)) return false;
  }
  return true;
}

async function lifecycle(id, action) {
  if (action === "remove") {
    if (!confirm("Remove sandbox " + id + " and everything in it?")) return;
    await api("DELETE", sb(id));
    toast("removed " + id);
    if (location.hash.startsWith("#/sandboxes/")) location.hash = "#/sandboxes";
    return;
  }
  await api("POST", sb(id) + "/" + action);
  toast(action + " " + id + ": done");
}

function actions(s) {
  return h("span", { class: "actions" },
    button("reset", () => lifecycle(s.id, "reset")),
    s.state === "running" ? button("stop", () => lifecycle(s.id, "stop")) : button("start", () => lifecycle(s.id, "start")),
    button("remove", () => lifecycle(s.id, "remove"), "danger"));
}

function sandboxRow(s) {
  const lim = s.spec.limits || {};
  const node = nodeOf(s.id);
  return h("tr", { "data-id": s.id },
    h("td", {}, h("a", { href: "#/sandboxes/" + encodeURIComponent(s.id), class: "mono" }, s.id)),
    h("td", {}, s.image), h("td", {}, badge(s.state), s.error ? h("div", { class: "err small" }, s.error) : null),
    h("td", { title: when(s.created) }, age(Date.now() / 1000 - s.created)),
    h("td", {}, num(lim.cpus, 2)), h("td", {}, bytes(lim.memory)), h("td", {}, bytes(lim.disk)),
    h("td", {}, node),
    h("td", {}, Object.entries(s.labels).map(([k, v]) => h("span", { class: "chip" }, k + "=" + v))),
    h("td", {}, actions(s)));
}

// A <select> of "any" and `values`, kept current by `update(values)` without losing the choice.
function selectOf(id, label, current, onchange) {
  const select = h("select", { id, onchange: (ev) => onchange(ev.target.value) }, h("option", { value: "" }, "any"));
  const update = (values) => {
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join("\n") === values.join("\n")) return;
    const chosen = select.value || current;
    select.replaceChildren(h("option", { value: "" }, "any"), ...values.map((v) => h("option", { value: v }, v)));
    select.value = values.includes(chosen) ? chosen : "";
  };
  return { node: h("label", {}, label + " ", select), update };
}

function viewSandboxes() {
  const holder = h("div");
  const count = h("span", { class: "muted" });
  const redraw = () => draw();
  const label = h("input", { id: "filter-label", placeholder: "key=value", value: filters.label,
    onchange: (ev) => { filters.label = ev.target.value; redraw(); } });
  const state = selectOf("filter-state", "state", filters.state, (v) => { filters.state = v; redraw(); });
  const image = selectOf("filter-image", "image", filters.image, (v) => { filters.image = v; redraw(); });
  const node = selectOf("filter-node", "node", filters.node, (v) => { filters.node = v; redraw(); });
  state.update(["created", "running", "stopped", "error"]);
  main().replaceChildren(h("div", { class: "title" }, h("h2", {}, "Sandboxes"), count),
    h("div", { class: "filters" }, h("label", {}, "label ", label), state.node, image.node, node.node), holder);
  const draw = () => {
    image.update([...new Set(app.sandboxes.map((s) => s.image))].sort());
    node.update(app.nodes.map((n) => n.name));
    const shown = app.sandboxes.filter(sandboxMatches).sort((a, b) => b.created - a.created);
    count.textContent = shown.length + " of " + app.sandboxes.length;
    holder.replaceChildren(table(["id", "image", "state", "age", "cpus", "memory", "disk", "node", "labels", ""],
                                 shown.map(sandboxRow), { empty: "no sandboxes match", id: "sandbox-table" }));
  };
  draw();
  const stream = openStream({}, {
    sandboxes: (d) => { app.sandboxes = d.sandboxes; draw(); },
    nodes: (d) => {
      const placed = (nodes) => JSON.stringify(nodes.map((n) => [n.name, n.sandbox_ids]));
      const moved = placed(d.nodes) !== placed(app.nodes);
      app.nodes = d.nodes;
      if (moved) draw();      // not on every load sample: only when sandboxes change node
    },
  });
  const ages = setInterval(draw, 10000);   // ages move on while nothing else changes
  app.stream = { close: () => { stream.close(); clearInterval(ages); } };
}

function viewSandbox(id) {
  const header = h("div", { class: "title" });
  const stats = h("div", { class: "stats" }, h("span", { class: "muted" }, "waiting for stats…"));
  const history = { t: [], mem: [], cpu: [] };
  const live = { sessions: [], processes: [], record: null, onSessions: null, onProcesses: null, cleanup: [] };
  const body = tabs(["Terminal", "Console", "Sessions", "Processes", "Files"], (name) => ({
    Terminal: () => terminalPanel(id, live),
    Console: () => consolePanel(id, live), Sessions: () => sessionsPanel(id, live),
    Processes: () => processesPanel(id, live), Files: () => filesPanel(id, live),
  })[name]());
  main().replaceChildren(header, section("Live stats", stats), body);
  let prev = null;
  const drawHeader = (s) => {
    const snap = h("input", { id: "snapshot-name", placeholder: "new image name", size: 16 });
    header.replaceChildren(h("h2", { class: "mono" }, id), badge(s.state), h("span", { class: "muted" }, s.image),
      ...Object.entries(s.labels).map(([k, v]) => h("span", { class: "chip" }, k + "=" + v)),
      h("span", { class: "grow" }), actions(s),
      h("span", { class: "actions" }, snap, button("snapshot", async () => {
        if (!snap.value.trim()) throw new Error("name the new image first");
        const out = await api("POST", sb(id) + "/snapshot", { json: { image: snap.value.trim() } });
        toast("saved as image " + out.image);
      })));
  };
  const stream = openStream({ sandbox: id }, {
    sandboxes: (d) => {
      app.sandboxes = d.sandboxes;
      const s = d.sandboxes.find((x) => x.id === id);
      if (!s) { header.replaceChildren(h("h2", { class: "mono" }, id), h("span", { class: "err" }, "removed")); return; }
      if (!live.record || live.record.state !== s.state || JSON.stringify(live.record.labels) !== JSON.stringify(s.labels)) drawHeader(s);
      live.record = s;
    },
    stats: (d) => {
      if (d.error) { stats.replaceChildren(h("span", { class: "muted" }, d.error.message)); prev = null; return; }
      const t = Date.now() / 1000;
      const cpu = prev ? Math.max(0, 100 * (d.cpu_seconds - prev.cpu_seconds) / (t - prev.t)) : 0;
      prev = { t, cpu_seconds: d.cpu_seconds };
      history.t.push(t); history.mem.push(d.memory_bytes); history.cpu.push(cpu);
      for (const k of ["t", "mem", "cpu"]) if (history[k].length > 120) history[k].shift();
      const t0 = history.t[0];
      stats.replaceChildren(
        h("div", { class: "stat-row" },
          h("div", {}, h("div", { class: "label" }, "memory"), bar(d.memory_bytes, d.memory_limit_bytes, bytes(d.memory_bytes) + " / " + bytes(d.memory_limit_bytes))),
          h("div", {}, h("div", { class: "label" }, "cpu"), bar(cpu, 100 * (live.record?.spec.limits.cpus || 1), num(cpu, 1) + "% · " + num(d.cpu_seconds, 2) + " s in all")),
          h("div", {}, h("div", { class: "label" }, "pids"), bar(d.pids, d.pids_limit, d.pids + " / " + d.pids_limit))),
        h("div", { class: "charts" },
          lineChart("memory (MiB)", [{ name: "memory", points: history.t.map((x, i) => [x - t0, history.mem[i] / 1048576]) }], { height: 120, xLabel: "second" }),
          lineChart("cpu (%)", [{ name: "cpu", color: 1, points: history.t.map((x, i) => [x - t0, history.cpu[i]]) }], { height: 120, xLabel: "second" })));
    },
    sessions: (d) => { live.sessions = d.sessions || []; live.onSessions && live.onSessions(); },
    processes: (d) => { live.processes = d.processes || []; live.onProcesses && live.onProcesses(); },
  });
  app.stream = { close: () => { stream.close(); for (const fn of live.cleanup) fn(); } };
}

function toB64(bytes) {
  let raw = "";
  for (let i = 0; i < bytes.length; i += 0x8000) raw += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(raw);
}

const TERMINAL_WAIT_S = 20;    // seconds one look at the terminal's output waits for some

// A live terminal: bash on a PTY in the sandbox (the agent's started processes, `job.*` ops
// through POST /v1/sandboxes/{id}/op), drawn by xterm.js. Output is read by long polls;
// keystrokes are sent in order, those typed while one send is in flight go together.
function terminalPanel(id, live) {
  const box = h("div", { class: "terminal-box", id: "terminal" });
  const status = h("span", { class: "muted", id: "terminal-status" }, "starting");
  const term = new Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000,
    fontFamily: getComputedStyle(document.body).getPropertyValue("--mono") || "monospace",
    theme: { background: "#0f1420" } });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  let pid = null, ended = false, pending = "", sending = false;
  const op = (name, args, body, timeout = 30) => api("POST", sb(id) + "/op",
    { json: { op: name, args, body_b64: body ? toB64(body) : "", timeout_s: timeout } });
  const send = async () => {
    if (sending || !pending || pid === null) return;
    sending = true;
    const data = pending;
    pending = "";
    try { await op("job.input", { pid }, new TextEncoder().encode(data)); }
    catch (err) { if (!ended) toast(err.message, true); }
    finally { sending = false; send(); }
  };
  term.onData((data) => { pending += data; send(); });
  term.onResize(({ rows, cols }) => { if (pid !== null && !ended) op("job.resize", { pid, rows, cols }).catch(() => {}); });
  const follow = async () => {
    let after = 0;
    while (!ended) {
      const reply = await op("job.events", { pid, after, wait: TERMINAL_WAIT_S }, null, TERMINAL_WAIT_S + 30);
      if (reply.body_b64) term.write(fromB64(reply.body_b64));
      after = reply.result.next;
      if (reply.result.end) {
        ended = true;
        status.textContent = "exited (" + reply.result.end.status + ")";
        term.write("\r\n[the shell exited: reopen the tab to start another]\r\n");
      }
    }
  };
  const start = async () => {
    term.open(box);
    fit.fit();
    const reply = await op("job.start", { argv: ["/bin/bash", "-l"], pty: { rows: term.rows, cols: term.cols },
      env: { TERM: "xterm-256color" }, tag: "console-terminal-" + Math.random().toString(36).slice(2) });
    pid = reply.result.pid;
    status.textContent = "bash, pid " + pid + " · " + term.cols + "×" + term.rows;
    term.focus();
    send();
    follow().catch((err) => { if (!ended) { status.textContent = err.message; ended = true; } });
  };
  const refit = () => { if (box.isConnected) fit.fit(); };
  window.addEventListener("resize", refit);
  live.cleanup.push(() => {
    window.removeEventListener("resize", refit);
    if (pid !== null && !ended) op("job.signal", { pid, signal: 1 }).catch(() => {});   // HUP, as a closed terminal
    ended = true;
    term.dispose();
  });
  requestAnimationFrame(() => start().catch((err) => { status.textContent = err.message; }));
  return h("div", { class: "card" },
    h("div", { class: "toolbar" }, status, button("Ctrl-C", () => { pending += "\x03"; return send(); })),
    box, h("p", { class: "muted small" }, "A real terminal: bash on a PTY in the sandbox, for full-screen programs too. Leaving the page hangs it up (SIGHUP)."));
}

// A line-based console over the sessions API: each line is a command, streamed as it runs
// (POST .../run/stream); while one runs, a line is typed to it as input (.../input).
function consolePanel(id, live) {
  const out = h("pre", { id: "console-out", class: "terminal", tabindex: 0 });
  const input = h("input", { id: "console-in", class: "mono", placeholder: "a bash command, then Enter", autocomplete: "off", spellcheck: "false" });
  const pick = h("select", { id: "console-session" }, h("option", { value: "default" }, "default session"));
  const status = h("span", { class: "muted", id: "console-status" }, "idle");
  let running = null;          // AbortController of the command in flight
  const sessionName = () => pick.value;
  const write = (text, cls) => {
    const span = h("span", { class: cls }, text);
    out.append(span);
    while (out.childNodes.length > 4000) out.firstChild.remove();
    out.scrollTop = out.scrollHeight;
  };
  const refreshPick = () => {
    const names = live.sessions.map((s) => s.name).filter((n) => n !== "default");
    const have = [...pick.options].map((o) => o.value);
    for (const n of names) if (!have.includes(n)) pick.append(h("option", { value: n }, n));
  };
  live.onSessions = refreshPick;
  refreshPick();
  const run = async (command) => {
    const name = sessionName();
    const path = name === "default" ? sb(id) + "/run/stream" : sessionPath(id, name) + "/run/stream";
    running = new AbortController();
    status.textContent = "running";
    write("$ " + command + "\n", "cmd");
    const decoder = new TextDecoder();
    try {
      const response = await api("POST", path, { json: { command, timeout: 3600, text: false }, raw: true, signal: running.signal });
      await readEvents(response, (kind, data) => {
        if (kind === "output") write(plain(decoder.decode(fromB64(data.data_b64), { stream: true })));
        else if (kind === "result") {
          write(plain(decoder.decode()));
          const how = data.timed_out ? "timed out" : data.exit_code === null ? "interrupted" : "exit " + data.exit_code;
          write("[" + how + " · " + num(data.duration_s, 3) + " s]\n", data.exit_code === 0 ? "meta" : "meta bad");
        } else if (kind === "error") write("[" + data.error.message + "]\n", "meta bad");
      });
    } catch (err) {
      if (err.name !== "AbortError") write("[" + err.message + "]\n", "meta bad");
    } finally {
      running = null;
      status.textContent = "idle";
    }
  };
  input.addEventListener("keydown", async (ev) => {
    if (ev.key === "c" && ev.ctrlKey && running) { ev.preventDefault(); interrupt(); return; }
    if (ev.key !== "Enter") return;
    const line = input.value;
    input.value = "";
    if (running) {
      write(line + "\n", "typed");
      try { await api("POST", sessionPath(id, sessionName()) + "/input", { json: { data: line + "\n" } }); }
      catch (err) { write("[" + err.message + "]\n", "meta bad"); }
    } else if (line.trim()) run(line);
  });
  const interrupt = async () => {
    if (!running) return;
    await api("POST", sessionPath(id, sessionName()) + "/interrupt");
  };
  return h("div", { class: "card console" },
    h("div", { class: "toolbar" }, pick, button("Ctrl-C", interrupt), button("clear", () => out.replaceChildren()), status),
    out, h("div", { class: "prompt" }, h("span", { class: "mono" }, "$"), input),
    h("p", { class: "muted small" }, "Line by line, no terminal emulation: each line runs as a command in the chosen bash session; while one runs, a line goes to it as input (for `read`). Ctrl-C interrupts."));
}

function sessionsPanel(id, live) {
  const list = h("div");
  const detail = h("div", { id: "session-history" });
  const newName = h("input", { id: "new-session", placeholder: "new session name", size: 16 });
  const showHistory = async (name) => {
    const data = await api("GET", sessionPath(id, name) + "/history");
    const decoder = new TextDecoder();
    detail.replaceChildren(h("h4", {}, "Recent output of " + name),
      ...(data.entries.length ? data.entries.slice().reverse().map((e) => h("div", { class: "history" },
        h("div", { class: "mono cmd" }, "$ " + e.command),
        h("div", { class: "muted small" }, when(e.started) + " · " + (e.timed_out ? "timed out" : e.exit_code === null ? "interrupted" : "exit " + e.exit_code) +
          " · " + num(e.duration_s, 3) + " s · " + bytes(e.output_size) + (e.output_size > 4096 ? " (last 4 KiB shown)" : "")),
        e.output_size ? h("pre", { class: "terminal small" }, plain(decoder.decode(fromB64(e.output_tail_b64)))) : null))
        : [h("p", { class: "muted" }, "no command has run in this session through the server since it started")]));
  };
  const draw = () => {
    const names = new Set(live.sessions.map((s) => s.name));
    names.add("default");
    list.replaceChildren(table(["session", "pid", "busy", "alive", ""], [...names].map((name) => {
      const s = live.sessions.find((x) => x.name === name) || { name, pid: null, busy: false, alive: false };
      return h("tr", {}, h("td", { class: "mono" }, name), h("td", {}, s.pid ?? "—"), h("td", {}, s.busy ? "yes" : "no"),
        h("td", {}, live.sessions.includes(s) ? (s.alive ? "yes" : "exited") : "not made yet"),
        h("td", {}, h("span", { class: "actions" }, button("recent output", () => showHistory(name)),
          live.sessions.includes(s) ? button("close", async () => { await api("DELETE", sessionPath(id, name)); toast("closed " + name); }) : null)));
    }), { id: "session-table" }));
  };
  live.onSessions = draw;
  draw();
  return h("div", { class: "card" },
    h("div", { class: "toolbar" }, newName, button("new session", async () => {
      await api("POST", sb(id) + "/sessions", { json: { name: newName.value.trim() } });
      toast("session " + newName.value.trim() + " made"); newName.value = "";
    })), list, detail);
}

function processesPanel(id, live) {
  const holder = h("div");
  const signal = (pid, sig) => api("POST", sb(id) + "/processes/" + pid + "/signal", { json: { signal: sig } })
    .then(() => toast("sent " + sig + " to " + pid));
  const draw = () => holder.replaceChildren(table(["pid", "ppid", "state", "uid", "rss", "command", ""],
    live.processes.map((p) => h("tr", {}, h("td", {}, p.pid), h("td", {}, p.ppid), h("td", {}, p.state), h("td", {}, p.uid),
      h("td", {}, bytes(p.rss_bytes)), h("td", { class: "mono cmdline" }, p.cmd),
      h("td", {}, p.pid === 1 ? "" : h("span", { class: "actions" }, button("TERM", () => signal(p.pid, "TERM")), button("KILL", () => signal(p.pid, "KILL"), "danger"))))),
    { id: "process-table", empty: "no processes (not running?)" }));
  live.onProcesses = draw;
  draw();
  return h("div", { class: "card" }, holder);
}

async function download(path, filename) {
  const response = await api("GET", path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

const VIEW_LIMIT = 256 * 1024;   // bytes of a file shown in the page

function filesPanel(id, live) {
  let dir = live.record?.spec.cwd || "/root";
  const where = h("input", { id: "file-path", class: "mono", size: 40 });
  const listing = h("div");
  const viewer = h("div", { id: "file-view" });
  const upload = h("input", { type: "file", id: "file-upload", multiple: true });
  const join = (a, b) => (a.endsWith("/") ? a : a + "/") + b;
  const parent = (p) => p.replace(/\/[^/]+\/?$/, "") || "/";
  const open = async (path) => {
    dir = path;
    where.value = path;
    const data = await api("GET", sb(id) + "/files/list?path=" + encodeURIComponent(path));
    const rows = data.entries.sort((a, b) => (a.type === "dir") === (b.type === "dir") ? a.path.localeCompare(b.path) : a.type === "dir" ? -1 : 1)
      .map((e) => {
        const name = e.path.split("/").pop();
        const link = e.type === "dir" ? h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); open(e.path).catch((err) => toast(err.message, true)); } }, name + "/")
          : h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); view(e).catch((err) => toast(err.message, true)); } }, name);
        return h("tr", {}, h("td", { class: "mono" }, link), h("td", {}, e.type), h("td", {}, e.type === "dir" ? "" : bytes(e.size)),
          h("td", { class: "mono" }, (e.mode & 0o7777).toString(8)), h("td", {}, when(e.mtime)),
          h("td", {}, e.type === "file" ? button("download", () => download(sb(id) + "/files/content?path=" + encodeURIComponent(e.path), name))
            : e.type === "dir" ? button("tar", () => download(sb(id) + "/files/tar?path=" + encodeURIComponent(e.path), name + ".tar")) : ""));
      });
    listing.replaceChildren(table(["name", "type", "size", "mode", "modified", ""], rows, { id: "file-table", empty: "empty directory" }));
  };
  const view = async (entry) => {
    const response = await api("GET", sb(id) + "/files/content?length=" + VIEW_LIMIT + "&path=" + encodeURIComponent(entry.path), { raw: true });
    const data = new Uint8Array(await response.arrayBuffer());
    const binary = data.includes(0);
    viewer.replaceChildren(h("h4", { class: "mono" }, entry.path),
      h("p", { class: "muted small" }, bytes(entry.size) + (entry.size > VIEW_LIMIT ? ", first " + bytes(VIEW_LIMIT) + " shown" : "")),
      binary ? h("p", { class: "muted" }, "binary file: download it to look inside")
             : h("pre", { class: "terminal", id: "file-content" }, new TextDecoder().decode(data)));
  };
  upload.addEventListener("change", async () => {
    try {
      for (const file of upload.files) {
        await api("PUT", sb(id) + "/files/content?path=" + encodeURIComponent(join(dir, file.name)), { body: file });
        toast("uploaded " + file.name);
      }
      upload.value = "";
      await open(dir);
    } catch (err) { toast(err.message, true); }
  });
  where.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(where.value).catch((err) => toast(err.message, true)); });
  open(dir).catch((err) => listing.replaceChildren(h("p", { class: "err" }, err.message)));
  return h("div", { class: "card" },
    h("div", { class: "toolbar" }, button("up", () => open(parent(dir))), where, button("go", () => open(where.value)),
      button("refresh", () => open(dir)), h("label", { class: "upload" }, "upload ", upload)),
    listing, viewer);
}

// -- pools and nodes ---------------------------------------------------------------------------

function viewPools() {
  const holder = h("div");
  const name = h("input", { id: "pool-name", placeholder: "name", size: 12 });
  const size = h("input", { id: "pool-size", type: "number", min: 0, value: 2, size: 4 });
  const image = h("input", { id: "pool-image", placeholder: "image", value: "debian", size: 12 });
  const resize = (pool, n) => api("PUT", "/v1/pools/" + encodeURIComponent(pool.name),
    { json: { size: n, sandbox: poolSandbox(pool.spec) } }).then(() => toast("pool " + pool.name + " set to " + n));
  const draw = () => holder.replaceChildren(table(["pool", "image", "size", "ready", "starting", "handed out", "last error", "resize", ""],
    app.pools.map((p) => {
      const input = h("input", { type: "number", min: 0, value: p.size, class: "pool-size", size: 4 });
      return h("tr", { "data-pool": p.name }, h("td", { class: "mono" }, p.name), h("td", {}, p.image), h("td", {}, p.size),
        h("td", {}, bar(p.ready, p.size, p.ready + " / " + p.size)), h("td", {}, p.starting), h("td", {}, p.handed_out),
        h("td", { class: "err small" }, p.last_error || ""),
        h("td", {}, h("span", { class: "actions" }, input, button("resize", () => resize(p, parseInt(input.value, 10))))),
        h("td", {}, button("remove", async () => {
          if (!confirm("Remove pool " + p.name + " and the sandboxes waiting in it?")) return;
          await api("DELETE", "/v1/pools/" + encodeURIComponent(p.name)); toast("removed pool " + p.name);
        }, "danger")));
    }), { id: "pool-table", empty: "no warm pools (tumbler serve --pool NAME=SIZE, or make one here)" }));
  main().replaceChildren(h("div", { class: "title" }, h("h2", {}, "Warm pools")),
    h("div", { class: "filters" }, name, size, image, button("make pool", async () => {
      await api("PUT", "/v1/pools/" + encodeURIComponent(name.value.trim()),
        { json: { size: parseInt(size.value, 10), sandbox: { image: image.value.trim() || "debian" } } });
      toast("pool " + name.value.trim() + " made");
    })), holder);
  draw();
  app.stream = openStream({}, { pools: (d) => { app.pools = d.pools; draw(); } });
}

// A pool's spec (limits in bytes and cores) as the create request PUT /v1/pools takes.
function poolSandbox(spec) {
  const l = spec.limits || {};
  return { image: spec.image, env: spec.env, cwd: spec.cwd, hostname: spec.hostname, network: spec.network,
           limits: { memory: l.memory, cpus: l.cpus, pids: l.pids, nofile: l.nofile, disk: l.disk, inodes: l.inodes } };
}

function viewNodes() {
  const holder = h("div", { class: "grid" });
  main().replaceChildren(h("div", { class: "title" }, h("h2", {}, "Nodes"),
    h("span", { class: "muted" }, "the machines that run this server's sandboxes, what they admit and their load")), holder);
  const draw = () => holder.replaceChildren(...app.nodes.map((n) => section(n.name,
    h("p", {}, n.state ? h("span", { class: "badge " + ({ alive: "running", released: "stopped" }[n.state] || "error") }, n.state) : null,
      n.backend ? h("span", { class: "muted" }, " · " + n.backend) : null,
      n.address ? h("span", { class: "muted" }, " · " + n.address) : null,
      n.lost ? h("span", { class: "err" }, " · " + n.lost) : null,
      ...Object.entries(n.labels || {}).map(([k, v]) => h("span", { class: "chip" }, k + "=" + v))),
    h("div", { class: "stat-row" },
      h("div", {}, h("div", { class: "label" }, "host memory in use"), bar(n.memory_total_bytes - n.memory_available_bytes, n.memory_total_bytes,
        bytes(n.memory_total_bytes - n.memory_available_bytes) + " / " + bytes(n.memory_total_bytes))),
      n.load.length ? h("div", {}, h("div", { class: "label" }, "load (1 min) per core"),
        bar(n.load[0], n.cpus, n.load.map((x) => num(x, 2)).join(" · ") + " on " + n.cpus + " cores"))
        : h("div", {}, h("div", { class: "label" }, "cores"), h("div", { class: "value" }, n.cpus))),
    h("h4", {}, "admitted (limits of the sandboxes holding a place) / budget"),
    h("div", { class: "stat-row" },
      h("div", {}, h("div", { class: "label" }, "memory"), bar(n.admitted.memory_bytes, n.budget.memory_bytes, bytes(n.admitted.memory_bytes) + " / " + bytes(n.budget.memory_bytes))),
      h("div", {}, h("div", { class: "label" }, "cpus"), bar(n.admitted.cpus, n.budget.cpus, num(n.admitted.cpus, 2) + " / " + num(n.budget.cpus, 2))),
      h("div", {}, h("div", { class: "label" }, "pids"), bar(n.admitted.pids, n.budget.pids, n.admitted.pids + " / " + n.budget.pids))),
    h("p", {}, Object.entries(n.sandboxes).map(([state, count]) => h("span", { class: "chip" }, badge(state), " " + count)),
      Object.keys(n.sandboxes).length ? "" : h("span", { class: "muted" }, "no sandboxes")))));
  draw();
  app.stream = openStream({}, { nodes: (d) => { app.nodes = d.nodes; draw(); } });
}

// -- training runs -----------------------------------------------------------------------------

async function viewRuns() {
  const holder = h("div");
  main().replaceChildren(h("div", { class: "title" }, h("h2", {}, "Training runs")), holder);
  const draw = async () => {
    const data = await api("GET", "/v1/runs");
    const evalText = (evals) => evals.length ? evals.map((e) => num(e.success_rate, 2)).join(" → ") : "";
    holder.replaceChildren(h("p", { class: "muted" }, "run directories under " + data.runs_dir),
      table(["run", "last write", "steps", "reward", "success", "held-out success", "step s"], data.runs.map((r) =>
        h("tr", {}, h("td", {}, h("a", { href: "#/runs/" + encodeURIComponent(r.name), class: "mono" }, r.name)),
          h("td", {}, when(r.modified)), h("td", {}, r.steps), h("td", {}, num(r.last.reward_mean, 3)),
          h("td", {}, num(r.last.success_rate, 3)), h("td", {}, evalText(r.evals)), h("td", {}, num(r.last.step_s, 1)))),
        { id: "run-table", empty: "no runs yet (tumbler train CONFIG writes one; tumbler serve --runs-dir says where to look)" }));
  };
  await draw();
  const timer = setInterval(() => draw().catch(() => {}), 5000);
  app.stream = { close: () => clearInterval(timer) };
}

const PHASES = ["generation_s", "env_s", "update_s", "step_s"];

function viewRun(name) {
  const metrics = [];
  let summary = null;
  const charts = h("div", { class: "charts wide" });
  const head = h("div", { class: "title" }, h("h2", { class: "mono" }, name));
  const info = h("div", { class: "stat-row" });
  const episodes = h("div", { id: "episodes" });
  const stepPick = h("select", { id: "episode-step" });
  const config = h("pre", { class: "terminal small", id: "run-config" });
  main().replaceChildren(head, section("Progress", info), charts,
    section("Sample episodes", h("div", { class: "toolbar" }, "step ", stepPick,
      h("span", { class: "muted small" }, "assistant turns are the policy's own tokens, the ones trained on")), episodes),
    section("Config (config.yaml)", config));
  api("GET", "/v1/runs/" + encodeURIComponent(name) + "/config").then((d) => { config.textContent = d.config_yaml; }).catch((e) => toast(e.message, true));
  const series = (key) => metrics.map((m) => [m.step, m[key]]);
  const drawCharts = () => {
    const evals = summary ? summary.evals : [];
    charts.replaceChildren(
      lineChart("reward and success", [
        { name: "train reward (mean)", points: series("reward_mean") },
        { name: "train success", points: series("success_rate"), color: 1 },
        { name: "held-out success", points: evals.map((e) => [e.step, e.success_rate]), color: 2, dots: true }]),
      lineChart("episode length (turns)", [{ name: "turns (mean)", points: series("turns_mean"), color: 3 }]),
      lineChart("phase timings (s per step)", PHASES.map((k, i) => ({ name: k, points: series(k), color: i + 4 }))),
      lineChart("throughput", [{ name: "tokens/s", points: series("tokens_per_s"), color: 5 }]));
    const last = metrics[metrics.length - 1] || {};
    info.replaceChildren(...[["steps", metrics.length], ["reward", num(last.reward_mean, 3)], ["success", num(last.success_rate, 3)],
      ["held-out success", evals.map((e) => num(e.success_rate, 2)).join(" → ") || "—"], ["loss", num(last.loss, 4)],
      ["grad norm", num(last.grad_norm, 3)], ["tokens/s", num(last.tokens_per_s, 1)]]
      .map(([k, v]) => h("div", { class: "kv" }, h("div", { class: "label" }, k), h("div", { class: "value" }, v))));
  };
  const showEpisodes = async (step) => {
    const data = await api("GET", "/v1/runs/" + encodeURIComponent(name) + "/episodes/" + step);
    episodes.replaceChildren(...data.episodes.map((ep, i) => h("div", { class: "episode" },
      h("div", { class: "episode-head" }, "episode " + (i + 1), " · seed " + ep.seed, " · reward " + num(ep.reward, 3), " · ",
        ep.success ? h("span", { class: "badge running" }, "success") : h("span", { class: "badge error" }, "failure"),
        " · " + ep.turns + " turns", ep.error ? h("span", { class: "err" }, " · " + ep.error) : null),
      (ep.chat || []).map((turn) => h("div", { class: "turn " + turn.role + (turn.role === "assistant" ? " trained" : "") },
        h("span", { class: "role" }, turn.role === "assistant" ? "assistant · trained" : turn.role), h("div", { class: "content" }, String(turn.content)))))));
  };
  stepPick.addEventListener("change", () => showEpisodes(stepPick.value).catch((e) => toast(e.message, true)));
  const drawSteps = () => {
    const steps = summary ? summary.episode_steps : [];
    if (stepPick.options.length === steps.length) return;
    const chosen = stepPick.value;
    stepPick.replaceChildren(...steps.map((s) => h("option", { value: s }, s)));
    if (!steps.length) { episodes.replaceChildren(h("p", { class: "muted" }, "no rendered episodes yet")); return; }
    stepPick.value = chosen && steps.includes(+chosen) ? chosen : steps[steps.length - 1];
    if (stepPick.value !== chosen) showEpisodes(stepPick.value).catch((e) => toast(e.message, true));
  };
  drawCharts();
  app.stream = openStream({ run: name }, {
    open: () => { metrics.length = 0; },
    metrics: (d) => { metrics.push(...d.records); drawCharts(); },
    run: (d) => { if (d.error) { info.replaceChildren(h("span", { class: "err" }, d.error.message)); return; } summary = d; drawCharts(); drawSteps(); },
  });
}

// -- task runs ---------------------------------------------------------------------------------

// P(at least one of k trials passes), drawn from n of which c passed (the unbiased estimator).
function passAtK(n, c, k) {
  if (n - c < k) return 1;
  let fail = 1;
  for (let i = n - c + 1; i <= n; i++) fail *= 1 - k / i;
  return 1 - fail;
}

async function viewTaskRuns() {
  const holder = h("div");
  main().replaceChildren(h("div", { class: "title" }, h("h2", {}, "Task runs")), holder);
  const draw = async () => {
    const data = await api("GET", "/v1/task-runs");
    holder.replaceChildren(h("p", { class: "muted" }, "results folders (tumbler tasks run --out) under " + data.runs_dir),
      table(["run", "last write", "tasks", "trials", "passed", "resolved"], data.runs.map((r) =>
        h("tr", {}, h("td", {}, h("a", { href: "#/tasks/" + encodeURIComponent(r.name), class: "mono" }, r.name)),
          h("td", {}, when(r.modified)), h("td", {}, r.tasks), h("td", {}, r.trials), h("td", {}, r.passed),
          h("td", {}, r.trials ? Math.round(100 * r.passed / r.trials) + "%" : ""))),
        { id: "task-run-table", empty: "no task runs yet (tumbler tasks run SET --out runs/NAME writes one)" }));
  };
  await draw();
  const timer = setInterval(() => draw().catch(() => {}), 5000);
  app.stream = { close: () => clearInterval(timer) };
}

function viewTaskRun(name) {
  const results = [];
  const summary = h("div", { class: "stat-row" });
  const byTask = h("div");
  const trials = h("div");
  const log = h("div", { id: "trial-log" });
  main().replaceChildren(h("div", { class: "title" }, h("h2", { class: "mono" }, name)),
    section("Summary", summary), section("Tasks", byTask), section("Trials", trials, log));
  const showLog = async (r, which) => {
    const path = "/v1/task-runs/" + encodeURIComponent(name) + "/trials/" + encodeURIComponent(r.task_id) + "/" + r.trial + "/" + which;
    const data = await api("GET", path);
    log.replaceChildren(h("h4", { class: "mono" }, r.task_id + " · trial " + r.trial + " · " + which + " log"),
      h("p", { class: "muted small" }, bytes(data.size) + (data.truncated ? ", the last 1 MiB shown" : "")),
      h("pre", { class: "terminal", id: "trial-log-text" }, plain(data.text) || "(empty)"));
  };
  const showTrajectory = async (r) => {
    const path = "/v1/task-runs/" + encodeURIComponent(name) + "/trials/" + encodeURIComponent(r.task_id) + "/" + r.trial + "/trajectory";
    const data = await api("GET", path);
    log.replaceChildren(h("h4", { class: "mono" }, r.task_id + " · trial " + r.trial + " · trajectory"),
      ...(data.episodes.length ? data.episodes.map(episodeView) : [h("p", { class: "muted" }, "no model calls recorded")]));
  };
  const draw = () => {
    const tasks = {};
    for (const r of results) (tasks[r.task_id] = tasks[r.task_id] || []).push(r);
    const k = Math.max(1, ...Object.values(tasks).map((rs) => rs.length));
    const ids = Object.keys(tasks).sort();
    const passed = results.filter((r) => r.passed).length;
    const errors = {};
    for (const r of results) if (r.error) errors[r.error] = (errors[r.error] || 0) + 1;
    const mean = (rs, key) => rs.length ? rs.reduce((a, r) => a + (r[key] || 0), 0) / rs.length : 0;
    const atK = ids.length ? ids.reduce((a, id) => a + passAtK(tasks[id].length, tasks[id].filter((r) => r.passed).length, Math.min(k, tasks[id].length)), 0) / ids.length : 0;
    summary.replaceChildren(...[["tasks", ids.length], ["trials", results.length],
      ["resolved", results.length ? Math.round(100 * passed / results.length) + "%" : "—"], ["pass@" + k, num(atK, 2)],
      ["mean reward", num(mean(results, "reward"), 2)], ["s / trial", num(mean(results, "seconds"), 1)],
      ["errors", Object.entries(errors).map(([e, n]) => e + ": " + n).join(", ") || "none"]]
      .map(([key, v]) => h("div", { class: "kv" }, h("div", { class: "label" }, key), h("div", { class: "value" }, v))));
    byTask.replaceChildren(table(["task", "trials", "passed", "pass@" + k, "mean reward", "s / trial", "errors"], ids.map((id) => {
      const rs = tasks[id], c = rs.filter((r) => r.passed).length;
      return h("tr", { "data-task": id }, h("td", { class: "mono" }, id), h("td", {}, rs.length),
        h("td", {}, bar(c, rs.length, c + " / " + rs.length, { good: true })), h("td", {}, num(passAtK(rs.length, c, Math.min(k, rs.length)), 2)),
        h("td", {}, num(mean(rs, "reward"), 2)), h("td", {}, num(mean(rs, "seconds"), 1)),
        h("td", { class: "err small" }, [...new Set(rs.filter((r) => r.error).map((r) => r.error))].join(", ")));
    }), { id: "task-table", empty: "no trial has finished yet" }));
    trials.replaceChildren(table(["task", "trial", "verdict", "reward", "agent s", "verifier s", "started", "reason", "logs"],
      results.slice().sort((a, b) => a.task_id.localeCompare(b.task_id) || a.trial - b.trial).map((r) =>
        h("tr", { "data-trial": r.task_id + "/" + r.trial }, h("td", { class: "mono" }, r.task_id), h("td", {}, r.trial),
          h("td", {}, r.passed ? h("span", { class: "badge running" }, "passed") : h("span", { class: "badge error" }, r.error || "failed")),
          h("td", {}, num(r.reward, 2)), h("td", {}, num(r.agent_seconds, 1)), h("td", {}, num(r.verifier_seconds, 1)),
          h("td", {}, r.started ? when(r.started) : ""), h("td", { class: "small cmdline" }, r.reason || ""),
          h("td", {}, h("span", { class: "actions" }, button("agent", () => showLog(r, "agent")), button("verifier", () => showLog(r, "verifier")),
            button("trajectory", () => showTrajectory(r)))))),
      { id: "trial-table", empty: "no trial has finished yet" }));
  };
  draw();
  app.stream = openStream({ task_run: name }, {
    open: () => { results.length = 0; },
    results: (d) => { results.push(...d.records); draw(); },
  });
}

// What a message holds, as text: a string, content parts, or tool calls.
function messageText(message) {
  if (!message) return "";
  const content = message.content;
  let text = typeof content === "string" ? content
    : Array.isArray(content) ? content.map((part) => part.text ?? JSON.stringify(part)).join("\n")
    : content == null ? "" : JSON.stringify(content);
  for (const call of message.tool_calls || []) {
    const fn = call.function || {};
    text += (text ? "\n" : "") + "→ " + (fn.name || "tool") + "(" + (fn.arguments || "") + ")";
  }
  return text;
}

// One recorded episode of an agent program: each model call's newest input and its answer.
function episodeView(episode) {
  const turns = [];
  for (const [i, x] of (episode.exchanges || []).entries()) {
    const messages = (x.request || {}).messages || [];
    const last = messages[messages.length - 1];
    const answer = (((x.response || {}).choices || [])[0] || {}).message;
    if (last) turns.push(h("div", { class: "turn " + (last.role || "user") },
      h("span", { class: "role" }, "call " + (i + 1) + " · " + (last.role || "input") + " · " + messages.length + " messages"),
      h("div", { class: "content" }, messageText(last))));
    turns.push(h("div", { class: "turn assistant trained" },
      h("span", { class: "role" }, "model · " + (x.status || "no answer") + (x.latency_s != null ? " · " + num(x.latency_s, 2) + " s" : "")),
      h("div", { class: "content" }, answer ? messageText(answer) : JSON.stringify(x.response))));
  }
  return h("div", { class: "episode" },
    h("div", { class: "episode-head" }, "episode " + episode.episode_id + " · " + (episode.exchanges || []).length + " model calls · " +
      (episode.reason || "running") + (episode.exit_code != null ? " (exit " + episode.exit_code + ")" : "") +
      (episode.duration_s != null ? " · " + num(episode.duration_s, 1) + " s" : "")), ...turns);
}

// -- routing -----------------------------------------------------------------------------------

function route() {
  closeStream();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [view, arg] = [parts[0] || "sandboxes", parts[1]];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === view);
  const views = {
    sandboxes: () => (arg ? viewSandbox(arg) : viewSandboxes()),
    pools: viewPools, nodes: viewNodes,
    runs: () => (arg ? viewRun(arg) : viewRuns()),
    tasks: () => (arg ? viewTaskRun(arg) : viewTaskRuns()),
  };
  document.title = "Tumbler · " + (arg || view);
  Promise.resolve((views[view] || views.sandboxes)()).catch((err) => {
    if (err.status !== 401) main().replaceChildren(h("p", { class: "err" }, err.message));
  });
}

setupLogin();
window.addEventListener("hashchange", route);
route();
