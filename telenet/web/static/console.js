// The console's entry module: forms that talk to the API, the live channel, the SLA clocks, the board.
import { startBoard } from "./board.js";
import { bindForms } from "./forms.js";
import { startLive } from "./live.js";
import { startClocks } from "./sla.js";

bindForms();
startClocks(document);
startBoard(document);
startLive(document.body, (root) => startClocks(root));
