// The BOSS dashboard: vanilla JS and SVG, no build step, no CDN.
// Every piece of text that comes from a study (names, configs, messages, logs) is set with
// textContent or as an SVG text node: nothing a user wrote is ever parsed as HTML.
"use strict";

const PHASE_COLOR = { warmup: "#4c72b0", boss: "#dd8452" };
const STATE_COLOR = { failed: "#c44e52", diverged: "#8c6d1f" };
const HOT = "#c0392b", EDGE = "#8a9099";
const PICK_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22", "#8c564b", "#393b79", "#637939"];
const SVGNS = "http://www.w3.org/2000/svg";
const PAGE_ROWS = 100;

// ---- small helpers -----------------------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
  return e;
}
// replaceChildren, skipping the null/false a conditional part leaves (the DOM would print "null")
function fill(node, ...kids) {
  node.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}
function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid) e.append(kid);
  return e;
}
function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  if (!isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}
function cfgText(c) { return Object.entries(c || {}).map(([k, v]) => `${k}=${fmt(v, 3)}`).join(" "); }
function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} d`;
}
function dur(s) { return s === null || s === undefined ? "" : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`; }
const enc = encodeURIComponent;

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  let body;
  try { body = await r.json(); } catch (e) { body = { error: `${path}: the server answered ${r.status} without JSON` }; }
  if (!r.ok || (body && body.error && !Array.isArray(body))) {
    const err = new Error(body && body.error ? body.error : `${path}: HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function showError(text) {
  const e = document.getElementById("error");
  if (text) { e.textContent = text; e.hidden = false; } else { e.textContent = ""; e.hidden = true; }
}
function setLive(on, text) {
  const e = document.getElementById("live");
  e.className = on ? "on" : "off";
  e.textContent = text;
}
function tip(evt, text) {
  const t = document.getElementById("tip");
  if (!text) { t.hidden = true; return; }
  t.textContent = text;
  t.hidden = false;
  t.style.left = `${evt.clientX + 12}px`;
  t.style.top = `${evt.clientY + 12}px`;
}

// ---- scales and axes ---------------------------------------------------------------------------

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}
function scale(lo, hi, a, b, log) {
  if (log) {
    const L = Math.log10(lo), H = Math.log10(hi);
    const f = (v) => a + ((Math.log10(v) - L) / (H - L || 1)) * (b - a);
    f.ticks = () => {
      const out = [];
      for (let e = Math.floor(L); e <= Math.ceil(H); e++) for (const m of [1, 2, 5]) {
        const v = m * Math.pow(10, e);
        if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
      }
      return out.length > 7 ? out.filter((v) => Math.abs(Math.log10(v) % 1) < 1e-9) : out;
    };
    f.invert = (p) => Math.pow(10, L + ((p - a) / (b - a)) * (H - L));
    return f;
  }
  const f = (v) => a + ((v - lo) / (hi - lo || 1)) * (b - a);
  f.ticks = (n) => niceTicks(lo, hi, n);
  f.invert = (p) => lo + ((p - a) / (b - a)) * (hi - lo);
  return f;
}
function extent(values, pad = 0.05) {
  const vs = values.filter((v) => v !== null && v !== undefined && isFinite(v));
  if (!vs.length) return [0, 1];
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (lo === hi) { lo -= Math.abs(lo) * 0.05 || 0.5; hi += Math.abs(hi) * 0.05 || 0.5; }
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}
// a frame: an svg with left/bottom axes; returns {svg, x, y, W, H, m}
function frame(width, height, xs, ys, opts = {}) {
  const m = { l: 56, r: 14, t: 10, b: 34 };
  const svg = sv("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: opts.cls || null });
  const x = opts.xcat ? null : scale(xs[0], xs[1], m.l, width - m.r, opts.xlog);
  const y = scale(ys[0], ys[1], height - m.b, m.t, opts.ylog);
  const g = sv("g", { class: "axis" });
  for (const v of (opts.yint ? y.ticks(5).filter(Number.isInteger) : y.ticks(5))) {
    g.append(sv("line", { x1: m.l, x2: width - m.r, y1: y(v), y2: y(v), class: "grid" }));
    g.append(sv("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", text: opts.yfmt ? opts.yfmt(v) : fmt(v, 3) }));
  }
  if (x) for (const v of (opts.xint ? x.ticks(6).filter(Number.isInteger) : x.ticks(6))) {
    g.append(sv("line", { x1: x(v), x2: x(v), y1: height - m.b, y2: height - m.b + 4 }));
    g.append(sv("text", { x: x(v), y: height - m.b + 16, "text-anchor": "middle", text: opts.xfmt ? opts.xfmt(v) : fmt(v, 3) }));
  }
  g.append(sv("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b }));
  g.append(sv("line", { x1: m.l, x2: m.l, y1: m.t, y2: height - m.b }));
  if (opts.xlabel) g.append(sv("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", text: opts.xlabel }));
  if (opts.ylabel) g.append(sv("text", { x: 12, y: (m.t + height - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(m.t + height - m.b) / 2})`, text: opts.ylabel }));
  svg.append(g);
  return { svg, x, y, W: width, H: height, m };
}
// many points as one path per colour (zero-length segments with round caps): cheap for 5,000 trials
function dots(svg, pts, color, r = 3.5, cls = null) {
  if (!pts.length) return;
  const d = pts.map(([px, py]) => `M${px.toFixed(1)} ${py.toFixed(1)}h0`).join("");
  svg.append(sv("path", { d, stroke: color, "stroke-width": r * 2, "stroke-linecap": "round", fill: "none", class: cls, opacity: 0.85 }));
}
// clicking or hovering a plot finds the nearest trial drawn there
function pickable(svg, pts, onPick, label) {
  const find = (evt) => {
    const b = svg.getBoundingClientRect();
    const sx = svg.viewBox.baseVal.width / b.width, sy = svg.viewBox.baseVal.height / b.height;
    const px = (evt.clientX - b.left) * sx, py = (evt.clientY - b.top) * sy;
    let best = null, bd = 100;
    for (const p of pts) { const d = (p[0] - px) ** 2 + (p[1] - py) ** 2; if (d < bd) { bd = d; best = p; } }
    return best;
  };
  svg.addEventListener("mousemove", (evt) => { const p = find(evt); tip(evt, p ? label(p[2]) : null); svg.style.cursor = p ? "pointer" : ""; });
  svg.addEventListener("mouseleave", (evt) => tip(evt, null));
  svg.addEventListener("click", (evt) => { const p = find(evt); if (p) { tip(evt, null); onPick(p[2]); } });
}

