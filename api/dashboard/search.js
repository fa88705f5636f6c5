// One search: its header (status, progress, actions), folds, trials (paged by the API's cursor), learning
// curves, optimisation history, Pareto front, parallel coordinates, genomes, and the live event log.
// Every panel reads data any strategy's trials report, so a new strategy fills these panels instead of a new page.
// The event stream keeps it live: each trial or epoch event schedules one refresh of the panels.

import { debounced, duration, errorBox, fmt, follow, get, h, replace } from "./api.js";
import { curvesChart, historyChart, parallelChart, paretoChart } from "./charts.js";
import { genomeView } from "./genome.js";
import { actions, meanStd, progressText, statusBadge } from "./searches.js";

const TRIALS_PAGE = 50;
const CURVES = 60;
const PARALLEL_TRIALS = 300;
// Points the history and the Pareto charts ask for: enough to see the cloud, few enough to come quickly.
const HISTORY_POINTS = 2000;
const DOMINATED_POINTS = 1000;
const EVENTS_SHOWN = 200;
const STAGES = ["", "search", "retrain", "ensemble", "final"];
const STATES = ["", "running", "complete", "pruned", "failed"];
// Sorts the trials listing offers (GET /searches/{id}/trials?sort=); the other columns are not sortable there.
const SORTABLE = { id: "id", ua: "ua", wa: "wa", f1: "macro_f1", params: "n_params", latency: "latency_ms" };

export function searchView(root, searchId, { refreshToken }) {
  const header = h("section", { class: "panel", id: "search-header" });
  const folds = h("section", { class: "panel", id: "folds" });
  const trials = h("section", { class: "panel", id: "trials" });
  const curves = h("section", { class: "panel", id: "curves" });
  const analysis = h("div", { class: "two" });
  const history = h("section", { class: "panel", id: "history" });
  const pareto = h("section", { class: "panel", id: "pareto" });
  const parallel = h("section", { class: "panel", id: "parallel" });
  const genomes = h("section", { class: "panel", id: "genomes" });
  const events = h("section", { class: "panel", id: "events" });
  analysis.append(history, pareto);
  replace(root, header, folds, trials, curves, analysis, parallel, genomes, events);

  const go = (trialId) => (location.hash = `#/trial/${trialId}`);
  let search = null;

  async function refreshHeader() {
    try {
      search = await get(`/searches/${searchId}`);
      drawHeader(header, search, refreshHeader, refreshToken);
    } catch (error) {
      replace(header, errorBox(error));
    }
  }

  const trialsPanel = trialsTable(trials, searchId);
  const curvesPanel = curvesView(curves, searchId, go);
  const historyPanel = chartPanel(history, "Optimisation history", (el, o) =>
    get(`/searches/${searchId}/history`, { ...o, limit: HISTORY_POINTS }).then((data) => (historyChart(el, data, go), `${data.total} scored trials`)),
  );
  const paretoPanel = chartPanel(
    pareto,
    "Pareto front",
    (el, o) =>
      get(`/searches/${searchId}/pareto`, { ...o, limit: DOMINATED_POINTS }).then(
        (data) => (paretoChart(el, data, go), `${data.front.length} on the front of ${data.considered} completed trials`),
      ),
    { cost: ["params", "latency_ms_p50"] },
  );
  const parallelPanel = () => drawParallel(parallel, searchId);
  const genomesPanel = genomesView(genomes, searchId);

  function refreshAll() {
    refreshHeader();
    drawFolds(folds, searchId);
    trialsPanel.refresh(true);
    curvesPanel();
    historyPanel();
    paretoPanel();
    parallelPanel();
    genomesPanel();
  }
  const refreshSoon = debounced(refreshAll, 1500);

  const log = h("ol", { class: "events", id: "event-log", reversed: true });
  replace(events, h("h3", {}, "Live events"), log);
  const addEvent = (event) => {
    log.prepend(h("li", { class: `level-${event.level_name.toLowerCase()}` }, h("time", {}, event.created_at.slice(11, 19)), " ", event.message));
    while (log.children.length > EVENTS_SHOWN) log.lastChild.remove();
  };
  refreshAll();
  // The stream's first status event repeats what the header is drawn from (the header's own request, still in
  // flight before `search` is set, is at least as new): redraw only on a change.
  const changed = (status) =>
    search !== null && ["status", "cancel_requested", "attempts", "error"].some((key) => status[key] !== search[key]);
  const stop = follow(searchId, {
    status: (status) => changed(status) && refreshHeader(),
    log: addEvent,
    trial: (event) => (addEvent(event), refreshSoon()),
    epoch: (event) => (addEvent(event), refreshSoon()),
    end: () => refreshSoon(),
  });
  return stop;
}

