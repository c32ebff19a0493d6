// DICOM upload from the browser over STOW-RS: the chosen files as one multipart/related body to the hub's
// /dicom-web/studies (the session cookie and its CSRF token authenticate), the store response shown per instance.
import { csrfToken } from "./forms.js";

const STORED = "00081199";
const FAILED = "00081198";
const SOP_UID = "00081155";
const REASON = "00081197";

function rows(body, key) {
  const seq = body && body[key];
  return seq && Array.isArray(seq.Value) ? seq.Value : [];
}

export function bindUpload(form) {
  if (!form || form.dataset.bound) return;
  form.dataset.bound = "1";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.dataset.busy === "1") return;
    const files = [...form.elements.files.files];
    const error = document.getElementById("f-files-error");
    error.textContent = "";
    if (!files.length) {
      error.textContent = form.elements.files.validationMessage || "?";
      return;
    }
    form.dataset.busy = "1";
    const button = form.querySelector("button");
    button.disabled = true;
    const boundary = `telenet-${crypto.randomUUID()}`;
    const parts = [];
    for (const file of files) {
      parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, "\r\n");
    }
    parts.push(`--${boundary}--\r\n`);
    try {
      const resp = await fetch(form.dataset.stow, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": `multipart/related; type="application/dicom"; boundary=${boundary}`,
          Accept: "application/dicom+json",
          "X-CSRF-Token": csrfToken(),
        },
        body: new Blob(parts),
      });
      const body = await resp.json().catch(() => ({}));
      const table = document.getElementById("stow-result");
      const tbody = table.querySelector("tbody");
      tbody.replaceChildren();
      const add = (item, ok) => {
        const tr = document.createElement("tr");
        const uid = document.createElement("td");
        uid.textContent = item[SOP_UID]?.Value?.[0] ?? "";
        const state = document.createElement("td");
        const reason = item[REASON]?.Value?.[0];
        state.textContent = ok ? form.dataset.textDone : `${form.dataset.textFailed} (0x${Number(reason || 0).toString(16)})`;
        tr.append(uid, state);
        tbody.append(tr);
      };
      rows(body, STORED).forEach((item) => add(item, true));
      rows(body, FAILED).forEach((item) => add(item, false));
      table.hidden = false;
      const done = rows(body, STORED).length;
      document.getElementById("stow-summary").textContent =
        resp.ok || resp.status === 202
          ? `${form.dataset.textDone}: ${done} / ${files.length}`
          : `${form.dataset.textFailed}: ${body.detail || body.title || resp.status}`;
    } finally {
      form.dataset.busy = "";
      button.disabled = false;
    }
  });
}

bindUpload(document.getElementById("stow-form"));
