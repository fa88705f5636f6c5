// The searches: a table of every search (status, progress, best validation UA, test UA over folds, time, GPUs,
// cancel and resume) refreshed every few seconds, and the form that submits a new one.

import { ApiError, duration, errorBox, fmt, get, h, post, replace } from "./api.js";
import { clearFieldErrors, schemaField, showFieldErrors } from "./form.js";

const PAGE = 25;
const REFRESH_MS = 4000;
const SECTIONS = ["space", "features", "options"];

export function searchesView(root, { refreshToken }) {
  const state = { offset: 0, status: "" };
  const table = h("div", { id: "searches" });
  const statusFilter = h(
    "select",
    { id: "status-filter", onchange: () => ((state.status = statusFilter.value), (state.offset = 0), refresh()) },
    ["", "queued", "running", "completed", "failed", "cancelled"].map((s) => h("option", { value: s }, s || "any status")),
  );
  const formSlot = h("section", { id: "submit", class: "panel" });
  replace(
    root,
    h("section", { class: "panel" }, h("div", { class: "toolbar" }, h("h2", {}, "Searches"), statusFilter), table),
    formSlot,
  );

  async function refresh() {
    try {
      const page = await get("/searches", { limit: PAGE, offset: state.offset, status: state.status || null });
      const ids = page.items.map((s) => s.id);
      const best = ids.length ? (await get("/best-scores", { search_id: ids })).best : {};
      replace(table, searchesTable(page, best, { refresh, refreshToken }), pager(page));
    } catch (error) {
      replace(table, errorBox(error));
    }
  }

  function pager(page) {
    const last = Math.min(page.offset + page.items.length, page.total);
    return h(
      "div",
      { class: "pager" },
      h("button", { disabled: page.offset === 0, onclick: () => ((state.offset -= PAGE), refresh()) }, "‹ newer"),
      ` ${page.total ? page.offset + 1 : 0}–${last} of ${page.total} `,
      h("button", { disabled: last >= page.total, onclick: () => ((state.offset += PAGE), refresh()) }, "older ›"),
    );
  }

  refresh();
  submitForm(formSlot, refresh, refreshToken);
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

function searchesTable(page, best, { refresh, refreshToken }) {
  const head = ["name", "strategy", "preset", "corpus", "status", "progress", "best val UA", "test UA", "elapsed", "GPUs", ""];
  return h(
    "table",
    { class: "grid", id: "searches-table" },
    h("thead", {}, h("tr", {}, head.map((name) => h("th", {}, name)))),
    h(
      "tbody",
      {},
      page.items.map((search) =>
        h(
          "tr",
          { dataset: { search: search.id, status: search.status } },
          h("td", {}, h("a", { href: `#/search/${search.id}` }, search.name)),
          h("td", {}, search.strategy),
          h("td", {}, search.preset || "–"),
          h("td", { title: search.spec.corpus.root }, search.spec.corpus.name),
          h("td", { class: "status" }, statusBadge(search)),
          h("td", {}, progressText(search.progress)),
          h("td", { class: "best" }, fmt(best[search.id])),
          h("td", { class: "test-ua" }, meanStd(search.summary, "ua")),
          h("td", {}, duration(search.progress && search.progress.elapsed_seconds)),
          h("td", {}, fmt(search.spec.gpus)),
          h("td", {}, actions(search, refresh, refreshToken)),
        ),
      ),
    ),
  );
}

export function statusBadge(search) {
  const cancelling = search.cancel_requested && search.status === "running";
  return h("span", { class: `badge ${search.status}` }, cancelling ? "cancelling" : search.status);
}

export function meanStd(summary, key) {
  if (!summary || summary[`${key}_mean`] === undefined) return "–";
  return `${fmt(summary[`${key}_mean`])} ± ${fmt(summary[`${key}_std`])}`;
}

export function progressText(progress) {
  if (!progress) return "–";
  const trials = progress.trials;
  const done = (trials.complete || 0) + (trials.pruned || 0);
  const total = Object.values(trials).reduce((a, b) => a + b, 0);
  const parts = [`${done}/${total} trials`];
  if (progress.folds_total) parts.push(`${progress.folds_done}/${progress.folds_total} folds`);
  for (const running of progress.running) parts.push(`${running.key} epoch ${running.epoch ?? 0}`);
  if (progress.estimate) parts.push(`~${duration(progress.estimate.seconds)} left`);
  return parts.join(" · ");
}

// Cancel and resume, offered when the API's links say the action does something in this status.
export function actions(search, refresh, refreshToken) {
  const act = (what) => async (event) => {
    event.target.disabled = true;
    try {
      await post(search.links[what]);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) refreshToken(error.message);
      else alert(error.message);
    }
    refresh();
  };
  return h(
    "span",
    { class: "actions" },
    search.links.cancel && !search.cancel_requested ? h("button", { class: "cancel", onclick: act("cancel") }, "Cancel") : null,
    search.links.resume ? h("button", { class: "resume", onclick: act("resume") }, "Resume") : null,
    search.links.export ? h("a", { class: "button", href: search.links.export, download: true }, "Export") : null,
  );
}