function drawHeader(header, search, refresh, refreshToken) {
  const spec = search.spec;
  const progress = search.progress;
  replace(
    header,
    h("div", { class: "toolbar" }, h("h2", {}, search.name), statusBadge(search), actions(search, refresh, refreshToken)),
    h(
      "dl",
      { class: "facts" },
      fact("id", search.id),
      fact("strategy", search.strategy),
      fact("preset", search.preset || "–"),
      fact("corpus", `${spec.corpus.name} (${spec.corpus.root})`),
      fact("classes", (spec.corpus.classes || ["all"]).join(", ")),
      fact("objective", `val ${spec.objective || "ua"}`),
      fact("GPUs", fmt(spec.gpus)),
      fact("progress", progressText(progress)),
      fact("elapsed", duration(progress && progress.elapsed_seconds)),
      fact("test UA (folds)", meanStd(search.summary, "ua")),
      fact("test WA (folds)", meanStd(search.summary, "wa")),
      fact("test macro-F1 (folds)", meanStd(search.summary, "macro_f1")),
    ),
    search.error ? h("div", { class: "error" }, search.error) : null,
  );
}

function fact(name, value) {
  return h("div", {}, h("dt", {}, name), h("dd", { dataset: { fact: name } }, value));
}

async function drawFolds(panel, searchId) {
  try {
    const overview = await get(`/searches/${searchId}/overview`);
    const rows = overview.folds.map((f) =>
      h(
        "tr",
        {},
        h("td", {}, f.fold ?? "all speakers"),
        h("td", {}, h("a", { href: `#/trial/${f.trial_id}` }, f.key)),
        h("td", {}, f.state),
        h("td", {}, fmt(f.test.ua)),
        h("td", {}, fmt(f.test.wa)),
        h("td", {}, fmt(f.test.macro_f1)),
        h("td", {}, fmt(f.validation.val_ua)),
        h("td", {}, fmt(f.params)),
        h("td", {}, fmt(f.latency_ms, 2)),
        h("td", {}, f.test_speakers.join(", ")),
      ),
    );
    const head = ["fold", "model", "state", "test UA", "test WA", "test F1", "val UA", "params", "latency ms", "test speakers"];
    replace(
      panel,
      h("h3", {}, "Folds"),
      rows.length
        ? h("table", { class: "grid", id: "folds-table" }, h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, "no fold has finished yet"),
      // Strategies that keep an Optuna study (one per fold) have it here, for optuna-dashboard to open.
      overview.optuna_storage
        ? h("p", { id: "optuna" }, "Optuna study: ", h("code", {}, `optuna-dashboard ${overview.optuna_storage}`))
        : null,
    );
  } catch (error) {
    replace(panel, h("h3", {}, "Folds"), errorBox(error));
  }
}

// ---------------------------------------------------------------- trials table

