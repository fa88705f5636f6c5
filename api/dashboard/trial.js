// One trial (parameters, scores, confusion matrix, per-class precision/recall/F1, calibration, epochs, genome,
// bundle download) and several side by side.

import { errorBox, fmt, get, h, replace } from "./api.js";
import { confusionChart, epochsChart } from "./charts.js";
import { genomeView } from "./genome.js";

// The headline numbers, in the order shown: (label, metric key).
const SCORES = [
  ["test UA", "ua"],
  ["test WA", "wa"],
  ["test macro-F1", "macro_f1"],
  ["val UA", "val_ua"],
  ["val WA", "val_wa"],
  ["val macro-F1", "val_macro_f1"],
  ["parameters", "params"],
  ["latency ms (p50)", "latency_ms_p50"],
  ["best epoch", "best_epoch"],
  ["ECE", "ece"],
  ["MCE", "mce"],
  ["Brier", "brier"],
];

export async function trialView(root, trialId) {
  let trial;
  try {
    trial = await get(`/trials/${trialId}`);
  } catch (error) {
    replace(root, errorBox(error));
    return;
  }
  const metrics = trial.metrics || {};
  const classes = metrics.per_class ? Object.keys(metrics.per_class) : (trial.genome && trial.genome.classes) || [];
  const confusion = h("div", { class: "chart square", id: "confusion" });
  const epochs = h("div", { class: "chart", id: "epochs-chart" });
  replace(
    root,
    h(
      "section",
      { class: "panel", id: "trial-header" },
      h(
        "div",
        { class: "toolbar" },
        h("h2", {}, `Trial ${trial.id}: ${trial.key}`),
        h("span", { class: `badge ${trial.state}` }, trial.state),
        trial.links.export ? h("a", { class: "button", id: "download", href: trial.links.export, download: true }, "Download bundle") : null,
        h("a", { href: `#/search/${trial.search_id}` }, "← its search"),
      ),
      h(
        "dl",
        { class: "facts" },
        [
          ["stage", trial.stage || "–"],
          ["fold", trial.fold ?? "–"],
          ["started", trial.started_at.replace("T", " ").slice(0, 19)],
          ["finished", trial.finished_at ? trial.finished_at.replace("T", " ").slice(0, 19) : "–"],
        ].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
      ),
    ),
    h(
      "div",
      { class: "two" },
      h("section", { class: "panel" }, h("h3", {}, "Scores"), scoresTable([trial])),
      h("section", { class: "panel" }, h("h3", {}, "Parameters"), paramsTable(trial.params)),
    ),
    metrics.confusion
      ? h(
          "div",
          { class: "two" },
          h("section", { class: "panel" }, h("h3", {}, "Confusion matrix (test)"), confusion),
          h("section", { class: "panel" }, h("h3", {}, "Per class (test)"), perClassTable(metrics.per_class)),
        )
      : null,
    h("section", { class: "panel" }, h("h3", {}, `Epochs (${trial.steps.length})`), epochs, stepsTable(trial.steps)),
    trial.genome ? h("section", { class: "panel", id: "trial-genome" }, h("h3", {}, "Genome"), genomeView(trial.genome)) : null,
    trial.artifacts.length
      ? h(
          "section",
          { class: "panel" },
          h("h3", {}, "Files"),
          h("ul", {}, trial.artifacts.map((a) => h("li", {}, `${a.name} (${fmt(a.size_bytes)} bytes, sha256 ${a.sha256 ? a.sha256.slice(0, 12) : "missing"})`))),
        )
      : null,
  );
  if (metrics.confusion) confusionChart(confusion, metrics.confusion, classes);
  epochsChart(epochs, [trial]);
}

export async function compareView(root, ids) {
  let trials;
  try {
    trials = await Promise.all(ids.map((id) => get(`/trials/${id}`)));
  } catch (error) {
    replace(root, errorBox(error));
    return;
  }
  const epochs = h("div", { class: "chart tall", id: "compare-epochs" });
  const names = [...new Set(trials.flatMap((t) => Object.keys(t.params)))];
  replace(
    root,
    h("section", { class: "panel", id: "compare" }, h("h2", {}, `${trials.length} trials side by side`), scoresTable(trials)),
    h(
      "section",
      { class: "panel" },
      h("h3", {}, "Parameters"),
      h(
        "table",
        { class: "grid" },
        h("thead", {}, h("tr", {}, h("th", {}, ""), trials.map((t) => h("th", {}, h("a", { href: `#/trial/${t.id}` }, t.key))))),
        h("tbody", {}, names.map((name) => h("tr", {}, h("th", {}, name), trials.map((t) => h("td", {}, show(t.params[name])))))),
      ),
    ),
    h("section", { class: "panel" }, h("h3", {}, "Epochs"), epochs),
    h(
      "div",
      { class: "side-by-side" },
      trials.map((t) => h("section", { class: "panel" }, h("h3", {}, t.key), t.genome ? genomeView(t.genome) : h("p", { class: "muted" }, "no genome"))),
    ),
  );
  epochsChart(epochs, trials);
}

function scoresTable(trials) {
  const shown = SCORES.filter(([, key]) => trials.some((t) => typeof (t.metrics || {})[key] === "number"));
  return h(
    "table",
    { class: "grid scores" },
    trials.length > 1 ? h("thead", {}, h("tr", {}, h("th", {}, ""), trials.map((t) => h("th", {}, `${t.id}: ${t.key}`)))) : null,
    h(
      "tbody",
      {},
      shown.map(([label, key]) =>
        h("tr", { dataset: { metric: key } }, h("th", {}, label), trials.map((t) => h("td", {}, fmt((t.metrics || {})[key], key.startsWith("latency") ? 2 : 3)))),
      ),
    ),
  );
}

function paramsTable(params) {
  const rows = Object.entries(params).map(([name, value]) => h("tr", {}, h("th", {}, name), h("td", {}, show(value))));
  return rows.length ? h("table", { class: "fields" }, h("tbody", {}, rows)) : h("p", { class: "muted" }, "none");
}

function perClassTable(perClass) {
  return h(
    "table",
    { class: "grid", id: "per-class" },
    h("thead", {}, h("tr", {}, ["class", "precision", "recall", "F1", "support"].map((x) => h("th", {}, x)))),
    h(
      "tbody",
      {},
      Object.entries(perClass).map(([label, s]) =>
        h("tr", { dataset: { class: label } }, h("th", {}, label), h("td", {}, fmt(s.precision)), h("td", {}, fmt(s.recall)), h("td", {}, fmt(s.f1)), h("td", {}, fmt(s.support))),
      ),
    ),
  );
}

function stepsTable(steps) {
  const names = [...new Set(steps.flatMap((s) => Object.keys(s.metrics)))].filter((name) => steps.some((s) => typeof s.metrics[name] === "number"));
  return h(
    "details",
    {},
    h("summary", {}, "values per epoch"),
    h(
      "table",
      { class: "grid", id: "steps-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "epoch"), names.map((n) => h("th", {}, n)))),
      h("tbody", {}, steps.map((s) => h("tr", {}, h("td", {}, s.step), names.map((n) => h("td", {}, fmt(s.metrics[n])))))),
    ),
  );
}

function show(value) {
  if (value === undefined) return "–";
  return typeof value === "object" && value !== null ? JSON.stringify(value) : fmt(value);
}
