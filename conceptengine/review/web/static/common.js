// Shared by every review page: the JSON API, COCO RLE decoding, drawing, and the prefetching task feed.
// No framework and no CDN: the app must work on an air-gapped network.
"use strict";

const CE = {};

// --- API ------------------------------------------------------------------------------------------
CE.api = async function (method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname);
    throw new Error("not logged in");
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.detail || resp.status + " " + resp.statusText);
    err.status = resp.status;
    err.data = data;
    throw err;
  }
  return data;
};

CE.status = function (text, isError) {
  const el = document.getElementById("status");
  if (!el) return;
  el.textContent = text || "";
  el.className = isError ? "status error" : "status";
};

// --- COCO compressed RLE (pycocotools' rleFrString), column-major like the engine's masks ----------
CE.decodeRle = function (s, h, w) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++;
      k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const m = new Uint8Array(h * w);
  let idx = 0, v = 0;
  for (const c of counts) {
    if (v) m.fill(1, idx, Math.min(idx + c, m.length));
    idx += c;
    v = 1 - v;
  }
  return m; // pixel (x, y) is m[x * h + y]
};

// --- drawing --------------------------------------------------------------------------------------
CE.COLORS = [[0, 160, 255], [255, 140, 0], [60, 200, 90], [220, 60, 200], [255, 220, 0], [0, 220, 220]];

// A canvas that shows an image scaled to fit `maxSide` px, with masks and boxes in image coordinates.
CE.View = class {
  constructor(canvas, maxSide) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.maxSide = maxSide || 720;
  }
  show(task, img) {
    this.task = task;
    this.img = img;
    this.scale = this.maxSide / Math.max(task.width, task.height);
    this.canvas.width = Math.round(task.width * this.scale);
    this.canvas.height = Math.round(task.height * this.scale);
  }
  draw(layers) {
    const { ctx, task } = this;
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.drawImage(this.img, 0, 0, this.canvas.width, this.canvas.height);
    for (const layer of layers) {
      if (layer.rle) this.drawMask(layer.rle, layer.color, layer.alpha === undefined ? 0.45 : layer.alpha, layer.outline);
      if (layer.box) this.drawBox(layer.box, layer.boxColor || "#ff00ff");
      if (layer.points) this.drawPoints(layer.points);
    }
  }
  drawMask(rle, color, alpha, outline) {
    const { task } = this;
    const h = task.height, w = task.width;
    const m = CE.decodeRle(rle, h, w);
    const off = document.createElement("canvas");
    off.width = w;
    off.height = h;
    const octx = off.getContext("2d");
    const data = octx.createImageData(w, h);
    for (let x = 0; x < w; x++) {
      for (let y = 0; y < h; y++) {
        if (!m[x * h + y]) continue;
        const edge = outline && (x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          !m[(x - 1) * h + y] || !m[(x + 1) * h + y] || !m[x * h + y - 1] || !m[x * h + y + 1]);
        const i = 4 * (y * w + x);
        data.data[i] = color[0];
        data.data[i + 1] = color[1];
        data.data[i + 2] = color[2];
        data.data[i + 3] = Math.round(255 * (edge ? 1 : alpha));
      }
    }
    octx.putImageData(data, 0, 0);
    this.ctx.imageSmoothingEnabled = false;
    this.ctx.drawImage(off, 0, 0, this.canvas.width, this.canvas.height);
  }
  drawBox(box, color) {
    const s = this.scale;
    this.ctx.strokeStyle = color;
    this.ctx.lineWidth = 2;
    this.ctx.strokeRect(box[0] * s, box[1] * s, (box[2] - box[0]) * s, (box[3] - box[1]) * s);
  }
  drawPoints(points) {
    for (const p of points) {
      this.ctx.beginPath();
      this.ctx.arc((p.x + 0.5) * this.scale, (p.y + 0.5) * this.scale, 5, 0, 2 * Math.PI);
      this.ctx.fillStyle = p.label ? "#22dd44" : "#ff3344";
      this.ctx.fill();
      this.ctx.strokeStyle = "#000";
      this.ctx.lineWidth = 1;
      this.ctx.stroke();
    }
  }
  // Canvas event -> integer image pixel (x, y).
  toImage(ev) {
    const r = this.canvas.getBoundingClientRect();
    const x = Math.floor(((ev.clientX - r.left) / r.width) * this.task.width);
    const y = Math.floor(((ev.clientY - r.top) / r.height) * this.task.height);
    return { x: Math.min(Math.max(x, 0), this.task.width - 1), y: Math.min(Math.max(y, 0), this.task.height - 1) };
  }
};

