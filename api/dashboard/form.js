// Form fields generated from JSON Schema (what GET /search-spaces serves), and the API's validation messages shown
// next to the fields they name. The browser validates nothing itself: the API is the one judge of a submission,
// so a value the browser cannot parse is sent as typed and the API says what is wrong with it.

import { h } from "./api.js";

// The schema behind a $ref, and the non-null alternative of an optional field (anyOf [X, null]).
function resolve(schema, defs) {
  let current = schema || {};
  let nullable = false;
  for (let i = 0; i < 5; i += 1) {
    if (current.$ref) {
      current = { ...defs[current.$ref.split("/").pop()], ...current, $ref: undefined };
    } else if (current.anyOf) {
      const options = current.anyOf.filter((option) => option.type !== "null");
      nullable = nullable || options.length < current.anyOf.length;
      if (options.length !== 1) break;
      current = { ...current, ...options[0], anyOf: undefined };
    } else break;
  }
  return { schema: current, nullable };
}

function itemKind(items) {
  if (!items || items.type === undefined) return items && items.enum ? "string" : null;
  return ["string", "integer", "number"].includes(items.type) ? items.type : null;
}

// What kind of input a property gets: number, boolean, choice, list (scalars, comma separated), text, or json.
function kindOf(schema) {
  if (schema.const !== undefined) return "const";
  if (schema.enum) return "choice";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "string") return "text";
  if (schema.type === "array" && !schema.prefixItems && itemKind(schema.items)) return "list";
  if (schema.type === "array" && schema.prefixItems && schema.prefixItems.every((item) => itemKind(item))) return "list";
  return "json";
}

function parseScalar(text, type) {
  if (type === "integer" || type === "number") {
    const number = Number(text);
    return text.trim() !== "" && Number.isFinite(number) ? number : text;
  }
  return text;
}

function showValue(kind, value) {
  if (value === null || value === undefined) return "";
  if (kind === "list") return value.join(", ");
  if (kind === "json") return JSON.stringify(value);
  return String(value);
}

// One field: {element, loc, read(), value default}. `loc` is the location the API names it by, e.g.
// ["body", "overrides", "options.search_epochs"] or ["body", "corpus", "root"].
export function schemaField(name, property, defs, loc, value, extra = {}) {
  const { schema, nullable } = resolve(property, defs);
  const kind = kindOf(schema);
  const id = `field-${loc.join("-").replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const help = schema.description || property.description || "";
  let input;
  if (kind === "boolean") {
    input = h("input", { type: "checkbox", id, checked: Boolean(value) });
  } else if (kind === "choice") {
    const options = nullable ? ["", ...schema.enum] : schema.enum;
    input = h("select", { id }, options.map((option) => h("option", { value: option, selected: option === value }, option || "(none)")));
  } else if (kind === "json") {
    input = h("textarea", { id, rows: 2, spellcheck: "false" });
    input.value = showValue(kind, value);
  } else if (kind === "const") {
    input = h("input", { type: "text", id, value: showValue(kind, value), readonly: true });
  } else {
    const type = kind === "number" ? "number" : "text";
    input = h("input", { type, id, step: kind === "number" ? "any" : null, list: extra.list || null });
    input.value = showValue(kind, value);
    if (nullable && kind !== "text") input.placeholder = "(none)";
  }

  function read() {
    if (kind === "boolean") return input.checked;
    if (kind === "const") return value;
    const text = input.value;
    if (text.trim() === "" && (nullable || kind === "list")) return nullable ? null : [];
    if (kind === "choice") return text;
    if (kind === "number") return parseScalar(text, schema.type);
    if (kind === "list") {
      const types = schema.prefixItems ? schema.prefixItems.map(itemKind) : null;
      return text.split(",").map((part, i) => parseScalar(part.trim(), types ? types[i] || "string" : itemKind(schema.items)));
    }
    if (kind === "json") {
      try {
        return JSON.parse(text);
      } catch {
        return text; // not JSON: the API says so, next to this field
      }
    }
    return text;
  }

  const label = extra.label || name;
  const element = h(
    "div",
    { class: `field field-${kind}`, dataset: { loc: loc.join(".") } },
    h("label", { for: id, title: help }, label),
    input,
    help ? h("small", { class: "help" }, help) : null,
    h("span", { class: "field-error", role: "alert" }),
  );
  return { element, loc, read, initial: value, name };
}

// The API's field errors next to the fields they name: each error goes to the field whose loc is the longest
// prefix of the error's loc; errors no field claims are returned, for the form to show at its top.
export function showFieldErrors(form, fields) {
  clearFieldErrors(form);
  const elements = [...form.querySelectorAll(".field[data-loc]")];
  const unclaimed = [];
  for (const field of fields) {
    const loc = field.loc.map(String);
    let best = null;
    let bestLength = 0;
    for (const element of elements) {
      const own = element.dataset.loc.split(".");
      // An override key holds dots itself: compare whole locs when the field's is an override.
      const target = own[1] === "overrides" ? [own[0], own[1], own.slice(2).join(".")] : own;
      const matches = target.every((part, i) => part === loc[i]) && target.length <= loc.length;
      if (matches && target.length > bestLength) {
        best = element;
        bestLength = target.length;
      }
    }
    if (best === null) {
      unclaimed.push(field);
      continue;
    }
    const slot = best.querySelector(".field-error");
    slot.textContent = slot.textContent ? `${slot.textContent}; ${field.msg}` : field.msg;
    best.classList.add("invalid");
  }
  return unclaimed;
}

export function clearFieldErrors(form) {
  for (const element of form.querySelectorAll(".field.invalid")) element.classList.remove("invalid");
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
}
