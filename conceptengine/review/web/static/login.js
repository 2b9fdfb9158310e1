// Login: trade the token for an HttpOnly session cookie, then go where the user was heading.
"use strict";

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = document.getElementById("token").value.trim();
  try {
    const resp = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.detail || resp.statusText);
    const next = new URLSearchParams(window.location.search).get("next");
    // Only same-site paths: a crafted ?next= must not send the reviewer elsewhere.
    window.location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
  } catch (e) {
    CE.status(e.message, true);
  }
});
