// The console's entry module: forms that talk to the API, the live channel, the SLA clocks.
import { bindForms } from "./forms.js";
import { startLive } from "./live.js";
import { startClocks } from "./sla.js";

bindForms(document);
startClocks(document);
startLive(document.body, (root) => {
  bindForms(root);
  startClocks(root);
});
