// Small DOM and HTTP helpers shared by camfx's pages. No dependencies.

export const $ = (id) => document.getElementById(id);

// el("button", { class: "btn", text: "Go", onclick }, child...): attributes, listeners, children.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// A server started with --token wants it on every API call: asked once, kept for this tab.
const TOKEN_KEY = "camfx-token";

export function authorized(options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return options;
  return { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` } };
}

// fetch + JSON: { ok, status, body }. A network failure throws (see `networkMessage`).
export async function fetchJSON(url, options, retried = false) {
  const response = await fetch(url, authorized(options));
  if (response.status === 401 && !retried) {
    const token = window.prompt("This camfx server needs its token (the one it was started with):");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token.trim());
      return fetchJSON(url, options, true);
    }
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  return { ok: response.ok, status: response.status, body };
}

// What a failed request means to a person: the browser's own words ("Failed to fetch",
// "NetworkError when attempting to fetch resource.") say nothing to most people.
export function networkMessage(err) {
  if (err instanceof TypeError || /fetch|network/i.test(String(err && err.message))) {
    return "The server is not answering.";
  }
  return (err && err.message) || String(err);
}

export const fmtMs = (v) => (v == null || Number.isNaN(v) ? "–" : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);
export const fmtFps = (v) => (v == null || Number.isNaN(v) ? "–" : `${v.toFixed(v < 10 ? 1 : 0)} fps`);
export const fmtRate = (v) => (v == null || Number.isNaN(v) ? "–" : `${v.toFixed(v < 10 ? 1 : 0)}/s`);
