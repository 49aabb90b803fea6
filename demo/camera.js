// camfx camera's control page: every effect parameter (from /params/schema), applied live with
// POST /params; the output's preview and the run's stats. No dependencies.
"use strict";

(() => {
  const form = document.getElementById("controls");
  const statsBox = document.getElementById("stats");
  const inputs = new Map();
  let pending = {};
  let timer = null;

  function control(field, spec, value) {
    const label = document.createElement("label");
    label.dataset.field = field;
    const title = document.createElement("span");
    title.textContent = field.replace(/_/g, " ");
    label.append(title);
    let input;
    if (spec.enum) {
      input = document.createElement("select");
      for (const option of spec.enum) input.append(new Option(option, option));
    } else if (spec.type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
    } else if (spec.type === "number" || spec.type === "integer") {
      input = document.createElement("input");
      input.type = "range";
      input.min = spec.minimum ?? spec.exclusiveMinimum ?? 0;
      input.max = spec.maximum ?? spec.exclusiveMaximum ?? 100;
      input.step = spec.type === "integer" ? (spec.multipleOf || 1) : 0.01;
    } else {
      input = document.createElement("input");
      input.type = /color$/.test(field) ? "color" : "text";
    }
    input.name = field;
    set(input, value);
    input.addEventListener(input.type === "text" ? "change" : "input", () => change(field, read(input, spec)));
    label.append(input);
    if (spec.description) {
      const hint = document.createElement("small");
      hint.textContent = spec.description;
      label.append(hint);
    }
    const error = document.createElement("div");
    error.className = "error";
    label.append(error);
    inputs.set(field, { input, error, spec });
    return label;
  }

  function read(input, spec) {
    if (input.type === "checkbox") return input.checked;
    if (spec.type === "number") return parseFloat(input.value);
    if (spec.type === "integer") return parseInt(input.value, 10);
    return input.value;
  }

  function set(input, value) {
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value;
  }

  function change(field, value) {
    pending[field] = value;
    clearTimeout(timer);
    timer = setTimeout(send, 120); // a slider drag becomes a few updates, not hundreds
  }

  async function send() {
    const patch = pending;
    pending = {};
    for (const { error } of inputs.values()) error.textContent = "";
    const response = await fetch("/params", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(patch),
    });
    const body = await response.json();
    if (response.ok) return;
    for (const e of body.errors || []) {
      const target = inputs.get(e.field);
      if (target) target.error.textContent = e.message;
    }
  }

  async function pollStats() {
    try {
      const s = await (await fetch("/stats")).json();
      statsBox.textContent = `${s.source}: ${s.fps_in} fps in, ${s.fps_out} fps out` +
        (s.latency_ms_p50 !== null ? `, latency p50 ${s.latency_ms_p50} ms` : "") +
        `, dropped ${s.frames_dropped}` + (s.paused ? " (paused: nobody watches)" : "") +
        (s.state ? ` [${s.state}]` : "");
    } catch (err) {
      statsBox.textContent = "camfx camera has stopped.";
    }
  }

  async function init() {
    const [schema, params] = await Promise.all([
      fetch("/params/schema").then((r) => r.json()), fetch("/params").then((r) => r.json()),
    ]);
    for (const [field, spec] of Object.entries(schema.properties || {})) {
      const resolved = spec.$ref ? schema.$defs[spec.$ref.split("/").pop()] : spec;
      form.append(control(field, { ...resolved, ...spec }, params[field]));
    }
    setInterval(pollStats, 1000);
    pollStats();
  }

  init();
})();
