// The REST API and the live event stream, as the page uses them; and small DOM helpers.
// Every error the API returns has one shape ({error: {type, message, fields: [{loc, msg}]}}): ApiError keeps it.

const TOKEN_KEY = "sernas.token";

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || "error";
    this.fields = error.fields || [];
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// A query string from an object; array values repeat the key, null and undefined are left out.
function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error || { message: response.statusText });
  return data;
}

export const get = (path, params) => request("GET", path + query(params));
export const post = (path, body) => request("POST", path, body);

// Follow a search's Server-Sent Events; `handlers` maps event types (status, log, trial, epoch, end) to callbacks
// that get the parsed data. The stream closes itself at `end`, so the browser does not reconnect to a finished
// search. Returns a function that closes it.
export function follow(searchId, handlers) {
  const source = new EventSource(`/searches/${encodeURIComponent(searchId)}/events`);
  for (const kind of ["status", "log", "trial", "epoch", "end"]) {
    source.addEventListener(kind, (event) => {
      const data = JSON.parse(event.data);
      if (kind === "end") source.close();
      if (handlers[kind]) handlers[kind](data);
    });
  }
  return () => source.close();
}

// ---------------------------------------------------------------- DOM

// h("a", {href: "#/", class: "x", onclick: f}, "text", child, ...): an element; text children are text nodes,
// so data from the API is never parsed as HTML.
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(digits);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, error instanceof ApiError ? error.message : String(error));
}

// Calls `refresh` at most once per `ms`, however often `schedule` is called (live events come in bursts).
export function debounced(refresh, ms) {
  let timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      refresh();
    }, ms);
  };
}
