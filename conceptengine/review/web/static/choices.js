// MV, EV and adjudication pages: show a task, answer it with one key press, show the next one at once.
// MV shows the one mask under review with its box; EV shows every accepted mask of the pair; an
// adjudication shows the disputed MV or EV question and what each reviewer answered.
"use strict";

(function () {
  const kind = document.body.dataset.kind;
  const view = new CE.View(document.getElementById("view"), 720);
  const feed = new CE.Feed(kind, 1);
  let current = null;
  let started = 0;
  let stopHolding = () => {};

  function layers(task) {
    if ((task.of_kind || task.kind) === "mv") {
      const m = task.masks[0];
      return [{ rle: m.rle, color: CE.COLORS[0], outline: true, box: m.box_xyxy }];
    }
    return task.masks.map((m, i) => ({ rle: m.rle, color: CE.COLORS[i % CE.COLORS.length], outline: true, box: m.box_xyxy }));
  }

  function renderChoices(task) {
    const list = document.getElementById("choices");
    list.innerHTML = "";
    for (const c of task.choices) {
      const li = document.createElement("li");
      li.innerHTML = "<kbd></kbd> <b></b> <span></span>";
      li.querySelector("kbd").textContent = c.key;
      li.querySelector("b").textContent = c.name;
      li.querySelector("span").textContent = c.description;
      li.addEventListener("click", () => answer(c.name));
      list.appendChild(li);
    }
  }

  async function advance() {
    current = null;
    document.body.classList.add("waiting");
    const item = await CE.nextItem(feed, kind, advance);
    if (!item) return;
    current = item.task;
    document.body.classList.remove("waiting");
    document.body.dataset.taskId = current.task_id;
    document.getElementById("np").textContent = current.noun_phrase;
    const votes = current.answers ? " · answers: " + current.answers.map((a) => a.annotator + " " + a.choice).join(", ") : "";
    document.getElementById("meta").textContent =
      "round " + current.round + " · " + current.masks.length + " mask(s) · task " + current.task_id + votes;
    view.show(current, item.img);
    view.draw(layers(current));
    renderChoices(current);
    CE.status("");
    started = performance.now();
    const shown = current;
    stopHolding = CE.hold(shown, (e) => {
      if (current !== shown) return;
      CE.status(e.message + " — moving on", true);
      advance();
    });
  }

  function answer(choice) {
    if (!current) return;
    const task = current;
    current = null; // a second key press cannot answer the same task twice
    stopHolding();
    CE.submit(task, choice, null, started);
    advance();
  }

  document.addEventListener("keydown", (ev) => {
    if (!current || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const c = current.choices.find((c) => c.key === ev.key);
    if (c) {
      ev.preventDefault();
      answer(c.name);
    }
  });
  document.getElementById("logout").addEventListener("click", CE.logout);
  advance();
})();
