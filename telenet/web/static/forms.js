// Forms with data-api post JSON to the REST API with the session's CSRF token. Problem JSON errors are shown
// next to their fields (by JSON pointer); a form in flight ignores further submits, so a double click
// creates one request.

const CODE_FIELDS = {
  "bad-national-id": "/patient/national_id",
  "consent-missing": "/consent/given_by",
  "modality-missing": "/modality",
  "bad-accession": "/accession_number",
  "bad-time": "/consent/given_at",
};

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// "2026-03-02T10:00" typed in Asia/Shanghai → ISO 8601 with its offset.
function shanghai(value) {
  return value.length === 16 ? `${value}:00+08:00` : `${value}+08:00`;
}

function setPath(target, path, value) {
  const parts = path.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) {
    node[part] = node[part] || {};
    node = node[part];
  }
  node[parts[parts.length - 1]] = value;
}

export function formBody(form, submitter) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.type === "submit" || el.type === "file" || el.dataset.local !== undefined) continue;
    let value;
    if (el.type === "checkbox") value = el.checked;
    else if (el.dataset.type === "lines") {
      value = el.value.split("\n").map((s) => s.trim()).filter(Boolean);
      if (!value.length) continue;
    } else if (el.name === "participants" || el.name === "invited_centers") {
      value = el.value.split(/[,，\s]+/).filter(Boolean);
      if (!value.length) continue;
    } else if (el.type === "number") {
      if (el.value === "") continue;
      value = Number(el.value);
    } else if (el.type === "datetime-local") {
      if (el.value === "") continue;
      value = shanghai(el.value);
    } else {
      if (el.value === "") continue;
      value = el.value;
    }
    setPath(body, el.name, value);
  }
  if (submitter && submitter.name) {
    const v = submitter.value;
    setPath(body, submitter.name, v === "true" ? true : v === "false" ? false : v);
  }
  if (body.kind === "consultation") delete body.modality;
  return body;
}

function clearErrors(form) {
  for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function showError(form, pointer, message) {
  let slot = form.querySelector(`.field-error[data-pointer="${pointer}"]`);
  if (!slot) slot = form.querySelector('.form-error[data-pointer="/"]') || form.querySelector(".form-error");
  if (!slot) {
    slot = document.createElement("p");
    slot.className = "form-error";
    slot.setAttribute("role", "alert");
    form.prepend(slot);
  }
  slot.textContent = slot.textContent ? `${slot.textContent}；${message}` : message;
  const input = slot.id ? form.querySelector(`[aria-describedby="${slot.id}"]`) : null;
  if (input) input.setAttribute("aria-invalid", "true");
}

function said(code) {
  try {
    return JSON.parse(document.body.dataset.problems || "{}")[code];
  } catch {
    return undefined;
  }
}

export function showProblem(form, problem) {
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  if (errors.length) {
    for (const e of errors) {
      let pointer = e.location || "/";
      const missing = /^'([^']+)' is a required property/.exec(e.message || "");
      if (missing) pointer = `${pointer === "/" ? "" : pointer}/${missing[1]}`;
      showError(form, pointer, e.message);
    }
  } else {
    const code = (problem.type || "").split(":").pop();
    const detail = problem.detail || problem.title || String(problem.status);
    const text = said(code);
    showError(form, CODE_FIELDS[code] || "/", text ? `${text}（${detail}）` : detail);
  }
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
}

const plain = (name) => (name || "").replace(/[\^=\s]/g, "");

// Linking an unmatched study: when the request's patient is not the study's, warn and ask for a second click.
async function patientsAgree(form, body) {
  if (!form.classList.contains("recon-form") || form.dataset.confirmed === String(body.request_id)) return true;
  const resp = await fetch(`/api/v1/requests/${body.request_id}`, { credentials: "same-origin" });
  if (!resp.ok) return true; // the link call itself reports the problem
  const patient = (await resp.json()).patient || {};
  const same = plain(patient.name) === plain(form.dataset.patientName) || (patient.id && patient.id === form.dataset.patientId);
  if (same) return true;
  form.dataset.confirmed = String(body.request_id);
  showError(form, "/", `${form.dataset.textMismatch} (${patient.name} / ${form.dataset.patientName})`);
  return false;
}

// Files of [data-attach] inputs go to the request's attachments, one POST each (the file is the body).
async function uploadFiles(form, requestId) {
  for (const input of form.querySelectorAll("input[type=file][data-attach]")) {
    for (const file of input.files) {
      const resp = await fetch(`/api/v1/requests/${requestId}/attachments`, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": file.type || "application/octet-stream",
          "X-Filename": encodeURIComponent(file.name),
          "X-CSRF-Token": csrfToken(),
        },
        body: file,
      });
      if (!resp.ok) return resp.json().catch(() => ({ status: resp.status }));
    }
    input.value = "";
  }
  return null;
}

async function submit(form, submitter) {
  if (form.dataset.busy === "1") return;
  form.dataset.busy = "1";
  const buttons = [...form.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  clearErrors(form);
  try {
    const body = formBody(form, submitter);
    if (!(await patientsAgree(form, body))) return;
    if (form.dataset.filesOnly !== undefined) {
      const problem = await uploadFiles(form, form.dataset.api.split("/")[4]);
      if (problem) showProblem(form, problem);
      else document.dispatchEvent(new CustomEvent("console:changed"));
      return;
    }
    const resp = await fetch(form.dataset.api, {
      method: form.dataset.method || "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken(), Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      showProblem(form, data);
      return;
    }
    const region = form.closest("[data-live]");
    if (region) delete region.dataset.dirty;
    const problem = data.id && form.querySelector("input[type=file][data-attach]") ? await uploadFiles(form, data.id) : null;
    if (problem) {
      // The request exists; say what went wrong with the file and go on to its page, where it can be added again.
      window.alert(problem.detail || problem.title || String(problem.status));
    }
    if (form.dataset.redirect) {
      window.location.assign(form.dataset.redirect.replace("{id}", data.id ?? data.request_id ?? ""));
      return;
    }
    document.dispatchEvent(new CustomEvent("console:changed"));
  } catch (err) {
    showError(form, "/", String(err));
  } finally {
    form.dataset.busy = "";
    buttons.forEach((b) => (b.disabled = false));
  }
}

export function bindForms(root) {
  for (const form of root.querySelectorAll("form.api-form")) {
    if (form.dataset.bound) continue;
    form.dataset.bound = "1";
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(form, event.submitter);
    });
    form.addEventListener("input", () => {
      const region = form.closest("[data-live]");
      if (region) region.dataset.dirty = "1";
    });
  }
  for (const picker of root.querySelectorAll("select.template-picker")) {
    if (picker.dataset.bound) continue;
    picker.dataset.bound = "1";
    picker.addEventListener("change", () => {
      const option = picker.selectedOptions[0];
      const form = picker.form;
      if (!option || !option.value || !form) return;
      form.elements.findings.value = option.dataset.findings;
      form.elements.impression.value = option.dataset.impression;
      const region = form.closest("[data-live]");
      if (region) region.dataset.dirty = "1";
    });
  }
}
