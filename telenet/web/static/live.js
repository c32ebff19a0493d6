// The live channel: one WebSocket to /api/v1/ws (the session cookie authenticates the handshake), the page's
// topics, `since` the last event seen so a dropped connection loses nothing, and a visible state. On an event
// the page's live regions ([data-live] with an id) are read again and swapped, except one being typed in.

const RETRY_MS = [500, 1000, 2000, 5000];

function setStatus(body, state) {
  const el = document.getElementById("live-status");
  if (!el) return;
  el.dataset.state = state;
  el.textContent = state === "open" ? body.dataset.textConnected : body.dataset.textReconnecting;
}

async function refresh(onSwap) {
  const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (!resp.ok) return;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
  for (const fresh of doc.querySelectorAll("[data-live][id]")) {
    const current = document.getElementById(fresh.id);
    if (!current || current.dataset.dirty === "1" || current.contains(document.activeElement) && current.querySelector("form")?.dataset.busy) continue;
    current.replaceWith(fresh);
    onSwap(fresh);
  }
  document.body.dataset.refreshed = String(Date.now());
}

export function startLive(body, onSwap) {
  const topics = (body.dataset.topics || "").split(" ").filter(Boolean);
  let since = Number(body.dataset.since || 0);
  let attempt = 0;
  let pending = null;
  const schedule = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      refresh(onSwap).catch(() => {});
    }, 50);
  };
  document.addEventListener("console:changed", schedule);
  if (!topics.length) return;
  const connect = () => {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${window.location.host}/api/v1/ws`);
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ action: "subscribe", topics, since }));
    });
    ws.addEventListener("message", (msg) => {
      const data = JSON.parse(msg.data);
      if (data.type === "subscribed") {
        if (attempt > 0) schedule();
        attempt = 0;
        setStatus(body, "open");
        return;
      }
      if (typeof data.id === "number") {
        since = Math.max(since, data.id);
        body.dataset.lastEvent = String(since);
        schedule();
      }
    });
    ws.addEventListener("close", () => {
      setStatus(body, "reconnecting");
      const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
      attempt += 1;
      setTimeout(connect, delay);
    });
  };
  connect();
}
