// The dashboard's entry point: a hash router over the views (#/ searches, #/search/<id>, #/trial/<id>,
// #/compare/<id>,<id>...), the write token, and the links to the API docs and Ray's dashboard.

import { errorBox, get, h, replace, setToken, token } from "./api.js";
import { disposeCharts } from "./charts.js";
import { searchView } from "./search.js";
import { searchesView } from "./searches.js";
import { compareView, trialView } from "./trial.js";

const main = document.getElementById("view");
const tokenSlot = document.getElementById("token");
let leave = null; // what the current view must stop (timers, event streams) when another one opens

// The token field, shown when the server needs a token for writes; `reason` says why it is asked for again.
function refreshToken(reason) {
  const input = h("input", { type: "password", id: "token-input", placeholder: "API token", autocomplete: "off" });
  input.value = token();
  input.addEventListener("change", () => setToken(input.value.trim()));
  replace(tokenSlot, h("label", { for: "token-input" }, "token "), input, reason ? h("span", { class: "error", id: "token-error" }, reason) : null);
}

async function links() {
  try {
    const info = await get("/dashboard/info");
    if (info.writes_need_token) refreshToken();
    if (info.ray_dashboard) {
      document.getElementById("links").append(h("a", { href: info.ray_dashboard, target: "_blank", rel: "noopener" }, "Ray dashboard"));
    }
  } catch (error) {
    main.prepend(errorBox(error));
  }
}

function route() {
  if (leave) leave();
  leave = null;
  disposeCharts();
  const [, view, argument] = location.hash.match(/^#\/([a-z]*)\/?(.*)$/) || ["", "", ""];
  window.scrollTo(0, 0);
  if (view === "search" && argument) leave = searchView(main, decodeURIComponent(argument), { refreshToken });
  else if (view === "trial" && argument) trialView(main, argument);
  else if (view === "compare" && argument) compareView(main, argument.split(",").filter(Boolean));
  else leave = searchesView(main, { refreshToken });
}

window.addEventListener("hashchange", route);
links();
route();
