// Correction page: add missed instances by clicking on them (SAM 3 tracker point prompts, served by the
// app), refine a mask with more clicks, remove wrong masks, submit with Enter.
"use strict";

(function () {
  const view = new CE.View(document.getElementById("view"), 720);
  const feed = new CE.Feed("correction", 1);
  let current = null, started = 0, removed = new Set(), added = [], draft = null, seq = 0;
  let stopHolding = () => {};

  function newDraft(refineOf, editOf) {
    const base = editOf !== undefined && editOf !== null ? added[editOf] : null;
    return {
      points: base ? base.points.slice() : [],
      rle: base ? base.rle : null,
      area: base ? base.area : 0,
      refineOf: base ? base.refineOf : (refineOf === undefined ? null : refineOf),
      editOf: editOf === undefined ? null : editOf,
    };
  }

  function redraw() {
    if (!current) return;
    const layers = [];
    current.masks.forEach((m, i) => {
      if (!removed.has(i)) layers.push({ rle: m.rle, color: CE.COLORS[i % CE.COLORS.length], outline: true });
    });
    added.forEach((a, i) => {
      if (draft && draft.editOf === i) return;
      layers.push({ rle: a.rle, color: [60, 230, 90], alpha: 0.4, outline: true });
    });
    if (draft && draft.refineOf !== null) layers.push({ box: current.masks[draft.refineOf].box_xyxy, boxColor: "#ffffff" });
    if (draft && draft.rle) layers.push({ rle: draft.rle, color: [255, 255, 0], alpha: 0.5, outline: true });
    if (draft) layers.push({ points: draft.points });
    view.draw(layers);
    renderLists();
  }

  function button(text, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
    return b;
  }

  function renderLists() {
    const given = document.getElementById("given");
    given.innerHTML = "";
    current.masks.forEach((m, i) => {
      const li = document.createElement("li");
      li.className = removed.has(i) ? "removed" : "";
      li.appendChild(document.createTextNode((i < 9 ? "[" + (i + 1) + "] " : "") + "mask " + (i + 1) + (removed.has(i) ? " (removed)" : "")));
      li.appendChild(button(removed.has(i) ? "restore" : "remove", () => toggleRemove(i)));
      li.appendChild(button("refine", () => { draft = newDraft(i); redraw(); }));
      given.appendChild(li);
    });
    const list = document.getElementById("added");
    list.innerHTML = "";
    added.forEach((a, i) => {
      const li = document.createElement("li");
      li.appendChild(document.createTextNode("new mask " + (i + 1) + " (" + a.area + " px, " + a.points.length + " clicks)"));
      li.appendChild(button("edit", () => { draft = newDraft(null, i); redraw(); }));
      li.appendChild(button("delete", () => { added.splice(i, 1); draft = null; redraw(); }));
      list.appendChild(li);
    });
    const d = document.getElementById("draft");
    d.textContent = draft
      ? "drawing: " + draft.points.length + " click(s)" + (draft.rle ? ", " + draft.area + " px" : "") +
        (draft.refineOf !== null ? " (refining mask " + (draft.refineOf + 1) + ")" : "")
      : "click on a missed instance to draw it";
  }

  function toggleRemove(i) {
    if (removed.has(i)) removed.delete(i); else removed.add(i);
    redraw();
  }

  async function segment() {
    const mine = ++seq;
    const d = draft;
    if (!d.points.length) { d.rle = null; d.area = 0; redraw(); return; }
    const body = { points: d.points.map((p) => [p.x, p.y]), labels: d.points.map((p) => p.label) };
    if (d.refineOf !== null) body.box_xyxy = current.masks[d.refineOf].box_xyxy;
    document.body.classList.add("segmenting");
    try {
      const out = await CE.api("POST", "/api/tasks/" + current.task_id + "/segment", body);
      if (mine !== seq || d !== draft) return; // a newer click superseded this answer
      d.rle = out.area ? out.rle : null;
      d.area = out.area;
      CE.status(out.area ? "" : "the tracker found nothing there; add a click", !out.area);
    } catch (e) {
      CE.status(e.message, true);
    } finally {
      if (mine === seq) document.body.classList.remove("segmenting");
    }
    redraw();
  }

  // Keep the draft as a new mask (or the edited / refined one); false if there is nothing to keep.
  function keepDraft() {
    if (!draft || !draft.rle) { draft = null; return false; }
    const mask = { rle: draft.rle, area: draft.area, points: draft.points, refineOf: draft.refineOf };
    if (draft.editOf !== null) added[draft.editOf] = mask; else added.push(mask);
    if (draft.refineOf !== null) removed.add(draft.refineOf); // the refined mask replaces the proposed one
    draft = null;
    return true;
  }

  function onClick(ev) {
    if (!current) return;
    ev.preventDefault();
    if (!draft) draft = newDraft(null);
    const p = view.toImage(ev);
    draft.points.push({ x: p.x, y: p.y, label: ev.shiftKey || ev.button === 2 ? 0 : 1 });
    redraw();
    segment();
  }

  async function submit() {
    if (!current) return;
    keepDraft();
    const task = current;
    const payload = {
      add: added.map((a) => a.rle),
      remove: [...removed].sort((a, b) => a - b).map((i) => task.masks[i].instance_id ?? i),
    };
    current = null;
    stopHolding();
    CE.submit(task, "Done", payload, started);
    advance();
  }

  async function advance() {
    current = null;
    removed = new Set();
    added = [];
    draft = null;
    const item = await CE.nextItem(feed, "correction", advance);
    if (!item) return;
    current = item.task;
    document.body.dataset.taskId = current.task_id;
    document.getElementById("np").textContent = current.noun_phrase;
    document.getElementById("meta").textContent =
      "round " + current.round + " · " + current.masks.length + " mask(s) · task " + current.task_id;
    view.show(current, item.img);
    redraw();
    CE.status("");
    started = performance.now();
    const shown = current;
    stopHolding = CE.hold(shown, (e) => {
      if (current !== shown) return;
      CE.status(e.message + " — moving on", true);
      advance();
    });
  }

  const canvas = document.getElementById("view");
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("contextmenu", onClick); // right click: negative point
  document.addEventListener("keydown", (ev) => {
    if (!current || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "Enter") { ev.preventDefault(); submit(); }
    else if (ev.key === "n") { keepDraft(); redraw(); }
    else if (ev.key === "u" && draft) { draft.points.pop(); segment(); }
    else if (ev.key === "Escape") { draft = null; redraw(); }
    else if (/^[1-9]$/.test(ev.key) && Number(ev.key) <= current.masks.length) toggleRemove(Number(ev.key) - 1);
  });
  document.getElementById("submit").addEventListener("click", submit);
  document.getElementById("logout").addEventListener("click", CE.logout);
  advance();
})();