// ---- routing and live updates ------------------------------------------------------------------

let current = null; // {stop(), kind}
let events = null;

function listen(params, onToken) {
  if (events) events.close();
  const q = new URLSearchParams(params).toString();
  events = new EventSource(`/api/events${q ? "?" + q : ""}`);
  let last = null;
  events.onopen = () => setLive(true, "live");
  events.onerror = () => setLive(false, "reconnecting…");
  events.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.error) { showError(msg.error); setLive(false, "source unreadable"); return; }
    setLive(true, "live");
    const prev = last;
    last = msg.token;
    // the first token is news too: what the page shows was read before the stream opened, and a
    // change in between would otherwise become the baseline and never be shown
    onToken(msg.token, prev);
  };
}

function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const parts = h.split("/").filter((p) => p.length);
  if (current && current.stop) current.stop();
  if (events) { events.close(); events = null; }
  showError(null);
  const main = document.getElementById("main");
  fill(main, );
  const crumbs = document.getElementById("crumbs");
  fill(crumbs, el("a", { href: "#/", text: "studies" }));
  if (parts[0] === "s" && parts[1]) {
    const sid = decodeURIComponent(parts[1]);
    crumbs.append("/ ", el("a", { href: `#/s/${enc(sid)}`, text: sid }));
    if (parts[2] === "t" && parts[3] !== undefined) {
      crumbs.append(` / trial ${parts[3]}`);
      current = trialPage(main, sid, parseInt(parts[3], 10));
    } else current = studyPage(main, sid);
  } else current = studiesPage(main);
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ---- the studies page ---------------------------------------------------------------------------

function studiesPage(main) {
  const box = el("div", { class: "card" });
  main.append(el("h1", { text: "Studies" }), box);
  let timer = null;
  let data = null;
  const render = () => {
    fill(box, );
    if (!data) return;
    box.append(el("p", { class: "muted small", text: `reading ${data.where}` }));
    if (data.empty) { box.append(el("p", { class: "message", id: "empty", text: data.empty })); return; }
    const cols = ["study", "where", "phase", "budget used", "best", "running", "queued", "failed", "diverged", "age"];
    const table = el("table", { id: "studies" }, el("thead", {}, el("tr", {}, cols.map((c) => el("th", { class: ["budget used", "best", "running", "queued", "failed", "diverged"].includes(c) ? "num" : null, text: c })))));
    const tbody = el("tbody");
    for (const s of data.studies) {
      if (s.error) {
        tbody.append(el("tr", { "data-id": s.id }, el("td", {}, el("a", { href: `#/s/${enc(s.id)}`, text: s.name })), el("td", { class: "muted", text: s.where }), el("td", { colspan: 8, class: "message bad", text: s.error })));
        continue;
      }
      const best = s.best ? `${fmt(s.best.value)} (#${s.best.i})` : "";
      tbody.append(el("tr", { "data-id": s.id },
        el("td", {}, el("a", { href: `#/s/${enc(s.id)}`, text: s.name })),
        el("td", { class: "muted small", text: s.where }),
        el("td", {}, el("span", { class: `badge ${s.phase}`, text: s.phase })),
        el("td", { class: "num", text: `${s.finished}/${s.budget ?? "?"}` }),
        el("td", { class: "num", text: best, title: s.metric }),
        el("td", { class: "num", text: s.running }), el("td", { class: "num", text: s.queued }),
        el("td", { class: "num", text: s.failed }), el("td", { class: "num", text: s.diverged }),
        el("td", { text: age(s.created) })));
    }
    table.append(tbody);
    box.append(table);
  };
  const load = async () => {
    try { data = await api("/api/studies"); showError(null); render(); }
    catch (e) { showError(e.message); fill(box, el("p", { class: "message bad", text: e.message })); }
  };
  load();
  listen({}, () => load());
  timer = setInterval(render, 30000); // the ages; no request
  return { stop() { clearInterval(timer); } };
}

// ---- the study page -----------------------------------------------------------------------------

