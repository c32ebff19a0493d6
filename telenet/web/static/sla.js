// SLA countdowns: minutes left until due_at, amber under a quarter hour, red when overdue. One clock for the
// document (every 15 s it repaints whatever [data-due] cells the page holds then); rows a live page swaps in
// are painted as they arrive.

let ticking = false;

function paint(cell, now, overdue, minutesText) {
  const due = Date.parse(cell.dataset.due);
  if (Number.isNaN(due)) return;
  const minutes = Math.round((due - now) / 60000);
  cell.classList.toggle("sla-red", minutes < 0);
  cell.classList.toggle("sla-amber", minutes >= 0 && minutes < 15);
  const text = minutes < 0 ? `${overdue} ${-minutes} ${minutesText}` : `${minutes} ${minutesText}`;
  if (cell.textContent !== text) cell.textContent = text;
}

function paintAll(root) {
  const body = document.body.dataset;
  const now = Date.now();
  for (const cell of root.querySelectorAll("[data-due]")) {
    if (cell.dataset.due) paint(cell, now, cell.dataset.overdue || body.textOverdue, cell.dataset.minutes || body.textMinutes);
  }
}

export function startClocks(root) {
  paintAll(root);
  if (!ticking) {
    ticking = true;
    setInterval(() => paintAll(document), 15000);
  }
}
