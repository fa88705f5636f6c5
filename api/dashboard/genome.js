// Genomes drawn by family. A family with cells (emoDARTS: normal, reduce and SeqNN cells) is drawn as graphs laid
// out by Cytoscape with dagre (vendor/, globals); every other family as the table of its architecture's fields.
// A new family with cells adds one entry to CELL_FAMILIES, not a page.

import { h } from "./api.js";

if (typeof cytoscapeDagre === "function" && typeof cytoscape === "function") cytoscape.use(cytoscapeDagre);

// family -> the architecture fields that hold cells ({nodes: [[{op, input}]], concat: [...]}), with their titles.
const CELL_FAMILIES = {
  emodarts: [
    ["normal", "normal cell"],
    ["reduce", "reduction cell"],
    ["seq", "SeqNN cell"],
  ],
};

const COLLAPSE_FLAG = "seq_collapsed_to_skip_connect"; // nas.genome.SEQ_COLLAPSE_FLAG

export function genomeView(genome) {
  const architecture = genome.architecture || {};
  const cells = CELL_FAMILIES[architecture.family];
  const flags = genome.flags || [];
  return h(
    "div",
    { class: "genome" },
    h(
      "p",
      { class: "genome-meta" },
      `family ${architecture.family || "?"}`,
      genome.classes ? ` · classes ${genome.classes.join(", ")}` : "",
      ...flags.map((flag) =>
        h("span", { class: "flag", title: flag === COLLAPSE_FLAG ? "every SeqNN edge became skip_connect" : flag }, flag),
      ),
    ),
    cells ? cellGraphs(architecture, cells) : fieldsTable(architecture),
  );
}

function cellGraphs(architecture, cells) {
  const row = h("div", { class: "cells" });
  for (const [field, title] of cells) {
    if (!architecture[field]) continue;
    const canvas = h("div", { class: "cell-graph", dataset: { cell: field } });
    row.append(h("figure", {}, h("figcaption", {}, title), canvas));
    // Drawn once the element is in the page: Cytoscape needs its size.
    requestAnimationFrame(() => drawCell(canvas, architecture[field]));
  }
  return row;
}

// A DARTS cell: inputs c_{k-2} and c_{k-1}, intermediate nodes, each edge labelled with its op, and the output
// concatenating the nodes in `concat`.
export function cellElements(cell) {
  const elements = [
    { data: { id: "s0", label: "c_{k-2}", kind: "input" } },
    { data: { id: "s1", label: "c_{k-1}", kind: "input" } },
    { data: { id: "out", label: "c_{k}", kind: "output" } },
  ];
  cell.nodes.forEach((edges, i) => {
    const node = i + 2;
    elements.push({ data: { id: `s${node}`, label: String(node - 2), kind: "node" } });
    edges.forEach((edge, j) => {
      elements.push({ data: { id: `e${node}-${j}`, source: `s${edge.input}`, target: `s${node}`, label: edge.op } });
    });
  });
  for (const node of cell.concat) elements.push({ data: { id: `c${node}`, source: `s${node}`, target: "out", label: "" } });
  return elements;
}

function drawCell(container, cell) {
  if (!container.isConnected) return;
  container._cy = cytoscape({
    container,
    elements: cellElements(cell),
    layout: { name: "dagre", rankDir: "LR", nodeSep: 20, rankSep: 70 },
    userZoomingEnabled: false,
    boxSelectionEnabled: false,
    style: [
      {
        selector: "node",
        style: {
          label: "data(label)",
          "text-valign": "center",
          "font-size": 11,
          width: 44,
          height: 26,
          shape: "round-rectangle",
          "background-color": "#d0ebff",
          "border-width": 1,
          "border-color": "#1971c2",
        },
      },
      { selector: "node[kind = 'input']", style: { "background-color": "#d3f9d8", "border-color": "#2f9e44" } },
      { selector: "node[kind = 'output']", style: { "background-color": "#fff3bf", "border-color": "#f08c00" } },
      {
        selector: "edge",
        style: {
          label: "data(label)",
          "font-size": 9,
          "text-rotation": "autorotate",
          "text-background-color": "#fff",
          "text-background-opacity": 0.8,
          "curve-style": "bezier",
          "target-arrow-shape": "triangle",
          width: 1.2,
          "line-color": "#868e96",
          "target-arrow-color": "#868e96",
        },
      },
      { selector: "edge[label = 'skip_connect']", style: { "line-style": "dashed" } },
    ],
  });
}

function fieldsTable(architecture) {
  const rows = Object.entries(architecture).map(([name, value]) =>
    h("tr", {}, h("th", {}, name), h("td", {}, typeof value === "object" ? JSON.stringify(value) : String(value))),
  );
  return h("table", { class: "fields" }, h("tbody", {}, rows));
}
