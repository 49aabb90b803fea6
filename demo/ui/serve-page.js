// camfx serve's page: camera -> WebRTC -> camfx engine -> processed video back, with live
// controls (sent on the "control" data channel), presets and live stats. No dependencies.

import { BackgroundPicker } from "./background-picker.js";
import { canPickCodec, preferCodec, setupCodecSelect } from "./codec.js";
import { $, authorized, el, fetchJSON, networkMessage } from "./dom.js";
import { LatencyProbe } from "./latency.js";
import { Presets } from "./presets.js";
import { Retry } from "./reconnect.js";
import { ControlForm, defaultsOf } from "./schema-form.js";
import { QUALITY_TIPS, Stats } from "./stats.js";

const STATS_INTERVAL_MS = 1000;
const SEND_EVERY_MS = 120; // slider drags are coalesced into at most one patch per interval
const ICE_GATHER_TIMEOUT_MS = 3000;
// "disconnected" this long counts as lost: the browser would wait much longer for "failed".
const DISCONNECTED_GIVE_UP_MS = 5000;

// ---- state, readable by tests as window.camfx ----
const state = {
  iceServers: [],
  status: "idle", // idle | starting | connecting | live | reconnecting | waiting | stopping | error
  pc: null,
  sender: null, // our video sender: its track is the camera's, or the stamped canvas's while measuring
  channel: null,
  stream: null,
  sessionId: null,
  lastSessionId: null,
  streamName: null, // the name viewers find the stream by (the server's answer)
  codec: null, // the codec in use, e.g. "video/VP8"
  schema: null,
  params: {}, // what the controls show
  serverParams: null, // the last params the server confirmed
  touched: new Set(), // fields the user has set: the offer carries them, the server's defaults fill the rest
  errors: {}, // field -> message from the server
  lastError: null,
  lastStats: null, // from pc.getStats()
  lastServerStats: null, // from the server's "stats" messages
  serverRates: null, // { dropped, misses } per second, from successive server totals
  messages: 0, // control-channel messages received
  reconnects: 0,
  qualityTips: QUALITY_TIPS,
};
window.camfx = state;

let form = null; // the ControlForm
const picker = new BackgroundPicker({ onPick: (id) => pickBackground(id) });
const stats = new Stats(state);
const probe = new LatencyProbe(state, (on) => change("probe", on, true));
const retry = new Retry();
let generation = 0; // bumps on every Start/Stop so a stale async step can tell
let statsTimer = null;
let disconnectedTimer = null;
let pendingPatch = {};
let sendTimer = null;
let inflight = 0; // patches sent on the channel and not yet answered

// ---- banner and status ----
function showBanner(message, kind = "error") {
  $("banner-text").textContent = message;
  $("banner").dataset.kind = kind;
  $("banner").hidden = false;
  if (kind === "error") state.lastError = message;
}
function hideBanner() {
  $("banner").hidden = true;
}

const STATUS_TEXT = {
  idle: "Idle", starting: "Opening camera…", connecting: "Connecting…", live: "Live",
  reconnecting: "Reconnecting…", waiting: "Reconnecting…", stopping: "Stopping…", error: "Stopped",
};
// What the picture says while there is none.
const PICTURE_TEXT = {
  idle: "Press Start to open your camera", starting: "Opening your camera…", connecting: "Connecting to the server…",
  live: "Waiting for the first processed frame…", reconnecting: "Reconnecting…", waiting: "Reconnecting…",
  stopping: "Stopping…", error: "Press Start to try again",
};

function setStatus(status) {
  state.status = status;
  // A try of the reconnecting reads as reconnecting, whatever step it is at.
  const shown = retry.active && (status === "starting" || status === "connecting") ? "reconnecting" : status;
  $("status").dataset.state = shown;
  $("status").textContent = STATUS_TEXT[shown] || shown;
  const busy = status !== "idle" && status !== "error";
  $("start").disabled = busy;
  $("stop").disabled = !busy || status === "stopping";
  $("codec").disabled = busy || !canPickCodec();
  $("picture-text").textContent = PICTURE_TEXT[shown] || "";
  document.body.dataset.state = status;
}

function setSync(mode) {
  $("sync").dataset.state = mode;
  $("sync").textContent = { local: "applies on start", live: "live", pending: "sending…" }[mode] || mode;
}

// ---- changing parameters ----
function change(field, value, immediate) {
  state.params[field] = value;
  delete state.errors[field];
  form.note(field, value, immediate);
  $("effect-badge").textContent = state.params.effect || "";
  queuePatch({ [field]: value }, immediate);
}

