// Presets: a named set of effect params. Saved in this browser (localStorage) and on the server
// (PUT /presets/NAME, the user's presets file), so `camfx serve --preset NAME` and
// `camfx camera --preset NAME` can start with one; loading one applies it at once.

import { el, fetchJSON, networkMessage } from "./dom.js";

const STORAGE_KEY = "camfx-presets";
const NAME = /^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$/; // engine/presets.py NAME
const NOT_SAVED = new Set(["probe"]); // a measurement switch, not a look

function readLocal() {
  try {
    const data = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
    return data && typeof data === "object" ? data : {};
  } catch (_) {
    return {};
  }
}

function writeLocal(presets) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify(presets));
}

export class Presets {
  // getParams(): the params the controls show; apply(params): set them (all at once).
  constructor({ getParams, apply }) {
    this.getParams = getParams;
    this.apply = apply;
    this.server = {}; // name -> params, from GET /presets
    this.select = el("select", { id: "preset-select", "aria-label": "Presets", onchange: () => this.load(this.select.value) });
    this.name = el("input", {
      type: "text", id: "preset-name", placeholder: "Name", maxlength: 40, size: 10, "aria-label": "Preset name",
      onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); this.save(); } },
    });
    this.note = el("p", { class: "hint", id: "preset-note", "aria-live": "polite" });
    this.element = el("div", { class: "presets", id: "presets" },
      el("div", { class: "presets-row" },
        this.select,
        el("button", { type: "button", class: "btn btn-small", id: "preset-delete", text: "Delete", onclick: () => this.remove() })),
      el("div", { class: "presets-row" },
        this.name,
        el("button", { type: "button", class: "btn btn-small", id: "preset-save", text: "Save", onclick: () => this.save() })),
      this.note);
  }

  all() {
    return { ...this.server, ...readLocal() };
  }

  async refresh() {
    try {
      const { ok, body } = await fetchJSON("/presets");
      if (ok && body && body.presets) this.server = body.presets;
    } catch (_) {
      /* this browser's own presets still work */
    }
    this.render();
  }

  render(selected = "") {
    const names = Object.keys(this.all()).sort((a, b) => a.localeCompare(b));
    this.select.replaceChildren(
      el("option", { value: "", text: names.length ? "Load a preset…" : "No presets yet" }),
      ...names.map((name) => el("option", { value: name, text: name })));
    this.select.value = selected;
  }

  say(text) {
    this.note.textContent = text;
  }

  load(name) {
    const params = this.all()[name];
    if (!params) return;
    this.apply(params);
    this.name.value = name;
    this.say(`Loaded “${name}”.`);
  }

  async save() {
    const name = this.name.value.trim();
    if (!NAME.test(name)) {
      this.say("A preset name is 1 to 40 letters, digits, spaces, '_', '-' or '.'.");
      return;
    }
    const params = Object.fromEntries(Object.entries(this.getParams()).filter(([field]) => !NOT_SAVED.has(field)));
    writeLocal({ ...readLocal(), [name]: params });
    this.render(name);
    try {
      const { ok, status, body } = await fetchJSON(`/presets/${encodeURIComponent(name)}`, {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params),
      });
      if (!ok) {
        const why = (body && body.errors && body.errors.map((e) => `${e.field}: ${e.message}`).join("; "))
          || (body && body.error) || `HTTP ${status}`;
        throw new Error(why);
      }
      this.server[name] = body.params;
      this.say(`Saved “${name}”: here and for --preset ${name.includes(" ") ? `"${name}"` : name}.`);
    } catch (err) {
      this.say(`Saved “${name}” in this browser only (the server did not keep it: ${networkMessage(err)}).`);
    }
  }

  async remove() {
    const name = this.select.value;
    if (!name) return;
    const local = readLocal();
    delete local[name];
    writeLocal(local);
    delete this.server[name];
    try {
      await fetchJSON(`/presets/${encodeURIComponent(name)}`, { method: "DELETE" });
    } catch (_) {
      /* gone from this browser at least */
    }
    this.render();
    this.say(`Deleted “${name}”.`);
  }
}
