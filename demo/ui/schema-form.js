// The effect controls, built from /params/schema: one control per field, in the groups the
// engine publishes under `x-camfx-ui`, each shown only while it matters (its `when`). Sliders
// show their value. Both pages (serve's and `camfx camera`'s) use this form.

import { el } from "./dom.js";
import { FIELDS, prettyName } from "./field-meta.js";

export const UI_KEY = "x-camfx-ui";

// A field's schema with a $ref (pydantic's $defs) resolved and allOf / anyOf of one flattened.
function resolve(schema, spec) {
  let out = { ...spec };
  const ref = spec.$ref || (spec.allOf && spec.allOf.length === 1 && spec.allOf[0].$ref);
  if (ref) out = { ...((schema.$defs || {})[ref.split("/").pop()] || {}), ...spec };
  return out;
}

// True when `params` satisfies one of the alternatives (each a {field: [allowed values]}).
export function applies(when, params) {
  if (!when || !when.length) return true;
  return when.some((alt) => Object.entries(alt).every(([field, values]) => values.includes(params[field])));
}

function rangeOf(spec, meta) {
  const step = meta.step ?? spec.multipleOf ?? (spec.type === "integer" ? 1 : 0.01);
  const min = spec.minimum ?? (spec.exclusiveMinimum !== undefined ? spec.exclusiveMinimum + step : 0);
  const max = spec.maximum ?? (spec.exclusiveMaximum !== undefined ? spec.exclusiveMaximum - step : 100);
  return { min: +min.toFixed(6), max: +max.toFixed(6), step };
}

function kindOf(field, spec, meta) {
  if (meta.kind === "select" && !spec.enum) return "text";
  if (meta.kind) return meta.kind;
  if (spec.enum) return spec.enum.length <= 4 ? "segmented" : "select";
  if (spec.type === "boolean") return "checkbox";
  if (spec.type === "number" || spec.type === "integer") return "range";
  if (/colou?r$/.test(field)) return "color";
  return "text";
}

export class ControlForm {
  // root: a <form>; onChange(field, value, immediate): a control moved (immediate: let go / picked);
  // widgets: { kind: (field, spec, meta, change) => { element, set(value) } } for custom kinds.
  constructor(root, schema, { onChange, widgets = {} }) {
    this.root = root;
    this.schema = schema;
    this.ui = schema[UI_KEY] || {};
    this.onChange = onChange;
    this.widgets = widgets;
    this.entries = new Map(); // field -> { row, set(value), error }
    this.params = {};
    this.build();
  }

  get properties() {
    return this.schema.properties || {};
  }

  // The groups to show: the engine's, or one per field order when a server publishes none.
  groups() {
    const props = Object.keys(this.properties);
    const groups = (this.ui.groups || [{ name: "Controls", fields: props }])
      .map((g) => ({ ...g, fields: g.fields.filter((f) => this.properties[f]) }))
      .filter((g) => g.fields.length);
    const placed = new Set(groups.flatMap((g) => g.fields));
    const rest = props.filter((f) => !placed.has(f));
    if (rest.length) groups.push({ name: "Other", fields: rest, collapsed: true });
    return groups;
  }

  build() {
    this.root.replaceChildren();
    this.entries.clear();
    for (const group of this.groups()) {
      const box = el("details", { class: "group", open: !group.collapsed, dataset: { group: group.name } },
        el("summary", { text: group.name }));
      for (const field of group.fields) box.append(this.buildControl(field));
      if (group.name === "Effect") box.append(...this.unavailableNotes());
      this.root.append(box);
    }
    this.root.addEventListener("submit", (e) => e.preventDefault());
  }

  // Effects this server cannot run, and why (e.g. diffusion without its extra).
  unavailableNotes() {
    return Object.entries(this.ui.unavailable || {}).map(([effect, why]) =>
      el("p", { class: "hint unavailable", dataset: { effect }, text: `${prettyName(effect)} is off here: ${why}` }));
  }