function pickBackground(id) {
  change("background", "image", true);
  change("background_image", id, true);
}

// A preset: every field it sets, in one patch.
function applyPreset(params) {
  const known = Object.fromEntries(Object.entries(params).filter(([field]) => field in state.params));
  Object.assign(state.params, known);
  form.show(known);
  $("effect-badge").textContent = state.params.effect || "";
  queuePatch(known, true);
}

function queuePatch(patch, immediate) {
  for (const field of Object.keys(patch)) state.touched.add(field);
  if (!state.sessionId) return; // not streaming: the next offer carries it
  Object.assign(pendingPatch, patch);
  setSync("pending");
  if (immediate) flushPatch();
  else if (!sendTimer) sendTimer = setTimeout(flushPatch, SEND_EVERY_MS);
}

function flushPatch() {
  clearTimeout(sendTimer);
  sendTimer = null;
  const patch = pendingPatch;
  pendingPatch = {};
  if (!Object.keys(patch).length || !state.sessionId) return;
  send(patch);
}

// Send a patch: on the data channel when it is open, else over HTTP. The answer arrives as a
// "params" or "error" message.
function send(patch) {
  const channel = state.channel;
  inflight += 1;
  if (channel && channel.readyState === "open") {
    channel.send(JSON.stringify(patch));
    return;
  }
  const id = state.sessionId;
  fetchJSON(`/sessions/${id}/params`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(patch),
  })
    .then(({ ok, status, body }) => {
      if (id !== state.sessionId) return;
      if (ok) onControlMessage({ type: "params", params: body });
      else onControlMessage({ type: "error", errors: (body && body.errors) || [{ field: "", message: `HTTP ${status}` }] });
    })
    .catch((err) => onControlMessage({ type: "error", errors: [{ field: "", message: networkMessage(err) }] }));
}
state.send = (patch) => { send(patch); };

function showParams(params) {
  Object.assign(state.params, params);
  form.show(params);
  $("effect-badge").textContent = state.params.effect || "";
}

function clearErrors() {
  state.errors = {};
  form.clearErrors();
  $("controls-error").hidden = true;
}

function showErrors(errors) {
  for (const err of errors || []) state.errors[String(err.field || "").split(".")[0] || "_"] = err.message;
  const general = form.showErrors(errors);
  if (general.length) {
    $("controls-error").textContent = general.join("; ");
    $("controls-error").hidden = false;
  }
}

function onControlMessage(message) {
  state.messages += 1;
  if (message.type === "stats") {
    stats.renderServer(message);
    return;
  }
  if (message.type === "params" || message.type === "error") {
    inflight = Math.max(0, inflight - 1);
    const settled = inflight === 0 && !sendTimer && !Object.keys(pendingPatch).length;
    if (message.type === "params") {
      state.serverParams = message.params;
      clearErrors();
    } else {
      showErrors(message.errors);
    }
    // Only when nothing is on its way do the controls take the server's word for every value,
    // so an answer to an older patch never snaps a slider back mid-drag. After an error this
    // also restores the value the server kept.
    if (settled && state.serverParams) showParams(state.serverParams);
    if (settled) setSync("live");
  }
}

// ---- start / stop ----
function cameraError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return "Camera permission was denied. Allow camera access for this page (the camera icon in the address bar) and press Start again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No camera was found. Connect a camera and press Start again.";
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return "The camera is in use by another application or could not be started.";
  }
  return `Could not open the camera: ${(err && err.message) || err}`;
}

function serverError(status, body) {
  const detail = (body && body.error) || `HTTP ${status}`;
  if (status === 503) return `The server is busy: ${detail}`;
  if (status === 422) return "The server rejected some settings; see the controls.";
  if (status >= 500) return "The server is not answering.";
  return `The server refused the connection: ${detail}`;
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHER_TIMEOUT_MS); // the server takes no trickled candidates
  });
}

// The session was lost without anyone here stopping it: close what is left, then try again.
async function lose(reason, serverGone = false) {
  await stop({ serverGone });
  reconnectLater(reason);
}

function reconnectLater(reason) {
  showBanner(retry.schedule(reason, () => {
    state.reconnects += 1;
    start();
  }));
  setStatus("waiting");
}

// Stop as the person means it: no reconnecting after it.
function userStop(options) {
  retry.cancel();
  clearTimeout(disconnectedTimer);
  return stop(options);
}

