// The live page: one card per device from /api/devices, refreshed every
// second; the forms use /api/enroll and /api/search/image. No library and
// nothing from another site: the host serves everything it needs.
"use strict";
const SHOWN = 200;
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function ago(s) {
  if (s === null) return "never";
  if (s < 1) return "just now";
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(0)} h ago`;
  return `${(s / 86400).toFixed(0)} d ago`;
}

// An SVG sparkline of anomaly scores; alarms are red dots.
function sparkline(history) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 200 48");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const scores = history.map((p) => p.score);
  const max = Math.max(0.05, ...scores);
  const x = (i) => (history.length < 2 ? 100 : (i * 200) / (history.length - 1));
  const y = (v) => 46 - (v / max) * 44;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", history.map((p, i) => `${x(i).toFixed(1)},${y(p.score).toFixed(1)}`).join(" "));
  svg.append(line);
  history.forEach((p, i) => {
    if (!p.event) return;
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", x(i).toFixed(1));
    dot.setAttribute("cy", y(p.score).toFixed(1));
    dot.setAttribute("r", "3");
    dot.setAttribute("data-alarm-seq", p.seq);
    svg.append(dot);
  });
  const alarms = history.filter((p) => p.event).length;
  svg.setAttribute("aria-label", `anomaly score, ${history.length} latents, ${alarms} alarms`);
  return svg;
}

function card(d) {
  const hb = d.record.heartbeat;
  const heads = (d.latest && d.latest.heads) || {};
  const top = heads.imagenet && heads.imagenet[0];
  const few = heads.fewshot && heads.fewshot.label;
  const a = heads.anomaly;
  const inAlarm = Boolean(a && a.alarm);
  const stat = (name, value) => el("div", {}, el("dt", {}, name), el("dd", {}, value));
  const c = el("article", {
    class: `card ${d.online ? "online" : "offline"}${inAlarm ? " alarm" : ""}`,
    "data-device": d.id,
  });
  c.append(
    el("div", { class: "top" },
      el("span", { class: "name" }, d.id),
      el("span", { class: `state ${d.online ? "online" : "offline"}` }, d.online ? "online" : "offline")),
    el("div", { class: "seen", title: d.last_seen || "" }, `last seen ${ago(d.seen_seconds_ago)}`),
    el("dl", {},
      stat("fps", d.online ? d.fps.toFixed(1) : "—"),
      stat("spooled", d.spool_depth === null ? "—" : String(d.spool_depth)),
      stat("dropped", hb ? String(hb.frames_dropped) : "—"),
      stat("encode p50", hb && hb.inference.count > 0 ? `${(hb.inference.p50_us / 1000).toFixed(1)} ms` : "—"),
      stat("CPU", hb && hb.cpu_temp_millicelsius !== null ? `${(hb.cpu_temp_millicelsius / 1000).toFixed(0)} °C` : "—"),
      stat("latents", String(d.record.latents))),
    el("div", { class: "labels" },
      top ? el("span", { class: "tag imagenet", title: "ImageNet top-1" }, `${top.label} ${(top.p * 100).toFixed(0)}%`) : null,
      few ? el("span", { class: "tag fewshot", title: "few-shot label" }, few) : null),
  );
  const history = (d.anomaly && d.anomaly.history) || [];
  if (history.length > 0) {
    c.append(sparkline(history), el("div", { class: "spark-label" },
      el("span", {}, "anomaly score"),
      el("span", { class: inAlarm ? "alarmtext" : "" },
        `${history[history.length - 1].score.toFixed(3)}${inAlarm ? " ALARM" : ""} · ${d.anomaly.alarms} alarm(s)`)));
  } else if (a && !a.error && !a.warm) {
    c.append(el("div", { class: "spark-label" }, el("span", {}, "anomaly: warming up")));
  }
  return c;
}

async function refresh() {
  try {
    const r = await fetch(`/api/devices?limit=${SHOWN}`);
    if (r.status === 401) { location.href = "/login"; return; }
    const data = await r.json();
    $("devices").replaceChildren(...data.devices.map(card));
    const online = data.devices.filter((d) => d.online).length;
    const more = data.next_offset !== null ? ` (the first ${data.devices.length} shown)` : "";
    $("summary").textContent = `${data.total} device(s), ${online} online, ${data.processed} latents processed${more}`;
  } catch (e) {
    $("summary").textContent = `host unreachable: ${e}`;
  }
}

async function upload(url, file) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": file.type }, body: file });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

$("enroll").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const out = $("enroll-result");
  out.textContent = "enrolling…";
  try {
    const label = f.label.value.trim();
    const body = await upload(`/api/enroll?label=${encodeURIComponent(label)}`, f.photo.files[0]);
    out.replaceChildren(`“${body.label}” now has ${body.examples} example(s).`);
  } catch (e) { out.replaceChildren(el("span", { class: "error" }, String(e.message))); }
});

$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const out = $("search-result");
  out.textContent = "searching…";
  try {
    const body = await upload(`/api/search/image?k=${encodeURIComponent(f.k.value)}`, f.photo.files[0]);
    out.replaceChildren(body.hits.length === 0 ? "no frames stored yet" : el("ol", {},
      ...body.hits.map((h) => el("li", {}, `${h.device} #${h.seq} — similarity ${h.similarity.toFixed(3)}`))));
  } catch (e) { out.replaceChildren(el("span", { class: "error" }, String(e.message))); }
});

refresh();
setInterval(refresh, 1000);