  buildControl(field) {
    const spec = resolve(this.schema, this.properties[field]);
    if (field === "diffusion_model" && this.ui.diffusion_models) spec.enum = this.ui.diffusion_models;
    const meta = FIELDS[field] || {};
    const kind = kindOf(field, spec, meta);
    const label = meta.label || prettyName(field);
    const id = `f-${field}`;
    const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const row = el("div", { class: `field field-${kind}`, dataset: { field } });
    const change = (value, immediate) => this.onChange(field, value, immediate);
    const labelFor = (text) => el("label", { class: "field-label", for: id, text });
    const choiceText = (value) => (meta.labels && meta.labels[value]) || prettyName(String(value));
    let set;

    if (this.widgets[kind]) {
      const widget = this.widgets[kind](field, spec, { ...meta, id, label }, change);
      row.append(el("span", { class: "field-label", text: label }), widget.element);
      set = widget.set;
    } else if (kind === "segmented") {
      const off = this.ui.unavailable || {};
      const buttons = spec.enum.map((value) =>
        el("button", {
          type: "button", class: "seg", dataset: { value }, "aria-pressed": "false", text: choiceText(value),
          disabled: field === "effect" && value in off, title: field === "effect" ? off[value] : undefined,
          onclick: () => change(value, true),
        }));
      row.append(
        el("span", { class: "field-label", id: `${id}-label`, text: label }),
        el("div", { class: "segmented", role: "group", "aria-labelledby": `${id}-label`, id }, ...buttons),
      );
      set = (value) => buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.value === String(value))));
    } else if (kind === "select") {
      const select = el("select", { id, name: field, onchange: () => change(select.value, true) },
        ...spec.enum.map((value) => el("option", { value, text: choiceText(value) })));
      row.append(labelFor(label), select);
      set = (value) => { select.value = value; };
    } else if (kind === "range") {
      const { min, max, step } = rangeOf(spec, meta);
      const fmt = meta.fmt || ((v) => String(+v.toFixed(3)));
      const output = el("output", { for: id, class: "field-value" });
      const parse = (raw) => (spec.type === "integer" ? parseInt(raw, 10) : parseFloat(raw));
      const input = el("input", {
        type: "range", id, name: field, min, max, step,
        oninput: () => { output.textContent = fmt(parse(input.value)); change(parse(input.value), false); },
        onchange: () => change(parse(input.value), true),
      });
      row.append(el("div", { class: "field-head" }, labelFor(label), output), input);
      set = (value) => { input.value = value; output.textContent = fmt(Number(value)); };
    } else if (kind === "color") {
      const code = el("code", { class: "field-value" });
      const input = el("input", {
        type: "color", id, name: field,
        oninput: () => { code.textContent = input.value; change(input.value, false); },
        onchange: () => change(input.value, true),
      });
      row.append(el("div", { class: "field-head" }, labelFor(label), code), el("div", { class: "color-row" }, input));
      set = (value) => { input.value = value; code.textContent = value; };
    } else if (kind === "number") {
      const input = el("input", {
        type: "number", id, name: field, min: spec.minimum ?? 0, max: spec.maximum ?? "", step: 1,
        onchange: () => change(parseInt(input.value, 10), true),
      });
      row.append(labelFor(label), input);
      set = (value) => { input.value = value; };
    } else if (kind === "checkbox") {
      const input = el("input", { type: "checkbox", id, name: field, onchange: () => change(input.checked, true) });
      row.append(el("label", { class: "check" }, input, el("span", { text: label })));
      set = (value) => { input.checked = !!value; };
    } else {
      const input = el("input", { type: "text", id, name: field, onchange: () => change(input.value, true) });
      row.append(labelFor(label), input);
      set = (value) => { input.value = value ?? ""; };
    }
    const hint = meta.hint || (FIELDS[field] ? null : spec.description);
    if (hint) row.append(el("p", { class: "hint", text: hint }));
    row.append(error);
    this.entries.set(field, { row, set, error });
    return row;
  }

  // Show `params` (all or some fields) in the controls, then which of them apply.
  show(params, { skip = new Set() } = {}) {
    for (const [field, value] of Object.entries(params)) {
      if (skip.has(field)) continue;
      this.params[field] = value;
      const entry = this.entries.get(field);
      if (entry) entry.set(value);
    }
    this.refresh();
  }

  // One value changed here (the control already shows it, unless `echo`).
  note(field, value, echo = false) {
    this.params[field] = value;
    const entry = this.entries.get(field);
    if (entry && echo) entry.set(value);
    if (entry) entry.error.hidden = true;
    this.refresh();
  }

  // Only the controls that matter for the current params; a group with none left hides.
  refresh() {
    const when = this.ui.when || {};
    for (const [field, entry] of this.entries) entry.row.hidden = !applies(when[field], this.params);
    for (const box of this.root.querySelectorAll("details.group")) {
      box.hidden = ![...box.querySelectorAll(".field")].some((row) => !row.hidden);
    }
  }

  clearErrors() {
    for (const entry of this.entries.values()) entry.error.hidden = true;
  }

  // Errors from the server, next to the control they name; the rest returned for a general line.
  showErrors(errors) {
    const general = [];
    for (const err of errors || []) {
      const field = String(err.field || "").split(".")[0];
      const entry = this.entries.get(field);
      if (entry) {
        entry.error.textContent = err.message;
        entry.error.hidden = false;
        const group = entry.row.closest("details");
        if (group) group.open = true; // visible even if its group is folded
      } else {
        general.push(field ? `${field}: ${err.message}` : err.message);
      }
    }
    return general;
  }
}

// The defaults a new session gets: the server's (it may have been started with a preset), else
// the schema's.
export function defaultsOf(schema) {
  const out = {};
  for (const [field, spec] of Object.entries(schema.properties || {})) if ("default" in spec) out[field] = spec.default;
  return { ...out, ...((schema[UI_KEY] || {}).defaults || {}) };
}