function studyPage(main, sid) {
  const S = { sid, study: null, sort: { key: "i", dir: 1 }, filter: "", phase: "", state: "", page: 0,
              picked: null, metric: null, curves: {}, importanceDone: -1 };
  const head = el("div", { class: "card", id: "head" });
  const progress = el("div", { class: "card" }, el("h2", { text: "Best so far" }), el("div", { class: "grid2", id: "progress" }));
  const lineage = el("div", { class: "card" }, el("h2", { text: "Lineage: each checkpoint at its score" }),
    el("div", { class: "legend" }, el("span", {}, el("i", { style: `background:${PHASE_COLOR.warmup}` }), "warm-up"), el("span", {}, el("i", { style: `background:${PHASE_COLOR.boss}` }), "BOSS"),
      el("span", { text: "── student init   ┄┄ teacher" }), el("span", {}, el("i", { style: `background:${HOT}` }), "the best trial's ancestry"), el("span", { text: "click a node to open its trial" })),
    el("div", { class: "controls" }, el("label", { class: "small" }, "y axis ",
      el("select", { id: "lineage-y", onchange: (e) => { S.lineageY = e.target.value; renderLineage(); } },
        el("option", { value: "score", text: "score" }), el("option", { value: "rank", text: "rank (spreads a crowded top)" })))),
    el("div", { id: "lineage" }));
  const curves = el("div", { class: "card" }, el("h2", { text: "Per-epoch curves" }), el("div", { class: "controls", id: "curve-controls" }), el("div", { id: "curves" }));
  const trials = el("div", { class: "card" }, el("h2", { text: "Trials" }), el("div", { class: "controls", id: "trial-controls" }), el("div", { id: "trials-box" }));
  const params = el("div", { class: "card" }, el("h2", { text: "Hyperparameters" }),
    el("h3", { class: "small muted", text: "parallel coordinates (succeeded trials, coloured by score)" }), el("div", { id: "parallel" }),
    el("h3", { class: "small muted", text: "slice: the score against each hyperparameter" }), el("div", { class: "slices", id: "slices" }),
    el("h3", { class: "small muted", text: "importance" }), el("div", { id: "importance", class: "bars" }));
  main.append(head, progress, lineage, curves, trials, params);
  let stopped = false;

  const open = (i) => { location.hash = `#/s/${enc(sid)}/t/${i}`; };
  const maximize = () => S.study.goal === "maximize";

  function renderHead() {
    const s = S.study;
    const count = (st) => s.trials.filter((t) => t.state === st).length;
    const running = count("running"), queued = Math.min(s.queued || 0, running);
    const finished = count("succeeded") + count("failed") + count("diverged");
    const best = s.trials.find((t) => t.i === s.best);
    fill(head, 
      el("h1", {}, s.name, " ", el("span", { class: `badge ${s.phase}`, id: "phase", text: s.phase })),
      el("div", { class: "muted small", text: `${s.where} · ${s.plugin || ""} · ${s.epochs ?? "?"} epochs · top-K ${s.topK ?? "?"} · objective ${s.metric} (${s.goal})` }),
      el("div", { class: "stats" },
        el("div", {}, el("b", { id: "used", text: `${finished}/${s.budget.trials ?? "?"}` }), "trials finished"),
        el("div", {}, el("b", { text: s.budget.warmup ?? "?" }), "warm-up trials"),
        el("div", {}, el("b", { id: "running", text: running - queued }), "running"),
        el("div", {}, el("b", { text: queued }), "queued"),
        el("div", {}, el("b", { text: count("failed") }), "failed"),
        el("div", {}, el("b", { text: count("diverged") }), "diverged"),
        el("div", {}, el("b", { id: "best", text: best ? fmt(best.value) : "—" }), best ? el("a", { href: `#/s/${enc(sid)}/t/${best.i}`, text: `best: trial #${best.i}` }) : "best"),
        el("div", {}, el("b", { text: age(s.created) }), "age")));
    if (s.message) head.append(el("div", { class: `message ${s.phase === "Failed" ? "bad" : ""}`, text: s.message }));
    if (s.warning) head.append(el("div", { class: "message bad", id: "warning", text: s.warning }));
  }

  function boundary() { const t = S.study.trials.find((t) => t.phase === "boss"); return t ? t.i : null; }

  function renderProgress() {
    const box = document.getElementById("progress");
    fill(box, );
    const s = S.study, max = maximize();
    const done = s.trials.filter((t) => t.state === "succeeded" && t.value !== null);
    const ys = extent(done.map((t) => t.value));
    const ylabel = `${s.metric} (${max ? "higher" : "lower"} is better)`;
    // against trials
    const n = Math.max(1, s.trials.length);
    const f = frame(640, 260, [-0.5, n - 0.5], ys, { xlabel: "trial", ylabel, xint: true });
    const b = boundary();
    if (b !== null) {
      f.svg.append(sv("line", { x1: f.x(b - 0.5), x2: f.x(b - 0.5), y1: f.m.t, y2: f.H - f.m.b, stroke: "#999", "stroke-dasharray": "4 3" }));
      f.svg.append(sv("text", { x: f.x(b - 0.5) + 4, y: f.m.t + 10, text: "BOSS phase →" }));
      f.svg.append(sv("text", { x: f.x(b - 0.5) - 4, y: f.m.t + 10, "text-anchor": "end", text: "← warm-up" }));
    }
    const pts = [];
    for (const ph of ["warmup", "boss"]) {
      const p = done.filter((t) => t.phase === ph).map((t) => [f.x(t.i), f.y(t.value), t.i]);
      dots(f.svg, p, PHASE_COLOR[ph]);
      pts.push(...p);
    }
    for (const st of ["failed", "diverged"]) {
      const p = s.trials.filter((t) => t.state === st).map((t) => [f.x(t.i), f.H - f.m.b - 4, t.i]);
      dots(f.svg, p, STATE_COLOR[st], 2.5);
      pts.push(...p);
    }
    let bestv = null, d = "";
    for (const t of [...s.trials].sort((a, c) => a.i - c.i)) {
      if (t.state === "succeeded" && t.value !== null && (bestv === null || (max ? t.value > bestv : t.value < bestv))) {
        d += bestv === null ? `M${f.x(t.i)} ${f.y(t.value)}` : `H${f.x(t.i)}V${f.y(t.value)}`;
        bestv = t.value;
      }
    }
    if (d) { d += `H${f.x(n - 0.5)}`; f.svg.append(sv("path", { d, stroke: "#222", "stroke-width": 1.6, fill: "none", class: "best-so-far" })); }
    const label = (i) => { const t = s.trials.find((t) => t.i === i); return `#${i} ${t.phase} ${t.state} ${fmt(t.value)}`; };
    pickable(f.svg, pts, open, label);
    box.append(el("div", {}, el("div", { class: "small muted", text: "against trials (dots: each trial; line: best so far)" }), f.svg));
    // against wall time
    const timed = s.trials.filter((t) => t.started !== null && t.seconds !== null && t.state !== "running");
    if (!timed.length) { box.append(el("div", { class: "muted", text: "no trial with a recorded time yet" })); return; }
    const t0 = Math.min(...s.trials.filter((t) => t.started !== null).map((t) => t.started));
    const end = (t) => (t.started + t.seconds - t0) / 60;
    const xmax = Math.max(...timed.map(end), 1 / 60);
    const g = frame(640, 260, [0, xmax * 1.02], ys, { xlabel: "minutes since the first trial started", ylabel });
    const firstBoss = timed.filter((t) => t.phase === "boss").map((t) => (t.started - t0) / 60);
    if (firstBoss.length) {
      const xb = g.x(Math.min(...firstBoss));
      g.svg.append(sv("line", { x1: xb, x2: xb, y1: g.m.t, y2: g.H - g.m.b, stroke: "#999", "stroke-dasharray": "4 3" }));
      g.svg.append(sv("text", { x: xb + 4, y: g.m.t + 10, text: "BOSS phase →" }));
    }
    const pts2 = [];
    for (const ph of ["warmup", "boss"]) {
      const p = timed.filter((t) => t.phase === ph && t.state === "succeeded" && t.value !== null).map((t) => [g.x(end(t)), g.y(t.value), t.i]);
      dots(g.svg, p, PHASE_COLOR[ph]);
      pts2.push(...p);
    }
    let bv = null, d2 = "";
    for (const t of [...timed].sort((a, c) => end(a) - end(c))) {
      if (t.state === "succeeded" && t.value !== null && (bv === null || (max ? t.value > bv : t.value < bv))) {
        d2 += bv === null ? `M${g.x(end(t))} ${g.y(t.value)}` : `H${g.x(end(t))}V${g.y(t.value)}`;
        bv = t.value;
      }
    }
    if (d2) g.svg.append(sv("path", { d: d2 + `H${g.x(xmax * 1.02)}`, stroke: "#222", "stroke-width": 1.6, fill: "none" }));
    pickable(g.svg, pts2, open, label);
    box.append(el("div", {}, el("div", { class: "small muted", text: "against wall time (a trial at its end)" }), g.svg));
  }

  function ancestry(i) {
    const byI = new Map(S.study.trials.map((t) => [t.i, t]));
    const seen = new Set(), stack = [i];
    while (stack.length) {
      const j = stack.pop();
      if (j === null || j === undefined || seen.has(j) || !byI.has(j)) continue;
      seen.add(j);
      stack.push(byI.get(j).student, byI.get(j).teacher);
    }
    return seen;
  }

  function renderLineage() {
    const box = document.getElementById("lineage");
    fill(box, );
    const s = S.study;
    const nodes = s.trials.filter((t) => t.state === "succeeded" && t.value !== null);
    if (!nodes.length) { box.append(el("p", { class: "muted", text: "no checkpoint yet: the graph grows as trials succeed" })); return; }
    const byI = new Map(nodes.map((t) => [t.i, t]));
    const hot = s.best !== null ? ancestry(s.best) : new Set();
    const n = Math.max(1, s.trials.length);
    // y: the score, or the rank among the checkpoints (1: the best), which spreads a crowded top
    const ranked = [...nodes].sort((a, b) => (maximize() ? b.value - a.value : a.value - b.value) || a.i - b.i);
    const rank = new Map(ranked.map((t, k) => [t.i, k + 1]));
    const byRank = S.lineageY === "rank";
    const yv = (t) => byRank ? -rank.get(t.i) : t.value;
    const f = frame(1280, 380, [-0.5, n - 0.5], byRank ? [-nodes.length - 0.5, -0.5] : extent(nodes.map((t) => t.value), 0.08),
      { xlabel: `trial (each checkpoint at its ${byRank ? "rank" : "score"})`, ylabel: byRank ? `rank by ${s.metric}` : s.metric,
        xint: true, cls: "lineage", yint: byRank, yfmt: byRank ? (v) => String(-v) : null });
    const many = nodes.length > 600; // past that, cold edges and nodes are drawn as a few paths
    const edges = sv("g", { class: "edges" }), hotg = sv("g", { class: "hot" }), ng = sv("g", { class: "nodes" });
    let cold = { student: "", teacher: "" };
    for (const t of nodes) {
      for (const kind of ["student", "teacher"]) {
        const j = t[kind];
        if (j === null || j === undefined || !byI.has(j)) continue;
        const p = byI.get(j);
        const x1 = f.x(p.i), y1 = f.y(yv(p)), x2 = f.x(t.i), y2 = f.y(yv(t));
        const mx = (x1 + x2) / 2;
        const d = `M${x1.toFixed(1)} ${y1.toFixed(1)}C${mx.toFixed(1)} ${y1.toFixed(1)} ${mx.toFixed(1)} ${y2.toFixed(1)} ${x2.toFixed(1)} ${y2.toFixed(1)}`;
        const isHot = hot.has(t.i) && hot.has(j);
        if (many && !isHot) { cold[kind] += d; continue; }
        (isHot ? hotg : edges).append(sv("path", { d, class: `edge ${kind}${isHot ? " hot" : ""}`, "data-from": j, "data-to": t.i, "data-kind": kind,
          stroke: isHot ? HOT : EDGE, "stroke-width": isHot ? 2 : 1, fill: "none", "stroke-dasharray": kind === "teacher" ? "5 4" : null, opacity: isHot ? 0.95 : 0.55 }));
      }
    }
    if (many) for (const kind of ["student", "teacher"]) if (cold[kind]) edges.append(sv("path", { d: cold[kind], stroke: EDGE, "stroke-width": 0.6, fill: "none", opacity: 0.25, "stroke-dasharray": kind === "teacher" ? "4 3" : null }));
    const pts = [];
    if (many) for (const ph of ["warmup", "boss"]) dots(ng, nodes.filter((t) => t.phase === ph && !hot.has(t.i)).map((t) => [f.x(t.i), f.y(yv(t))]), PHASE_COLOR[ph], 3);
    for (const t of nodes) {
      const x = f.x(t.i), y = f.y(yv(t));
      pts.push([x, y, t.i]);
      if (many && !hot.has(t.i)) continue;
      const isBest = t.i === s.best;
      ng.append(sv("circle", { cx: x, cy: y, r: isBest ? 8 : hot.has(t.i) ? 6 : 5, class: `node${hot.has(t.i) ? " hot" : ""}${isBest ? " best" : ""}`, "data-trial": t.i,
        fill: PHASE_COLOR[t.phase] || "#999", stroke: hot.has(t.i) ? HOT : "#fff", "stroke-width": hot.has(t.i) ? 2.5 : 1 }));
      if (!many || hot.has(t.i)) ng.append(sv("text", { x: x + 7, y: y - 7, class: "node-label", text: `#${t.i}` }));
    }
    f.svg.append(edges, hotg, ng);
    pickable(f.svg, pts, open, (i) => { const t = byI.get(i); return `#${i} ${t.phase} ${fmt(t.value)} (rank ${rank.get(i)})${t.student !== null ? `\nstudent init #${t.student}, teacher #${t.teacher}` : ""}\n${cfgText(t.config)}`; });
    box.append(f.svg);
  }

  // picked trials for the curves: the user's choice, else the best and the running ones
  function picks() {
    if (S.picked) return S.picked;
    const s = S.study;
    const auto = s.trials.filter((t) => t.state === "running").map((t) => t.i).slice(-6);
    if (s.best !== null) auto.unshift(s.best);
    const recent = s.trials.filter((t) => t.state === "succeeded").map((t) => t.i).slice(-3);
    for (const i of recent) if (auto.length < 4 && !auto.includes(i)) auto.push(i);
    return auto;
  }

  async function loadCurves() {
    const p = picks();
    if (!p.length) { S.curves = {}; renderCurves(); return; }
    try { S.curves = await api(`/api/curves?id=${enc(sid)}&trials=${p.join(",")}`); renderCurves(); }
    catch (e) { showError(e.message); }
  }

  function renderCurves() {
    const controls = document.getElementById("curve-controls"), box = document.getElementById("curves");
    const p = picks();
    const metrics = new Set();
    for (const rows of Object.values(S.curves)) for (const r of rows) for (const k of Object.keys(r)) if (k !== "epoch") metrics.add(k);
    if (!S.metric || !metrics.has(S.metric)) S.metric = metrics.has(S.study.metric) ? S.study.metric : [...metrics][0] || S.study.metric;
    const select = el("select", { id: "curve-metric", onchange: (e) => { S.metric = e.target.value; renderCurves(); } },
      [...metrics].sort().map((m) => el("option", { value: m, text: m, selected: m === S.metric })));
    fill(controls, el("span", { class: "small muted", text: S.picked ? "picked trials:" : "showing the best and the running trials (tick trials in the table to pick):" }),
      ...p.map((i, k) => el("span", { class: "chip" }, el("i", { style: `background:${PICK_COLORS[k % PICK_COLORS.length]}` }), el("a", { href: `#/s/${enc(sid)}/t/${i}`, text: `#${i}` }),
        el("button", { title: "remove", text: "×", onclick: () => { S.picked = p.filter((j) => j !== i); loadCurves(); renderTable(); } }))),
      el("label", { class: "small" }, " metric ", select),
      S.picked ? el("button", { text: "automatic", onclick: () => { S.picked = null; loadCurves(); renderTable(); } }) : null);
    fill(box, );
    const series = p.map((i, k) => [i, (S.curves[String(i)] || []).filter((r) => r[S.metric] !== null && r[S.metric] !== undefined), PICK_COLORS[k % PICK_COLORS.length]]);
    const all = series.flatMap(([, rows]) => rows);
    if (!all.length) { box.append(el("p", { class: "muted", text: "no epoch finished yet in the picked trials" })); return; }
    const emax = Math.max(S.study.epochs || 1, ...all.map((r) => r.epoch));
    const f = frame(1280, 300, [0.5, emax + 0.5], extent(all.map((r) => r[S.metric])), { xlabel: "epoch", ylabel: S.metric, xint: true, cls: "curves" });
    for (const [i, rows, color] of series) {
      if (!rows.length) continue;
      const d = rows.map((r, k) => `${k ? "L" : "M"}${f.x(r.epoch).toFixed(1)} ${f.y(r[S.metric]).toFixed(1)}`).join("");
      f.svg.append(sv("path", { d, stroke: color, "stroke-width": 2, fill: "none", class: "curve", "data-trial": i }));
      const last = rows[rows.length - 1];
      dots(f.svg, rows.map((r) => [f.x(r.epoch), f.y(r[S.metric])]), color, 2.5);
      f.svg.append(sv("text", { x: f.x(last.epoch) + 6, y: f.y(last[S.metric]) + 4, text: `#${i}`, fill: color }));
    }
    box.append(f.svg);
  }

  function matches(t) {
    if (S.phase && t.phase !== S.phase) return false;
    if (S.state && t.state !== S.state) return false;
    if (!S.filter) return true;
    const hay = `#${t.i} ${t.phase} ${t.state} ${cfgText(t.config)} teacher=${t.teacher ?? ""} student=${t.student ?? ""} ${t.message || ""}`.toLowerCase();
    return S.filter.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
  }

  function renderTable() {
    const s = S.study;
    const controls = document.getElementById("trial-controls");
    if (!controls.childElementCount) {
      controls.append(
        el("input", { type: "search", id: "filter", placeholder: "filter: words in config, phase, state, e.g. adamw", oninput: (e) => { S.filter = e.target.value; S.page = 0; renderTable(); } }),
        el("select", { id: "phase-filter", onchange: (e) => { S.phase = e.target.value; S.page = 0; renderTable(); } }, el("option", { value: "", text: "any phase" }), el("option", { value: "warmup", text: "warm-up" }), el("option", { value: "boss", text: "BOSS" })),
        el("select", { id: "state-filter", onchange: (e) => { S.state = e.target.value; S.page = 0; renderTable(); } }, ["", "succeeded", "running", "failed", "diverged", "interrupted"].map((v) => el("option", { value: v, text: v || "any state" }))));
    }
    const testKeys = [...new Set(s.trials.flatMap((t) => Object.keys(t.test || {})))].sort();
    const cols = [["", null], ["#", "i"], ["phase", "phase"], ["state", "state"], ["config", "config"], [s.metric, "value"], ["teacher", "teacher"], ["student", "student"], ["duration", "seconds"], ...testKeys.map((k) => [k, "test:" + k])];
    const val = (t, key) => key.startsWith("test:") ? (t.test || {})[key.slice(5)] : key === "config" ? cfgText(t.config) : t[key];
    const rows = s.trials.filter(matches);
    const { key, dir } = S.sort;
    rows.sort((a, b) => {
      const x = val(a, key), y = val(b, key);
      if (x === y) return a.i - b.i;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    S.page = Math.min(S.page, pages - 1);
    const shown = rows.slice(S.page * PAGE_ROWS, (S.page + 1) * PAGE_ROWS);
    const p = picks();
    const thead = el("thead", {}, el("tr", {}, cols.map(([label, k]) => el("th", {
      class: [k ? "sortable" : "", k === key ? (dir > 0 ? "sorted-asc" : "sorted-desc") : "", ["i", "value", "teacher", "student", "seconds"].includes(k) || (k || "").startsWith("test:") ? "num" : ""].join(" ").trim() || null,
      "data-key": k, text: label,
      onclick: k ? () => { S.sort = { key: k, dir: S.sort.key === k ? -S.sort.dir : (k === "value" && maximize() ? -1 : 1) }; renderTable(); } : null }))));
    const tbody = el("tbody");
    for (const t of shown) {
      const cls = [t.i === s.best ? "best" : "", t.state].join(" ");
      tbody.append(el("tr", { "data-trial": t.i, class: cls },
        el("td", {}, el("input", { type: "checkbox", title: "show its curve", checked: p.includes(t.i), onchange: (e) => {
          const cur = [...picks()];
          S.picked = e.target.checked ? [...cur.filter((j) => j !== t.i), t.i].slice(-PICK_COLORS.length) : cur.filter((j) => j !== t.i);
          loadCurves(); } })),
        el("td", { class: "num" }, el("a", { href: `#/s/${enc(sid)}/t/${t.i}`, text: t.i })),
        el("td", { text: t.phase }), el("td", { text: t.stopped ? `stopped@${t.stopped}` : t.state, title: t.message || null }),
        el("td", { class: "cfg", text: cfgText(t.config) }),
        el("td", { class: "num", text: fmt(t.value) }),
        el("td", { class: "num" }, t.teacher !== null && t.teacher !== undefined ? el("a", { href: `#/s/${enc(sid)}/t/${t.teacher}`, text: `#${t.teacher}` }) : ""),
        el("td", { class: "num" }, t.student !== null && t.student !== undefined ? el("a", { href: `#/s/${enc(sid)}/t/${t.student}`, text: `#${t.student}` }) : ""),
        el("td", { class: "num", text: dur(t.seconds) }),
        testKeys.map((k) => el("td", { class: "num", text: fmt((t.test || {})[k]) }))));
    }
    const box = document.getElementById("trials-box");
    fill(box, 
      el("div", { class: "small muted", id: "trial-count", text: `${rows.length} of ${s.trials.length} trials` }),
      el("table", { id: "trials" }, thead, tbody),
      pages > 1 ? el("div", { class: "pager" }, el("button", { text: "‹ previous", disabled: S.page === 0, onclick: () => { S.page--; renderTable(); } }),
        `page ${S.page + 1} of ${pages}`, el("button", { text: "next ›", disabled: S.page >= pages - 1, onclick: () => { S.page++; renderTable(); } })) : null);
  }

  function paramAxis(name, p, done, a, b) {
    const vals = done.map((t) => t.config[name]).filter((v) => v !== undefined && v !== null);
    if (p.type === "categorical" || p.choices) {
      const choices = (p.choices || [...new Set(vals.map(String))]).map(String);
      const f = (v) => { const k = choices.indexOf(String(v)); return k < 0 ? null : a + ((k + 0.5) / choices.length) * (b - a); };
      f.choices = choices;
      return f;
    }
    const nums = vals.map(Number).filter(isFinite);
    const log = !!p.log && (p.low ?? Math.min(...nums)) > 0;
    const lo = p.low ?? Math.min(...nums), hi = p.high ?? Math.max(...nums);
    const f0 = scale(lo, hi === lo ? lo + 1 : hi, a, b, log);
    const f = (v) => (v === undefined || v === null || !isFinite(Number(v))) ? null : f0(Number(v));
    f.ticks = f0.ticks;
    f.log = log;
    return f;
  }

  function color(v, lo, hi) {
    const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    const q = Math.round((maximize() ? t : 1 - t) * 24) / 24; // dark: worse, bright: better; 25 shades: a path each
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const k = Math.min(3, Math.floor(q * 4)), r = q * 4 - k;
    const c = stops[k].map((x, j) => Math.round(x + (stops[k + 1][j] - x) * r));
    return `rgb(${c.join(",")})`;
  }

  function renderParams() {
    const s = S.study;
    const done = s.trials.filter((t) => t.state === "succeeded" && t.value !== null);
    const names = Object.keys(s.space);
    for (const k of new Set(done.flatMap((t) => Object.keys(t.config)))) if (!names.includes(k)) names.push(k);
    const par = document.getElementById("parallel"), slices = document.getElementById("slices");
    fill(par, ); fill(slices, );
    if (!done.length || !names.length) { par.append(el("p", { class: "muted", text: "no succeeded trial yet" })); return; }
    const [vlo, vhi] = extent(done.map((t) => t.value), 0);
    // parallel coordinates
    const W = 1280, H = 300, m = { l: 40, r: 90, t: 24, b: 20 };
    const axes = [...names, "__score"];
    const xs = (k) => m.l + (k / (axes.length - 1 || 1)) * (W - m.l - m.r);
    const svg = sv("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "parallel" });
    const fs = axes.map((n) => n === "__score" ? scale(vlo, vhi === vlo ? vlo + 1 : vhi, H - m.b, m.t) : paramAxis(n, s.space[n] || {}, done, H - m.b, m.t));
    const buckets = new Map();
    const order = [...done].sort((a, b) => (maximize() ? a.value - b.value : b.value - a.value)); // the best drawn last, on top
    for (const t of order) {
      let d = "", pen = false;
      axes.forEach((n, k) => {
        const y = n === "__score" ? fs[k](t.value) : fs[k](t.config[n]);
        if (y === null || y === undefined || !isFinite(y)) { pen = false; return; }
        d += `${pen ? "L" : "M"}${xs(k).toFixed(1)} ${y.toFixed(1)}`;
        pen = true;
      });
      const c = color(t.value, vlo, vhi);
      const key = t.i === s.best ? "best" : c;
      buckets.set(key, (buckets.get(key) || "") + d);
    }
    for (const [c, d] of buckets) {
      if (c === "best") continue;
      svg.append(sv("path", { d, stroke: c, fill: "none", "stroke-width": done.length > 500 ? 0.6 : 1.3, opacity: done.length > 500 ? 0.35 : 0.75 }));
    }
    if (buckets.has("best")) svg.append(sv("path", { d: buckets.get("best"), stroke: HOT, "stroke-width": 3, fill: "none", class: "best-line" }));
    axes.forEach((n, k) => {
      const g = sv("g", { class: "axis" });
      g.append(sv("line", { x1: xs(k), x2: xs(k), y1: m.t, y2: H - m.b, stroke: "#555" }));
      g.append(sv("text", { x: xs(k), y: 12, "text-anchor": "middle", "font-weight": 600, text: n === "__score" ? s.metric : n }));
      const f = fs[k];
      const ticks = f.choices ? f.choices.map((c) => [f(c), c]) : (f.ticks ? f.ticks(4) : []).map((v) => [f(v), fmt(v, 3)]);
      for (const [y, label] of ticks) if (y !== null) g.append(sv("text", { x: xs(k) + 4, y: y + 4, text: label }));
      svg.append(g);
    });
    par.append(svg, el("div", { class: "small muted", text: `the best trial in red; a line stops where a conditional hyperparameter is absent` }));
    // slice plots
    for (const n of names) {
      const p = s.space[n] || {};
      const f = frame(300, 200, [0, 1], extent(done.map((t) => t.value)), { xlabel: n, ylabel: s.metric, xcat: true });
      const fx = paramAxis(n, p, done, f.m.l + 6, f.W - f.m.r - 6);
      const g = sv("g", { class: "axis" });
      const ticks = fx.choices ? fx.choices.map((c) => [fx(c), c]) : (fx.ticks ? fx.ticks(4) : []).map((v) => [fx(v), fmt(v, 2)]);
      for (const [x, label] of ticks) if (x !== null) g.append(sv("text", { x, y: f.H - f.m.b + 14, "text-anchor": "middle", text: label }));
      f.svg.append(g);
      const pts = [];
      for (const ph of ["warmup", "boss"]) {
        const p2 = done.filter((t) => t.phase === ph && t.config[n] !== undefined).map((t) => {
          const jitter = fx.choices ? ((t.i * 0.6180339887) % 1 - 0.5) * 0.5 * (f.W - f.m.l - f.m.r) / fx.choices.length : 0;
          return [fx(t.config[n]) + jitter, f.y(t.value), t.i];
        }).filter((q) => q[0] !== null && isFinite(q[0]));
        dots(f.svg, p2, PHASE_COLOR[ph], 3);
        pts.push(...p2);
      }
      pickable(f.svg, pts, open, (i) => { const t = done.find((t) => t.i === i); return `#${i} ${n}=${fmt(t.config[n])} ${fmt(t.value)}`; });
      slices.append(el("div", {}, f.svg));
    }
  }

  async function loadImportance() {
    const box = document.getElementById("importance");
    const done = S.study.trials.filter((t) => t.state === "succeeded").length;
    if (done === S.importanceDone) return;
    S.importanceDone = done;
    try {
      const r = await api(`/api/importance?id=${enc(sid)}`);
      fill(box, el("div", { class: "small muted", id: "importance-method", text: `method: ${r.method}${r.trials ? ` (${r.trials} trials)` : ""}` }));
      if (r.message) { box.append(el("p", { class: "muted", text: r.message })); return; }
      const top = Math.max(...r.params.map((p) => p.importance), 1e-9);
      for (const p of r.params) box.append(el("div", { class: "bar" }, el("span", { class: "name", text: p.name }),
        el("span", { class: "fill", style: `width:${Math.max(1, (p.importance / top) * 420)}px` }), el("span", { class: "small", text: `${(p.importance * 100).toFixed(1)}% ± ${(p.spread * 100).toFixed(1)}` })));
    } catch (e) { fill(box, el("p", { class: "message bad", text: e.message })); }
  }

  function renderAll() {
    renderHead(); renderProgress(); renderLineage(); renderTable(); renderParams(); loadImportance(); renderCurves();
  }

  async function load() {
    try {
      S.study = await api(`/api/study?id=${enc(sid)}`);
      if (stopped) return;
      showError(null);
      renderAll();
      await loadCurves();
      relisten();
    } catch (e) {
      showError(e.message);
      fill(head, el("h1", { text: sid }), el("p", { class: "message bad", id: "page-error", text: e.message }));
      if (!events) listen({ id: sid }, () => load());
    }
  }
  // the event stream watches the logs of the trials whose curves are shown
  let watching = "";
  function relisten() {
    const w = picks().join(",");
    if (events && w === watching) return;
    watching = w;
    listen({ id: sid, watch: w }, (tok, prev) => {
      const stateChanged = prev === null || JSON.stringify({ ...tok, logs: null }) !== JSON.stringify({ ...prev, logs: null });
      if (stateChanged) load();
      else if (JSON.stringify(tok.logs) !== JSON.stringify(prev.logs)) loadCurves();
    });
  }
  load();
  return { stop() { stopped = true; } };
}

// ---- the trial page -----------------------------------------------------------------------------

function trialPage(main, sid, index) {
  const box = el("div");
  main.append(box);
  let stopped = false, followed = true;
  async function load() {
    let t, study, curves;
    try {
      [t, study, curves] = await Promise.all([api(`/api/trial?id=${enc(sid)}&i=${index}`), api(`/api/study?id=${enc(sid)}`), api(`/api/curves?id=${enc(sid)}&trials=${index}`)]);
    } catch (e) {
      showError(e.message);
      fill(box, el("h1", { text: `trial ${index}` }), el("p", { class: "message bad", id: "page-error", text: e.message }));
      return;
    }
    if (stopped) return;
    showError(null);
    const oldLog = document.getElementById("log");
    followed = !oldLog || oldLog.scrollTop + oldLog.clientHeight >= oldLog.scrollHeight - 20;
    const link = (i) => i === null || i === undefined ? "—" : el("a", { href: `#/s/${enc(sid)}/t/${i}`, text: `#${i}` });
    const isBest = study.best === index;
    const children = study.trials.filter((c) => c.student === index || c.teacher === index);
    fill(box, 
      el("div", { class: "card" },
        el("h1", {}, `${study.name}: trial #${index} `, el("span", { class: `badge ${t.state}`, id: "trial-state", text: t.stopped ? `stopped@${t.stopped}` : t.state }), isBest ? el("span", { class: "badge Succeeded", text: " best " }) : null),
        el("dl", { class: "kv", id: "trial-facts" },
          el("dt", { text: "phase" }), el("dd", { text: t.phase }),
          el("dt", { text: study.metric }), el("dd", { id: "trial-value", text: t.value === null ? "—" : fmt(t.value, 6) }),
          ...Object.entries(t.test || {}).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: fmt(v, 6) })]),
          el("dt", { text: "teacher" }), el("dd", { id: "trial-teacher" }, link(t.teacher)),
          el("dt", { text: "student init" }), el("dd", { id: "trial-student" }, link(t.student)),
          el("dt", { text: "taught / initialised" }), el("dd", {}, children.length ? children.flatMap((c, k) => [k ? ", " : "", link(c.i), c.student === index ? " (student)" : " (teacher)"]) : "—"),
          el("dt", { text: "duration" }), el("dd", { text: dur(t.seconds) || "—" }),
          el("dt", { text: "best epoch" }), el("dd", { text: t.bestEpoch ?? "—" }),
          el("dt", { text: "checkpoint" }), el("dd", { id: "trial-checkpoint", text: t.checkpoint || "—" }),
          el("dt", { text: "sha256" }), el("dd", { id: "trial-checksum", text: t.checksum || "—" }),
          el("dt", { text: "proposed by" }), el("dd", { text: t.origin || "—" }),
          t.job ? [el("dt", { text: "Job" }), el("dd", { id: "trial-job", text: t.job.error ? `${t.job.name}: ${t.job.error}`
            : `${t.job.name}: ${t.job.active} active, ${t.job.succeeded} succeeded, ${t.job.failed} failed pod(s)${t.job.conditions.length ? "; " + t.job.conditions.join("; ") : ""}` })] : null),
        t.message ? el("div", { class: `message ${t.state === "failed" ? "bad" : ""}`, id: "trial-message", text: t.message }) : null,
        t.warning ? el("div", { class: "message", text: t.warning }) : null),
      el("div", { class: "grid2" },
        el("div", { class: "card" }, el("h2", { text: "config" }), el("dl", { class: "kv", id: "trial-config" }, Object.entries(t.config || {}).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: typeof v === "number" ? fmt(v, 6) : String(v) })]))),
        el("div", { class: "card" }, el("h2", { text: "per-epoch metrics" }), el("div", { id: "trial-curves" }))),
      el("div", { class: "card" }, el("h2", { text: "log" }), t.logError ? el("p", { class: "message", id: "log-error", text: t.logError }) : null,
        t.logCut ? el("p", { class: "small muted", text: `the last 256 KB; the whole log: ${t.logWhere || "boss logs"}` }) : null,
        el("pre", { id: "log", text: t.log || "" })));
    const rows = curves[String(index)] || [];
    const cbox = document.getElementById("trial-curves");
    const metrics = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== "epoch").sort();
    if (!rows.length) cbox.append(el("p", { class: "muted", text: "no epoch finished yet" }));
    const emax = Math.max(study.epochs || 1, ...rows.map((r) => r.epoch));
    for (const mname of metrics) {
      const pts = rows.filter((r) => r[mname] !== null && r[mname] !== undefined);
      if (!pts.length) continue;
      const f = frame(300, 170, [0.5, emax + 0.5], extent(pts.map((r) => r[mname])), { xlabel: "epoch", ylabel: mname, xint: true, cls: "trial-curve" });
      f.svg.append(sv("path", { d: pts.map((r, k) => `${k ? "L" : "M"}${f.x(r.epoch)} ${f.y(r[mname])}`).join(""), stroke: mname === study.metric ? HOT : "#1f77b4", "stroke-width": 2, fill: "none" }));
      dots(f.svg, pts.map((r) => [f.x(r.epoch), f.y(r[mname])]), mname === study.metric ? HOT : "#1f77b4", 2.5);
      cbox.append(el("div", { style: "display:inline-block;margin-right:8px" }, f.svg));
    }
    const log = document.getElementById("log");
    if (followed) log.scrollTop = log.scrollHeight;
  }
  load();
  listen({ id: sid, watch: String(index) }, () => load());
  return { stop() { stopped = true; } };
}
