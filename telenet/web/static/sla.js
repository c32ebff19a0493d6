// SLA countdowns: minutes left until due_at, amber under a quarter hour, red when overdue; every 15 s.

function paint(cell, now) {
  const due = Date.parse(cell.dataset.due);
  if (Number.isNaN(due)) return;
  const minutes = Math.round((due - now) / 60000);
  cell.classList.toggle("sla-red", minutes < 0);
  cell.classList.toggle("sla-amber", minutes >= 0 && minutes < 15);
  cell.textContent = minutes < 0 ? `${cell.dataset.overdue} ${-minutes} ${cell.dataset.minutes}` : `${minutes} ${cell.dataset.minutes}`;
}

export function startClocks(root) {
  const cells = [...root.querySelectorAll("[data-due]")].filter((c) => c.dataset.due);
  const tick = () => cells.forEach((c) => paint(c, Date.now()));
  tick();
  if (cells.length && !root.dataset?.clock) {
    if (root.dataset) root.dataset.clock = "1";
    setInterval(tick, 15000);
  }
}
