// Login: trade the token for an HttpOnly session cookie, then go where the user was heading.
"use strict";

// Where ?next= points, if that is on this site; else "/". The check is on the URL the browser would
// resolve, not on the text: "/\evil.example" and "//evil.example" both resolve to another host.
function sameSiteTarget(next) {
  if (!next) return "/";
  let target;
  try {
    target = new URL(next, window.location.origin);
  } catch {
    return "/";
  }
  return target.origin === window.location.origin ? target.pathname + target.search + target.hash : "/";
}

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
    window.location.href = sameSiteTarget(new URLSearchParams(window.location.search).get("next"));
  } catch (e) {
    CE.status(e.message, true);
  }
});