// ---------------------------------------------------------------- the submission form

async function submitForm(slot, refreshList, refreshToken) {
  let catalog;
  let datasets;
  try {
    [catalog, datasets] = await Promise.all([get("/search-spaces"), get("/datasets")]);
  } catch (error) {
    replace(slot, h("h2", {}, "New search"), errorBox(error));
    return;
  }
  const strategies = Object.fromEntries(catalog.strategies.map((s) => [s.name, s]));
  const roots = datasets.data_roots.flatMap((root) =>
    [...root.folders, ...root.manifests].map((name) => `${root.path.replace(/\/$/, "")}/${name}`),
  );
  const rootList = h("datalist", { id: "corpus-roots" }, roots.map((path) => h("option", { value: path })));

  const strategySelect = h("select", { id: "strategy" }, catalog.strategies.map((s) => h("option", { value: s.name }, s.name)));
  const presetSelect = h("select", { id: "preset" });
  const description = h("p", { class: "help" });
  const general = h("div", { class: "fields" });
  const overrides = h("div", { class: "sections" });
  const message = h("div", { class: "form-message", role: "status" });
  const form = h(
    "form",
    { id: "search-form", novalidate: true, onsubmit: (event) => (event.preventDefault(), submit()) },
    h(
      "div",
      { class: "fields" },
      h("div", { class: "field", dataset: { loc: "body.strategy" } }, h("label", { for: "strategy" }, "strategy"), strategySelect, h("span", { class: "field-error" })),
      h("div", { class: "field", dataset: { loc: "body.preset" } }, h("label", { for: "preset" }, "preset"), presetSelect, h("span", { class: "field-error" })),
    ),
    description,
    general,
    h("details", { open: true }, h("summary", {}, "Preset values (changed ones are sent as overrides)"), overrides),
    h("div", { class: "toolbar" }, h("button", { type: "submit", id: "submit-search" }, "Submit search"), message),
    rootList,
  );
  replace(slot, h("h2", {}, "New search"), form);

  let fields = [];
  let sectionFields = [];

  function build() {
    const strategy = strategies[strategySelect.value];
    if (presetSelect.dataset.strategy !== strategy.name) {
      replace(presetSelect, strategy.presets.map((p) => h("option", { value: p.name }, p.name)));
      presetSelect.dataset.strategy = strategy.name;
    }
    const preset = strategy.presets.find((p) => p.name === presetSelect.value) || strategy.presets[0];
    description.textContent = preset ? preset.description : strategy.description;
    const defs = strategy.json_schema.$defs || {};
    const spec = strategy.json_schema.properties;
    const kept = Object.fromEntries(fields.map((f) => [f.loc.join("."), f.read()])); // typed values survive a switch
    const value = (loc, fallback) => (loc in kept ? kept[loc] : fallback);
    const corpus = resolveDef(spec.corpus, defs);
    const folds = resolveDef(spec.folds, defs);
    fields = [
      schemaField("name", { type: "string", description: "a label for people" }, defs, ["body", "name"], value("body.name", "")),
      schemaField("corpus", corpus.properties.name, defs, ["body", "corpus", "name"], value("body.corpus.name", "ravdess"), {
        list: null,
      }),
      schemaField("corpus root", corpus.properties.root, defs, ["body", "corpus", "root"], value("body.corpus.root", roots[0] || ""), {
        list: "corpus-roots",
      }),
      schemaField("classes", corpus.properties.classes, defs, ["body", "corpus", "classes"], value("body.corpus.classes", null)),
      schemaField("speakers", corpus.properties.speakers, defs, ["body", "corpus", "speakers"], value("body.corpus.speakers", null)),
      schemaField("folds", folds.properties.n_folds, defs, ["body", "folds", "n_folds"], value("body.folds.n_folds", folds.properties.n_folds.default)),
      schemaField("only folds", folds.properties.only, defs, ["body", "folds", "only"], value("body.folds.only", null)),
      schemaField("seed", spec.seed, defs, ["body", "seed"], value("body.seed", spec.seed.default ?? 0)),
      schemaField("device", spec.device, defs, ["body", "device"], value("body.device", spec.device.default)),
      schemaField("GPUs", spec.gpus, defs, ["body", "gpus"], value("body.gpus", spec.gpus.default ?? 0)),
    ];
    // The corpus readers by name, from GET /datasets: a choice rather than free text.
    const corpusInput = fields[1].element.querySelector("input");
    const names = datasets.corpora.map((c) => c.name);
    const corpusSelect = h("select", { id: corpusInput.id }, names.map((n) => h("option", { value: n, selected: n === corpusInput.value }, n)));
    corpusInput.replaceWith(corpusSelect);
    fields[1].read = () => corpusSelect.value;
    replace(general, fields.map((f) => f.element));

    sectionFields = [];
    const groups = [];
    for (const section of SECTIONS) {
      const schema = preset && preset.json_schema[section];
      if (!schema) continue;
      const defaults = preset.defaults[section] || {};
      const items = Object.entries(schema.properties).map(([name, property]) =>
        schemaField(name, property, schema.$defs || {}, ["body", "overrides", `${section}.${name}`], defaults[name]),
      );
      sectionFields.push(...items);
      groups.push(h("fieldset", { dataset: { section } }, h("legend", {}, section), items.map((f) => f.element)));
    }
    replace(overrides, groups);
  }

  function body() {
    const data = { strategy: strategySelect.value, preset: presetSelect.value, overrides: {} };
    for (const field of fields) {
      const [, first, second] = field.loc;
      const value = field.read();
      if (second === undefined) data[first] = value;
      else if (value !== null) (data[first] = data[first] || {})[second] = value;
    }
    for (const field of sectionFields) {
      const value = field.read();
      if (JSON.stringify(value) !== JSON.stringify(field.initial ?? null)) data.overrides[field.loc[2]] = value;
    }
    return data;
  }

  async function submit() {
    clearFieldErrors(form);
    replace(message, "submitting…");
    try {
      const search = await post("/searches", body());
      replace(message, "queued: ", h("a", { href: `#/search/${search.id}`, id: "submitted" }, search.name));
      refreshList();
    } catch (error) {
      if (!(error instanceof ApiError)) {
        replace(message, errorBox(error));
        return;
      }
      if (error.status === 401 || error.status === 403) refreshToken(error.message);
      const unclaimed = showFieldErrors(form, error.fields);
      replace(
        message,
        h("div", { class: "error", role: "alert" }, error.message),
        unclaimed.map((f) => h("div", { class: "error" }, `${f.loc.join(".")}: ${f.msg}`)),
      );
    }
  }

  strategySelect.addEventListener("change", build);
  presetSelect.addEventListener("change", build);
  build();
}

function resolveDef(property, defs) {
  const ref = property.$ref || (property.anyOf || []).map((o) => o.$ref).find(Boolean);
  return ref ? defs[ref.split("/").pop()] : property;
}