function publishName() {
  return $("publish-name").value.trim();
}

// Viewers (OBS Browser Sources, /view pages) find the stream by its name.
function showViewLink(name) {
  const link = $("view-link");
  state.streamName = name || null;
  link.hidden = !name;
  if (!name) return;
  link.href = `/view/${encodeURIComponent(name)}`;
  link.textContent = `View as ${name}`;
  link.title = `Open in OBS as a Browser Source: ${location.origin}/view/${name} (add ?transparent=1 with Remove)`;
  if (!publishName()) $("publish-name").placeholder = name;
}

async function start() {
  if (state.pc || state.status === "starting") return;
  retry.fire();
  const gen = ++generation;
  if (retry.active) showBanner("Reconnecting to the server…", "info");
  else hideBanner();
  clearErrors();
  setStatus("starting");

  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    fail("This page needs camera access, which browsers only allow on https:// or http://localhost.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      audio: false,
    });
  } catch (err) {
    if (gen === generation) fail(cameraError(err));
    return;
  }
  if (gen !== generation) {
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  state.stream = stream;
  showVideo("local", stream);
  setStatus("connecting");

  // STUN / TURN as the server was told (none by default); ?ice=relay forces TURN, to try it.
  const relay = new URLSearchParams(location.search).get("ice") === "relay";
  const pc = new RTCPeerConnection({ iceServers: state.iceServers, iceTransportPolicy: relay ? "relay" : "all" });
  state.pc = pc;
  const channel = pc.createDataChannel("control");
  state.channel = channel;
  channel.addEventListener("message", (event) => {
    if (pc !== state.pc) return;
    try {
      onControlMessage(JSON.parse(event.data));
    } catch (err) {
      console.warn("bad control message", event.data, err);
    }
  });
  channel.addEventListener("close", () => {
    // The server closed the session (or it timed out) while we were streaming.
    if (pc === state.pc && state.sessionId) lose("The server ended the session.", true);
  });
  channel.addEventListener("open", () => {
    if (pc === state.pc && Object.keys(pendingPatch).length) flushPatch();
  });

  const transceiver = pc.addTransceiver(probe.outgoingTrack(), { direction: "sendrecv", streams: [stream] });
  state.sender = transceiver.sender;
  preferCodec(transceiver, $("codec").value);

  pc.addEventListener("track", (event) => {
    if (pc !== state.pc) return;
    showVideo("remote", event.streams[0] || new MediaStream([event.track]));
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc !== state.pc) return;
    const s = pc.connectionState;
    clearTimeout(disconnectedTimer);
    if (s === "connected") {
      setStatus("live");
      if (retry.active) hideBanner();
      retry.cancel();
    } else if (s === "disconnected") {
      setStatus("reconnecting"); // it may come back by itself; if not soon, start again
      disconnectedTimer = setTimeout(() => {
        if (pc === state.pc && pc.connectionState === "disconnected") lose("The connection to the server was lost.");
      }, DISCONNECTED_GIVE_UP_MS);
    } else if (s === "failed") {
      lose("The connection to the server was lost.");
    }
  });

  let answer;
  const offered = {};
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (gen !== generation) return;
    for (const field of state.touched) offered[field] = state.params[field];
    // No name typed: the server publishes under its stable default (its answer says which).
    const { ok, status, body } = await fetchJSON("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        sdp: pc.localDescription.sdp, type: pc.localDescription.type, params: offered,
        ...(publishName() ? { name: publishName() } : {}),
      }),
    });
    if (gen !== generation) {
      if (ok && body && body.session_id) closeOnServer(body.session_id);
      return;
    }
    if (!ok) {
      if (status === 422 && body) showErrors(body.errors);
      const error = new Error(serverError(status, body));
      error.status = status;
      throw error;
    }
    answer = body;
    showViewLink(answer.name);
    state.sessionId = answer.session_id;
    state.lastSessionId = answer.session_id;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  } catch (err) {
    if (gen !== generation) return;
    const message = err.status ? err.message : networkMessage(err);
    // While reconnecting, a server not there yet or full is worth another try; a refusal of
    // what we sent is not.
    if (retry.active && (!err.status || [502, 503, 504].includes(err.status))) {
      await stop();
      reconnectLater(message);
    } else {
      retry.cancel();
      stop({ message });
    }
    return;
  }

  setSync("live");
  // Changes made while the offer was on its way go out now.
  const late = {};
  for (const field of state.touched) {
    if (state.params[field] !== offered[field]) late[field] = state.params[field];
  }
  if (Object.keys(late).length) queuePatch(late, true);
  // The server's defaults fill in what we did not send; show them.
  fetchJSON(`/sessions/${answer.session_id}`)
    .then(({ ok, body }) => {
      const quiet = inflight === 0 && !sendTimer && !Object.keys(pendingPatch).length;
      if (ok && body && body.params && state.sessionId === answer.session_id && quiet) {
        state.serverParams = body.params;
        showParams(body.params);
      }
    })
    .catch(() => {});
  stats.previous = null;
  stats.previousTotals = null;
  statsTimer = setInterval(() => { if (pc === state.pc) stats.poll(pc); }, STATS_INTERVAL_MS);
}

