// The coordinator's board: each row's 分派 button opens the one reassignment form for its request (hand it to a
// named reader of the center, or release the reader's claim back to the queue, with a reason); the form
// closes once the hub has done it, and the board follows over the live channel.
import { clearErrors } from "./forms.js";

export function startBoard(doc) {
  const dialog = doc.getElementById("reassign-dialog");
  if (!dialog) return;
  const form = doc.getElementById("reassign-form");
  let opener = null;
  doc.addEventListener("click", (event) => {
    const button = event.target.closest?.("button[data-reassign]");
    if (!button) return;
    opener = button.dataset.reassign;
    form.dataset.api = `/api/v1/requests/${button.dataset.reassign}/reassign`;
    doc.getElementById("reassign-accession").textContent = button.dataset.accession;
    doc.getElementById("reassign-holder").textContent = button.dataset.holder || "—";
    doc.getElementById("reassign-release").hidden = !button.dataset.holder;
    const select = doc.getElementById("f-to"); // form.elements.to is the select and the release button
    const other = [...select.options].find((o) => o.value !== button.dataset.holder);
    if (other) select.value = other.value;
    form.elements.reason.value = "";
    clearErrors(form);
    dialog.showModal();
    select.focus();
  });
  doc.getElementById("reassign-close").addEventListener("click", () => dialog.close());
  form.addEventListener("console:done", () => dialog.close());
  dialog.addEventListener("close", () => {
    // Back to the row's button (the board may have been refreshed meanwhile: find it again).
    const back = opener && doc.querySelector(`button[data-reassign="${opener}"]`);
    if (back) back.focus();
  });
}
