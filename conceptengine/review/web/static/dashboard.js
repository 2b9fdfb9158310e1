// Admin dashboard: queue depth, reviewer throughput and the rounds' metrics, refreshed every 10 s.
"use strict";

(function () {
  function put(id, node) {
    const box = document.getElementById(id);
    box.innerHTML = "";
    box.appendChild(node);
  }

  function table(headers, rows) {
    const t = document.createElement("table");
    const head = t.insertRow();
    for (const h of headers) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    for (const r of rows) {
      const tr = t.insertRow();
      for (const v of r) tr.insertCell().textContent = v === null || v === undefined ? "–" : String(v);
    }
    return t;
  }

  function render(d) {
    const kinds = Object.keys(d.queue);
    put("queue", Charts.stacked(kinds.map((k) => ({
      label: k,
      parts: [{ name: "open", value: d.queue[k].open }, { name: "leased", value: d.queue[k].leased }],
    }))));
    const hours = d.answers_per_hour.hours.map((t) => new Date(t * 1000).getHours() + "h");
    const per = Object.entries(d.answers_per_hour.reviewers).map(([name, values]) => ({ name, values }));
    put("hourly", Charts.line(hours, per.length ? per : [{ name: "none", values: [] }]));
    const rounds = d.rounds.map((r) => "r" + r.round);
    put("cgf1", Charts.line(rounds, [{ name: "gold cgF1", values: d.rounds.map((r) => r.gold_cgF1) }]));
    put("share", Charts.line(rounds, [{ name: "to humans", values: d.rounds.map((r) => r.human_share) }]));
    put("seconds", Charts.line(rounds, [{ name: "s / pair", values: d.rounds.map((r) => r.human_seconds_per_pair) }]));
    put("reviewers", table(["name", "role", "kinds"], d.reviewers.map((u) => [u.name, u.role, u.kinds.join(", ")])));
    document.getElementById("updated").textContent = "updated " + new Date(d.generated_at * 1000).toLocaleTimeString();
  }

  async function refresh() {
    try {
      render(await CE.api("GET", "/api/dashboard"));
      CE.status("");
    } catch (e) {
      CE.status(e.message, true);
    }
  }

  document.getElementById("logout").addEventListener("click", CE.logout);
  refresh();
  setInterval(refresh, 10000);
})();
