// A tiny SVG chart kit for the dashboard (no CDN: the app must work offline): line charts and bars.
"use strict";

const Charts = {};
const SVG_NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toFixed(2);
}

// series: [{name, values: [number|null per x]}]; xLabels: string per x.
Charts.line = function (xLabels, series, opts) {
  const o = Object.assign({ width: 360, height: 180, pad: 34 }, opts || {});
  const svg = el("svg", { width: o.width, height: o.height, viewBox: `0 0 ${o.width} ${o.height}`, role: "img" });
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  if (!all.length) {
    svg.appendChild(el("text", { x: o.pad, y: o.height / 2 }, "no data yet"));
    return svg;
  }
  const lo = Math.min(0, ...all), hi = Math.max(...all) || 1;
  const n = Math.max(xLabels.length, 2);
  const x = (i) => o.pad + ((o.width - 2 * o.pad) * i) / (n - 1);
  const y = (v) => o.height - o.pad + 10 - ((o.height - o.pad - 10) * (v - lo)) / (hi - lo || 1);
  svg.appendChild(el("line", { x1: o.pad, y1: y(lo), x2: o.width - o.pad, y2: y(lo), stroke: "#555" }));
  svg.appendChild(el("text", { x: 2, y: y(hi) + 4 }, fmt(hi)));
  svg.appendChild(el("text", { x: 2, y: y(lo) }, fmt(lo)));
  const step = Math.ceil(xLabels.length / 6);
  xLabels.forEach((label, i) => {
    if (i % step === 0) svg.appendChild(el("text", { x: x(i) - 8, y: o.height - 4 }, label));
  });
  series.forEach((s, k) => {
    const color = Charts.palette[k % Charts.palette.length];
    const pts = s.values.map((v, i) => (v === null || v === undefined ? null : [x(i), y(v)])).filter(Boolean);
    if (pts.length > 1) {
      svg.appendChild(el("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    }
    for (const p of pts) svg.appendChild(el("circle", { cx: p[0], cy: p[1], r: 3, fill: color }));
    if (series.length > 1) {
      svg.appendChild(el("text", { x: o.pad + 90 * k, y: 12, fill: color, style: `fill:${color}` }, s.name));
    }
  });
  return svg;
};

// rows: [{label, parts: [{name, value}]}] as horizontal stacked bars.
Charts.stacked = function (rows, opts) {
  const o = Object.assign({ width: 360, bar: 22, gap: 8, left: 90 }, opts || {});
  const height = rows.length * (o.bar + o.gap) + 24;
  const svg = el("svg", { width: o.width, height, viewBox: `0 0 ${o.width} ${height}`, role: "img" });
  const max = Math.max(1, ...rows.map((r) => r.parts.reduce((a, p) => a + p.value, 0)));
  rows.forEach((r, i) => {
    const top = i * (o.bar + o.gap);
    svg.appendChild(el("text", { x: 0, y: top + o.bar * 0.7 }, r.label));
    let left = o.left;
    r.parts.forEach((p, k) => {
      const w = ((o.width - o.left - 40) * p.value) / max;
      const color = Charts.palette[k % Charts.palette.length];
      svg.appendChild(el("rect", { x: left, y: top, width: w, height: o.bar, fill: color }));
      left += w;
    });
    svg.appendChild(el("text", { x: left + 4, y: top + o.bar * 0.7 }, String(r.parts.reduce((a, p) => a + p.value, 0))));
  });
  const names = rows.length ? rows[0].parts.map((p) => p.name) : [];
  names.forEach((name, k) => {
    const color = Charts.palette[k % Charts.palette.length];
    svg.appendChild(el("text", { x: o.left + 80 * k, y: height - 4, style: `fill:${color}` }, name));
  });
  return svg;
};

Charts.palette = ["#4fb3ff", "#ffa94d", "#63e6be", "#f783ac", "#ffd43b", "#b197fc"];