function trialsTable(panel, searchId) {
  // Keyset paging: `cursors` holds the cursor of each page shown so far, so "previous" goes back exactly.
  const state = { sort: "-id", state: "", stage: "", fold: "", minUa: "", cursors: [null], page: 0, selected: new Set() };
  const body = h("div", {});
  const select = (values, key, id) => {
    const element = h("select", { id }, values.map((v) => h("option", { value: v }, v || `any ${key}`)));
    element.addEventListener("change", () => ((state[key] = element.value), reset()));
    return element;
  };
  const minUa = h("input", { type: "number", id: "min-ua", step: "0.05", min: 0, max: 1, placeholder: "min UA" });
  minUa.addEventListener("change", () => ((state.minUa = minUa.value), reset()));
  const fold = h("input", { type: "number", id: "trial-fold", step: 1, min: 0, placeholder: "any fold" });
  fold.addEventListener("change", () => ((state.fold = fold.value), reset()));
  const compare = h("a", { class: "button", id: "compare", href: "#" }, "Compare selected");
  replace(
    panel,
    h("div", { class: "toolbar" }, h("h3", {}, "Trials"), select(STATES, "state", "trial-state"), select(STAGES, "stage", "trial-stage"), fold, minUa, compare),
    body,
  );

  function reset() {
    state.cursors = [null];
    state.page = 0;
    refresh();
  }

  let latest = 0; // the newest request: a live refresh still in flight must not draw over a newer sort or page
  async function refresh(live = false) {
    if (live && state.page > 0) return; // a live refresh must not move a reader who paged on
    const request = ++latest;
    try {
      const page = await get(`/searches/${searchId}/trials`, {
        sort: state.sort,
        state: state.state || null,
        stage: state.stage || null,
        fold: state.fold || null,
        min_ua: state.minUa || null,
        limit: TRIALS_PAGE,
        cursor: state.cursors[state.page],
      });
      if (request !== latest) return;
      state.cursors[state.page + 1] = page.next_cursor;
      draw(page);
    } catch (error) {
      if (request === latest) replace(body, errorBox(error));
    }
  }

  function header(name, column) {
    if (!column) return h("th", {}, name);
    const active = state.sort.replace("-", "") === column;
    const arrow = active ? (state.sort.startsWith("-") ? " ▼" : " ▲") : "";
    return h(
      "th",
      {
        class: "sortable",
        dataset: { sort: column },
        onclick: () => {
          state.sort = active && state.sort.startsWith("-") ? column : `-${column}`;
          reset();
        },
      },
      name + arrow,
    );
  }

  function draw(page) {
    const first = state.page * TRIALS_PAGE;
    const rows = page.items.map((t) => {
      const m = t.metrics || {};
      const box = h("input", { type: "checkbox", checked: state.selected.has(t.id) });
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(t.id);
        else state.selected.delete(t.id);
        compare.href = `#/compare/${[...state.selected].join(",")}`;
      });
      return h(
        "tr",
        { dataset: { trial: t.id, state: t.state } },
        h("td", {}, box),
        h("td", {}, h("a", { href: `#/trial/${t.id}` }, t.id)),
        h("td", {}, t.key),
        h("td", {}, h("span", { class: `badge ${t.state}` }, t.state)),
        h("td", {}, t.stage || "–"),
        h("td", {}, t.fold ?? "–"),
        h("td", { class: "ua" }, fmt(t.ua)),
        h("td", {}, fmt(t.wa)),
        h("td", { class: "f1" }, fmt(t.macro_f1)),
        h("td", {}, fmt(m.val_ua)),
        h("td", { class: "params" }, fmt(t.n_params)),
        h("td", { class: "latency" }, fmt(t.latency_ms, 2)),
      );
    });
    replace(
      body,
      h(
        "table",
        { class: "grid", id: "trials-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", {}, ""),
            header("id", SORTABLE.id),
            header("key"),
            header("state"),
            header("stage"),
            header("fold"),
            header("test UA", SORTABLE.ua),
            header("test WA", SORTABLE.wa),
            header("test F1", SORTABLE.f1),
            header("val UA"),
            header("params", SORTABLE.params),
            header("latency ms", SORTABLE.latency),
          ),
        ),
        h("tbody", {}, rows),
      ),
      h(
        "div",
        { class: "pager" },
        h("button", { id: "trials-prev", disabled: state.page === 0, onclick: () => (state.page--, refresh()) }, "‹ previous"),
        h("span", { id: "trials-range" }, ` ${page.total ? first + 1 : 0}–${first + page.items.length} of ${page.total} `),
        h("button", { id: "trials-next", disabled: !page.next_cursor, onclick: () => (state.page++, refresh()) }, "next ›"),
      ),
    );
  }

  return { refresh };
}

// ---------------------------------------------------------------- charts

function stageSelect(onChange, id) {
  const element = h("select", { id }, STAGES.map((s) => h("option", { value: s }, s || "every stage")));
  element.addEventListener("change", onChange);
  return element;
}

function curvesView(panel, searchId, go) {
  const ua = h("div", { class: "chart", id: "curve-score" });
  const loss = h("div", { class: "chart", id: "curve-loss" });
  const note = h("span", { class: "muted" });
  const stage = stageSelect(() => refresh(), "curves-stage");
  replace(
    panel,
    h("div", { class: "toolbar" }, h("h3", {}, "Learning curves"), stage, note),
    h("p", { class: "muted" }, "solid: complete or running (thicker) · dashed: pruned · dotted: failed"),
    h("div", { class: "two" }, ua, loss),
  );
  async function refresh() {
    try {
      const data = await get(`/searches/${searchId}/curves`, { metric: ["val_ua", "val_loss"], limit: CURVES, stage: stage.value || null });
      curvesChart(ua, data.trials, "val_ua", go);
      curvesChart(loss, data.trials, "val_loss", go);
      note.textContent = `${data.trials.length} newest of ${data.total} trials`;
    } catch (error) {
      note.textContent = error.message;
    }
  }
  return refresh;
}

// A chart panel with a score choice and a stage filter (and `choices`, e.g. the cost of the Pareto front).
function chartPanel(panel, title, draw, choices = {}) {
  const canvas = h("div", { class: "chart", id: `${panel.id}-chart` });
  const note = h("span", { class: "muted" });
  const score = h("select", { id: `${panel.id}-score` }, ["val_ua", "val_wa", "val_macro_f1", "ua", "wa", "macro_f1"].map((s) => h("option", { value: s }, s)));
  const stage = stageSelect(() => refresh(), `${panel.id}-stage`);
  const extra = Object.entries(choices).map(([name, values]) => {
    const element = h("select", { id: `${panel.id}-${name}`, dataset: { option: name } }, values.map((v) => h("option", { value: v }, v)));
    element.addEventListener("change", () => refresh());
    return element;
  });
  score.addEventListener("change", () => refresh());
  replace(panel, h("div", { class: "toolbar" }, h("h3", {}, title), score, ...extra, stage), canvas, note);
  async function refresh() {
    const options = { score: score.value, stage: stage.value || null };
    for (const element of extra) options[element.dataset.option] = element.value;
    try {
      note.textContent = await draw(canvas, options);
    } catch (error) {
      note.textContent = error.message;
    }
  }
  return refresh;
}

