// The live channel: one WebSocket to /api/v1/ws (the session cookie authenticates the handshake), the page's
// topics, `since` the last event seen so a dropped connection loses nothing, and a visible state.
//
// What an event changes is read again from the hub (events carry no patient data):
// - a page with a row list (tbody[data-rows], the worklist) asks for the rows of the requests the events
//   name (`?rows=3,17`) and swaps, inserts (in the list's order) or removes just those rows;
// - otherwise, and after a reconnection, the page itself is read again and its live regions
//   ([data-live] with an id) are swapped, except one being typed in.

const RETRY_MS = [500, 1000, 2000, 5000];
const ROWS_PER_FETCH = 50;

function setStatus(body, state) {
  const el = document.getElementById("live-status");
  if (!el) return;
  el.dataset.state = state;
  el.textContent = state === "open" ? body.dataset.textConnected : body.dataset.textReconnecting;
}

function refreshed() {
  document.body.dataset.refreshed = String(Date.now());
}

async function refreshPage(onSwap) {
  const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (!resp.ok) return;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
  const active = document.activeElement;
  for (const fresh of doc.querySelectorAll("[data-live][id]")) {
    const current = document.getElementById(fresh.id);
    if (!current || current.dataset.dirty === "1" || current.contains(active) && current.querySelector("form")?.dataset.busy) continue;
    current.replaceWith(fresh);
    refocus(current, fresh, active);
    onSwap(fresh);
  }
  refreshed();
}

// A row's place in the list: priority rank, then due time, then request id (the hub's order).
function order(tr) {
  const due = Date.parse(tr.querySelector("[data-due]")?.dataset.due ?? "");
  return [Number(tr.dataset.rank ?? 9), Number.isNaN(due) ? Infinity : due, Number(tr.dataset.request)];
}

function precedes(a, b) {
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

function insertInOrder(tbody, tr) {
  const key = order(tr);
  for (const row of tbody.rows) {
    if (precedes(key, order(row))) {
      tbody.insertBefore(tr, row);
      return;
    }
  }
  tbody.appendChild(tr);
}

// The control that had the focus in a row being replaced gets it back in the new row (a keyboard user keeps
// their place): the same aria-label, else the same text.
function refocus(old, fresh, active) {
  if (!active || !old.contains(active)) return;
  const name = active.getAttribute("aria-label") || active.textContent.trim();
  const twin = [...fresh.querySelectorAll("a, button, input, select, textarea")].find(
    (el) => (el.getAttribute("aria-label") || el.textContent.trim()) === name,
  );
  (twin || fresh.querySelector("a, button") || document.body).focus?.({ preventScroll: true });
}

// Returns the ids to try again later (a row whose form is in flight), or null when the rows could not be read.
async function refreshRows(tbody, ids, onSwap) {
  const resp = await fetch(`${tbody.dataset.rows}?rows=${ids.join(",")}`, {
    credentials: "same-origin",
    headers: { Accept: "text/html" },
  });
  if (!resp.ok || resp.redirected) return null;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
  const fresh = new Map([...doc.querySelectorAll("tr[data-request]")].map((tr) => [tr.dataset.request, tr]));
  const later = [];
  const active = document.activeElement;
  for (const id of ids) {
    const current = tbody.querySelector(`tr[data-request="${id}"]`);
    if (current?.querySelector('form[data-busy="1"]')) {
      later.push(id);
      continue;
    }
    const row = fresh.get(String(id));
    if (!row) {
      if (current?.contains(active)) tbody.closest("table")?.querySelector("caption, th")?.focus?.();
      current?.remove();
      continue;
    }
    const adopted = document.adoptNode(row);
    if (current) {
      current.replaceWith(adopted);
      refocus(current, adopted, active);
    } else {
      insertInOrder(tbody, adopted);
    }
    onSwap(adopted);
  }
  const empty = tbody.closest("[data-live]")?.querySelector("p.empty");
  if (empty) empty.hidden = tbody.rows.length > 0;
  refreshed();
  return later;
}

export function startLive(body, onSwap) {
  const topics = (body.dataset.topics || "").split(" ").filter(Boolean);
  let since = Number(body.dataset.since || 0);
  let attempt = 0;
  let pending = null;
  let whole = false; // the next refresh reads the whole page
  const changed = new Set(); // request ids whose rows the next refresh reads
  const run = async () => {
    pending = null;
    const tbody = document.querySelector("tbody[data-rows]");
    const ids = [...changed];
    changed.clear();
    if (whole || !tbody || !ids.length || ids.length > ROWS_PER_FETCH) {
      whole = false;
      await refreshPage(onSwap);
      return;
    }
    const later = await refreshRows(tbody, ids, onSwap);
    if (later === null) {
      await refreshPage(onSwap);
    } else if (later.length) {
      setTimeout(() => later.forEach((id) => schedule(id)), 500);
    }
  };
  const schedule = (requestId) => {
    if (typeof requestId === "number") changed.add(requestId);
    else whole = true;
    if (pending) return;
    pending = setTimeout(() => run().catch(() => {}), 50);
  };
  document.addEventListener("console:changed", (event) => schedule(event.detail?.request));
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
        schedule(data.data?.request_id);
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