// --- the task feed: the current task plus one leased ahead, its image already decoded --------------
CE.loadImage = async function (url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) throw new Error("image: " + resp.status);
  const blob = await resp.blob();
  const img = new Image();
  img.src = URL.createObjectURL(blob);
  await img.decode();
  return img;
};

CE.Feed = class {
  constructor(kind, ahead) {
    this.kind = kind;
    this.ahead = ahead === undefined ? 1 : ahead;
    this.buffer = [];
    this.filling = null;
  }
  // Lease until current + `ahead` tasks are buffered with their images; one request in flight at a time.
  fill() {
    if (!this.filling) {
      this.filling = this._fill().finally(() => { this.filling = null; });
    }
    return this.filling;
  }
  async _fill() {
    while (this.buffer.length < 1 + this.ahead) {
      const got = await CE.api("POST", "/api/lease", { kinds: [this.kind], n: 1 + this.ahead - this.buffer.length });
      if (!got.tasks.length) return;
      const loaded = await Promise.all(got.tasks.map(async (t) => ({ task: t, img: await CE.loadImage(t.image_url) })));
      this.buffer.push(...loaded);
    }
  }
  // The next task (waiting only when nothing was prefetched), and start leasing the one after it.
  async next() {
    if (!this.buffer.length) await this.fill();
    const item = this.buffer.shift() || null;
    this.fill().catch((e) => CE.status(e.message, true));
    return item;
  }
};

// Keep the lease of the task on screen: renewed now (a prefetched task waited while the previous one was
// worked on) and every 30 s. `onLost` runs if another reviewer took it after the lease ran out.
// The next prefetched task, or null after telling the reviewer the queue is empty and scheduling
// `retry` in 5 s; both task pages move on through this.
CE.nextItem = async function (feed, label, retry) {
  let item = null;
  try {
    item = await feed.next();
  } catch (e) {
    CE.status(e.message, true);
  }
  if (!item) {
    document.getElementById("np").textContent = "";
    CE.status("No " + label + " tasks open right now; checking again in 5 s.");
    setTimeout(retry, 5000);
  }
  return item;
};

CE.hold = function (task, onLost) {
  let stopped = false;
  const renew = () => {
    if (stopped) return;
    CE.api("POST", "/api/tasks/" + task.task_id + "/renew").catch((e) => {
      if (!stopped && e.status && e.status >= 400 && e.status < 500) {
        stopped = true;
        onLost(e);
      }
    });
  };
  renew();
  const timer = setInterval(renew, 30000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
};

// Submit in the background: the reviewer already sees the next task; errors are shown, not lost.
CE.submit = function (task, choice, payload, started) {
  const seconds = Math.max(0, (performance.now() - started) / 1000);
  const body = { choice, payload: payload === undefined ? null : payload, seconds: Math.round(seconds * 100) / 100 };
  const done = CE.api("POST", "/api/tasks/" + task.task_id + "/answer", body)
    .then((r) => {
      CE.answered = (CE.answered || 0) + 1;
      const el = document.getElementById("count");
      if (el) el.textContent = CE.answered + " answered";
      return r;
    })
    .catch((e) => CE.status("answer to " + task.task_id + " failed: " + e.message, true));
  CE.pending = (CE.pending || []).concat([done]);
  return done;
};

CE.logout = async function () {
  await CE.api("POST", "/api/logout").catch(() => null);
  window.location.href = "/login";
};
