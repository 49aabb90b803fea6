// `camfx camera`'s control page: the serve page's controls (the same form, background picker and
// presets, from the same /params/schema), applied live with POST /params; the output's preview
// as the picture, and the run's stats behind one click.

import { BackgroundPicker } from "./background-picker.js";
import { $, fetchJSON, fmtFps, fmtMs, networkMessage } from "./dom.js";
import { Presets } from "./presets.js";
import { ControlForm } from "./schema-form.js";
import { renderStages } from "./stats.js";

const SEND_EVERY_MS = 120; // a slider drag becomes a few updates, not hundreds
const STATS_EVERY_MS = 1000;

const state = { status: "connecting", params: {}, errors: {}, lastStats: null, ready: false, schema: null };
window.camfxCamera = state; // for tests and for looking at it in devtools

let form = null;
let pending = {};
let timer = null;
let inflight = 0;
const picker = new BackgroundPicker({
  onPick: (id) => {
    change("background", "image", true);
    change("background_image", id, true);
  },
});

const STATUS_TEXT = {
  connecting: "Connecting…", live: "Live", paused: "Paused: nobody watches", gone: "Not answering",
};

function setStatus(status, banner = "") {
  state.status = status;
  $("status").dataset.state = status === "live" || status === "paused" ? "live" : status === "gone" ? "error" : "connecting";
  $("status").textContent = STATUS_TEXT[status] || status;
  $("banner-text").textContent = banner;
  $("banner").hidden = !banner;
}

function setSync(mode) {
  $("sync").dataset.state = mode;
  $("sync").textContent = { live: "live", pending: "sending…" }[mode] || mode;
}

function change(field, value, immediate) {
  state.params[field] = value;
  delete state.errors[field];
  form.note(field, value, immediate);
  $("effect-badge").textContent = state.params.effect || "";
  queue({ [field]: value }, immediate);
}

function queue(patch, immediate) {
  Object.assign(pending, patch);
  setSync("pending");
  clearTimeout(timer);
  timer = setTimeout(send, immediate ? 0 : SEND_EVERY_MS);
}

async function send() {
  timer = null;
  const patch = pending;
  pending = {};
  if (!Object.keys(patch).length) return;
  inflight += 1;
  let answer;
  try {
    answer = await fetchJSON("/params", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(patch),
    });
  } catch (err) {
    answer = { ok: false, body: { errors: [{ field: "", message: networkMessage(err) }] } };
  }
  inflight -= 1;
  const settled = inflight === 0 && !timer && !Object.keys(pending).length;
  if (answer.ok) {
    state.errors = {};
    form.clearErrors();
    $("controls-error").hidden = true;
    if (settled) show(answer.body); // never snap a slider back mid-drag
  } else {
    const errors = (answer.body && answer.body.errors) || [{ field: "", message: (answer.body && answer.body.error) || "refused" }];
    for (const e of errors) state.errors[String(e.field || "").split(".")[0] || "_"] = e.message;
    const general = form.showErrors(errors);
    $("controls-error").textContent = general.join("; ");
    $("controls-error").hidden = !general.length;
    if (settled) refetchParams(); // the values the camera kept
  }
  if (settled) setSync("live");
}

async function refetchParams() {
  try {
    const { ok, body } = await fetchJSON("/params");
    if (ok) show(body);
  } catch (_) {
    /* the stats poll says the camera is gone */
  }
}

function show(params) {
  Object.assign(state.params, params);
  form.show(params);
  $("effect-badge").textContent = state.params.effect || "";
}

function applyPreset(params) {
  const known = Object.fromEntries(Object.entries(params).filter(([field]) => field in state.params));
  show(known);
  queue(known, true);
}

// ---- the preview and the run's stats ----
function startPreview() {
  const img = $("preview");
  img.onload = () => { $("picture-empty").hidden = true; fitPicture(); };
  img.onerror = () => { $("picture-empty").hidden = false; };
  img.src = `/preview.mjpg?t=${Date.now()}`; // a fresh stream after the camera comes back
}

function fitPicture() {
  const img = $("preview");
  if (img.naturalWidth && img.naturalHeight) {
    $("picture").style.setProperty("--ar", (img.naturalWidth / img.naturalHeight).toFixed(4));
  }
}

function renderStats(s) {
  state.lastStats = s;
  $("source").textContent = s.source || "";
  $("cs-fps-in").textContent = fmtFps(s.fps_in);
  $("cs-fps-out").textContent = fmtFps(s.fps_out);
  $("cs-latency").textContent = fmtMs(s.latency_ms_p50);
  $("cs-dropped").textContent = s.frames_dropped != null ? s.frames_dropped.toLocaleString() : "–";
  $("cs-quality").textContent = s.quality || "–";
  $("cs-mode").textContent = s.mode || "–";
  $("cs-outputs").textContent = Object.entries(s.outputs || {})
    .map(([name, o]) => `${name}: ${o.written} written, ${o.dropped} dropped${o.error ? ` · ${o.error}` : ""}`).join(" · ");
  renderStages($("cs-stages"), s.stage_ms, null);
  $("cs-runtime").textContent = Object.entries(s.runtimes || {}).map(([model, r]) => `${model} on ${r.runtime || r}`).join(" · ");
  const summary = [`${fmtFps(s.fps_out)} out`];
  if (s.latency_ms_p50 != null) summary.push(`latency ${fmtMs(s.latency_ms_p50)}`);
  if (s.quality && s.quality !== "full") summary.push(`quality: ${s.quality}`);
  if (s.warning) summary.push(s.warning);
  $("stats-summary").textContent = summary.join(" · ");
}

async function pollStats() {
  try {
    const { ok, body } = await fetchJSON("/stats");
    if (!ok || !body) throw new Error("no stats");
    const wasGone = state.status === "gone";
    renderStats(body);
    setStatus(body.paused ? "paused" : "live");
    $("picture-text").textContent = body.paused ? "Paused: no application has the virtual camera open" : "Waiting for the first frame…";
    if (wasGone) {
      startPreview();
      refetchParams();
    }
  } catch (err) {
    setStatus("gone", "camfx camera is not answering: it has stopped, or is restarting. Trying again every second.");
    $("picture-text").textContent = "camfx camera is not answering…";
    $("picture-empty").hidden = false;
  }
}

async function init() {
  let params;
  try {
    const [schema, current] = await Promise.all([fetchJSON("/params/schema"), fetchJSON("/params")]);
    if (!schema.ok || !current.ok) throw new Error(`HTTP ${schema.ok ? current.status : schema.status}`);
    state.schema = schema.body;
    params = current.body;
  } catch (err) {
    $("controls").textContent = `Could not load the controls: ${networkMessage(err)}`;
    setInterval(pollStats, STATS_EVERY_MS);
    return;
  }
  form = new ControlForm($("controls"), state.schema, {
    onChange: change, widgets: { background: () => picker.widget() },
  });
  show(params);
  const presets = new Presets({ getParams: () => ({ ...state.params }), apply: applyPreset });
  $("presets-slot").replaceWith(presets.element);
  startPreview();
  await Promise.all([picker.load(), presets.refresh(), pollStats()]);
  setInterval(pollStats, STATS_EVERY_MS);
  state.ready = true;
  document.body.dataset.ready = "true";
}

init();