// Parallel coordinates over the hyperparameters (a trial's scalar params) that differ between trials.
async function drawParallel(panel, searchId) {
  const canvas = h("div", { class: "chart tall", id: "parallel-chart" });
  try {
    const page = await get(`/searches/${searchId}/trials`, { state: "complete", sort: "-id", limit: PARALLEL_TRIALS });
    const scored = page.items.filter((t) => typeof (t.metrics || {}).val_ua === "number");
    const names = [...new Set(scored.flatMap((t) => Object.keys(t.params)))].filter((name) => {
      const values = scored.map((t) => t.params[name]);
      return values.every((v) => v === undefined || ["number", "string", "boolean"].includes(typeof v)) && new Set(values.map(String)).size > 1;
    });
    if (!names.length) {
      replace(panel, h("h3", {}, "Hyperparameters"), h("p", { class: "muted" }, "no hyperparameter varies between the completed trials"));
      return;
    }
    const dimensions = names.map((name) => {
      const values = scored.map((t) => t.params[name]).filter((v) => v !== undefined);
      if (values.every((v) => typeof v === "number")) {
        const positive = values.every((v) => v > 0);
        return { name, log: positive && Math.max(...values) / Math.min(...values) > 100 };
      }
      return { name, categories: [...new Set(values.map(String))].sort() };
    });
    dimensions.push({ name: "val_ua" });
    const rows = scored.map((t) => [
      ...names.map((name, i) => (dimensions[i].categories ? String(t.params[name]) : (t.params[name] ?? null))),
      t.metrics.val_ua,
    ]);
    replace(panel, h("h3", {}, "Hyperparameters"), canvas, h("p", { class: "muted" }, `${rows.length} newest completed trials, coloured by val_ua`));
    parallelChart(canvas, dimensions, rows, "val_ua");
  } catch (error) {
    replace(panel, h("h3", {}, "Hyperparameters"), errorBox(error));
  }
}

// The genomes of the search: per trial, the cells its epochs derived (a DARTS supernet's, epoch by epoch, while it
// searches), then the genome it stored. A slider goes over them in that order (the architectures as they evolved),
// for every fold or the one chosen; a live refresh keeps the one on display unless it was the newest.
function genomesView(panel, searchId) {
  let shown = null; // [trial id, epoch] on display, or null to follow the newest
  const fold = h("input", { type: "number", id: "genome-fold", step: 1, min: 0, placeholder: "any fold" });
  const slider = h("input", { type: "range", id: "genome-slider", min: 0, max: 0, value: 0 });
  const label = h("span", { id: "genome-label" });
  const view = h("div", {});
  let genomes = [];
  const same = (stored) => shown !== null && stored.trial_id === shown[0] && stored.epoch === shown[1];
  const show = (i) => {
    const stored = genomes[i];
    shown = i === genomes.length - 1 ? null : [stored.trial_id, stored.epoch];
    replace(
      label,
      `${i + 1}/${genomes.length}: `,
      h("a", { href: `#/trial/${stored.trial_id}` }, stored.key),
      stored.epoch === null ? "" : ` epoch ${stored.epoch}`,
      stored.flags.length ? ` (${stored.flags.join(", ")})` : "",
    );
    replace(view, genomeView(stored.genome));
  };
  slider.addEventListener("input", () => show(Number(slider.value)));
  fold.addEventListener("change", () => ((shown = null), refresh()));
  const toolbar = h("div", { class: "toolbar" }, h("h3", {}, "Genomes"), fold, slider, label);

  let latest = 0; // the newest request: an older one (another fold) answering late is dropped
  async function refresh() {
    const request = ++latest;
    try {
      const answer = await get(`/searches/${searchId}/genomes`, { fold: fold.value || null });
      if (request !== latest) return;
      genomes = answer.genomes;
      if (!genomes.length) {
        replace(panel, toolbar, h("p", { class: "muted" }, "no genome stored yet"));
        replace(label);
        slider.max = 0;
        return;
      }
      const index = genomes.findIndex(same);
      slider.max = genomes.length - 1;
      slider.value = index < 0 ? genomes.length - 1 : index;
      replace(panel, toolbar, view);
      show(Number(slider.value));
    } catch (error) {
      if (request === latest) replace(panel, toolbar, errorBox(error));
    }
  }
  return refresh;
}