function fail(message) {
  showBanner(message);
  setStatus("error");
}

function closeOnServer(id, timeoutMs = 2000) {
  // keepalive lets this finish even while the page unloads.
  const options = { method: "DELETE", keepalive: true };
  if (typeof AbortSignal !== "undefined" && AbortSignal.timeout) options.signal = AbortSignal.timeout(timeoutMs);
  return fetch(`/sessions/${id}`, authorized(options)).catch(() => {});
}

// Stop: camera off, session closed on the server, peer connection closed. `serverGone` when the
// server already ended the session (nothing to DELETE).
async function stop({ message, serverGone = false } = {}) {
  generation += 1;
  const { pc, stream, sessionId } = state;
  setStatus("stopping");
  clearInterval(statsTimer);
  statsTimer = null;
  clearTimeout(sendTimer);
  sendTimer = null;
  pendingPatch = {};
  inflight = 0;
  Object.assign(state, { pc: null, sender: null, channel: null, stream: null, sessionId: null });
  if (stream) stream.getTracks().forEach((t) => t.stop());
  probe.stopStamping();
  stats.clear();
  probe.reset();
  showVideo("local", null);
  showVideo("remote", null);
  // DELETE first, then close our end: the server frees the slot at once, and it is not racing
  // our DTLS/SCTP shutdown (which would end the session too, only later).
  if (sessionId && !serverGone) await closeOnServer(sessionId);
  if (pc) pc.close();
  setSync("local");
  if (message) fail(message);
  else setStatus("idle");
}

function showVideo(which, stream) {
  const video = $(which);
  video.srcObject = stream;
  if (which === "remote") $("picture-empty").hidden = !!stream;
  else $("pip").hidden = !stream;
  if (stream) video.play().catch(() => {}); // autoplay is allowed: the videos are muted
}

// The picture takes the stream's own shape: no black bars around it.
function fitPicture() {
  const video = $("remote");
  if (video.videoWidth && video.videoHeight) {
    $("picture").style.setProperty("--ar", (video.videoWidth / video.videoHeight).toFixed(4));
  }
}

// ---- boot ----
async function init() {
  $("remote").addEventListener("resize", fitPicture);
  $("remote").addEventListener("loadedmetadata", fitPicture);
  setupCodecSelect();
  probe.setup();
  state.setMeasuring = (on) => probe.setMeasuring(on);
  setStatus("idle");
  setSync("local");
  $("banner-close").addEventListener("click", hideBanner);
  $("start").addEventListener("click", () => start());
  $("stop").addEventListener("click", () => userStop());
  window.addEventListener("pagehide", () => {
    if (state.sessionId) closeOnServer(state.sessionId);
  });
  state.start = start;
  state.stop = userStop;
  try {
    const ice = await fetchJSON("/ice-servers");
    state.iceServers = ice.ok && ice.body ? ice.body.iceServers : [];
    const { ok, status, body } = await fetchJSON("/params/schema");
    if (!ok || !body) throw new Error(`HTTP ${status}`);
    state.schema = body;
  } catch (err) {
    $("controls").replaceChildren(el("p", { class: "field-error", text: `Could not load the controls: ${networkMessage(err)}` }));
    return;
  }
  form = new ControlForm($("controls"), state.schema, {
    onChange: change, widgets: { background: () => picker.widget() },
  });
  showParams(defaultsOf(state.schema));
  const presets = new Presets({ getParams: () => ({ ...state.params }), apply: applyPreset });
  $("presets-slot").replaceWith(presets.element);
  await Promise.all([picker.load(), presets.refresh()]);
  state.ready = true;
  document.body.dataset.ready = "true";
}

init();
