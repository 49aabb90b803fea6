// camfx demo page: camera -> WebRTC -> camfx engine -> processed video back, with live
// controls (sent on the "control" data channel) and live stats. No dependencies.
"use strict";

(() => {
  const STATS_INTERVAL_MS = 1000;
  const SEND_EVERY_MS = 120; // slider drags are coalesced into at most one patch per interval
  const ICE_GATHER_TIMEOUT_MS = 3000;
  // A live session lost (the server or its replica gone): the page starts a new one by itself,
  // this far apart, until it is back or Stop is pressed.
  const RETRY_MS = [1000, 2000, 4000, 8000];
  // "disconnected" this long counts as lost: the browser would wait much longer for "failed".
  const DISCONNECTED_GIVE_UP_MS = 5000;
  const MAX_UPLOAD_BYTES = 8 * 1024 * 1024;
  const NEEDS_MASK = ["blur", "replace", "remove"];

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...children) => {
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
  };

  // ---- how each parameter is shown (ranges, enums and defaults come from /params/schema) ----
  const FIELDS = {
    effect: {
      label: "Effect", kind: "segmented",
      labels: { none: "None", blur: "Blur", replace: "Replace", remove: "Remove", toon: "Toon", diffusion: "Diffusion" },
    },
    blur_strength: { label: "Blur strength", step: 0.5, fmt: (v) => `${v.toFixed(1)} px` },
    background: { label: "Fill with", kind: "segmented", labels: { color: "Colour", image: "Image" } },
    background_color: { label: "Colour", kind: "color" },
    background_image: { label: "Image", kind: "image" },
    key_color: { label: "Key colour", kind: "color", hint: "Key it out downstream (OBS chroma key)." },
    toon_smoothing: { label: "Smoothing passes", step: 1, fmt: (v) => String(v) },
    toon_edges: { label: "Edge darkness", step: 0.05, fmt: (v) => v.toFixed(2) },
    diffusion_mode: {
      label: "Restyle", kind: "segmented",
      labels: { frame: "Frame", background: "Background", person: "Person", backdrop: "Backdrop" },
      hint: "Backdrop and background keep the camera's frame rate whatever the generation rate.",
    },
    backdrop_source: { label: "Backdrop from", kind: "segmented", labels: { prompt: "Prompt only", room: "The room" } },
    prompt: { label: "Prompt", kind: "text", hint: "Press Enter: applied within a few frames, no model reload." },
    strength: { label: "Strength", step: 0.05, fmt: (v) => v.toFixed(2) },
    steps: { label: "Steps", step: 1, fmt: (v) => String(v) },
    seed: { label: "Seed", kind: "number" },
    diffusion_size: { label: "Resolution (long side)", step: 64, fmt: (v) => `${v} px` },
    diffusion_model: { label: "Model", kind: "select" },
    diffusion_feedback: { label: "Anti-flicker feedback", step: 0.05, fmt: (v) => (v ? v.toFixed(2) : "off") },
    similarity_threshold: { label: "Skip similar frames", step: 0.01, fmt: (v) => (v ? v.toFixed(2) : "off") },
    stream_batch: { label: "Stream batch (steps − 1 frames of lag)", kind: "checkbox" },
    guidance: { label: "Self-negative guidance", step: 0.1, fmt: (v) => (v > 1 ? v.toFixed(1) : "off") },
    model: {
      label: "Model", kind: "select",
      labels: { general: "General · 256×256", landscape: "Landscape · 144×256 (fast)" },
    },
    mask_mode: { label: "Mask edges", kind: "segmented", labels: { soft: "Soft", threshold: "Hard" } },
    mask_threshold: { label: "Threshold", step: 0.01, fmt: (v) => v.toFixed(2) },
    mask_smoothing: { label: "Temporal smoothing", step: 0.05, fmt: (v) => v.toFixed(2) },
    mask_feather: { label: "Edge snapping", step: 1, fmt: (v) => (v ? `${v} px` : "off") },
    segment_skip: { label: "Skip the model while still", step: 0.5, fmt: (v) => (v ? `under ${v} levels` : "off") },
    probe: { label: "Keep probe rows (latency measurement)", kind: "checkbox" },
  };

  const GROUPS = [
    { title: null, fields: ["effect"] },
    { title: "Blur", fields: ["blur_strength"], when: (p) => p.effect === "blur" },
    {
      title: "Background", fields: ["background", "background_color", "background_image"],
      when: (p) => p.effect === "replace",
    },
    { title: "Chroma key", fields: ["key_color"], when: (p) => p.effect === "remove" },
    { title: "Toon", fields: ["toon_smoothing", "toon_edges"], when: (p) => p.effect === "toon" },
    {
      title: "Diffusion",
      fields: [
        "diffusion_mode", "backdrop_source", "prompt", "strength", "steps", "seed", "diffusion_size", "diffusion_model",
        "diffusion_feedback", "similarity_threshold", "stream_batch", "guidance",
      ],
      when: (p) => p.effect === "diffusion",
    },
    {
      title: "Mask", fields: ["model", "mask_mode", "mask_threshold", "mask_smoothing", "mask_feather", "segment_skip"],
      when: (p) => NEEDS_MASK.includes(p.effect) || (p.effect === "diffusion" && p.diffusion_mode !== "frame"),
    },
    { title: "Advanced", fields: ["probe"], collapsed: true },
  ];

  const FIELD_WHEN = {
    backdrop_source: (p) => p.diffusion_mode === "backdrop",
    background_color: (p) => p.background === "color",
    background_image: (p) => p.background === "image",
    mask_threshold: (p) => p.mask_mode === "threshold",
  };

  // ---- state, readable by tests as window.camfx ----
  const state = {
    iceServers: [],
    status: "idle", // idle | starting | connecting | live | stopping | error
    pc: null,
    sender: null, // our video sender: its track is the camera's, or the stamped canvas's while measuring
    channel: null,
    stream: null,
    sessionId: null,
    lastSessionId: null,
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
    backgrounds: { bundled: [], uploaded: [] },
  };
  window.camfx = state;

  const controls = new Map(); // field -> { row, set(value), error }
  let generation = 0; // bumps on every Start/Stop so a stale async step can tell
  let statsTimer = null;
  let pendingPatch = {};
  let sendTimer = null;
  let inflight = 0; // patches sent on the channel and not yet answered
  let previousStats = null;
  const uploadedPreviews = new Map(); // uploaded id -> object URL of the file picked here

  // ---- banner and status ----
  function showBanner(message, kind = "error") {
    $("banner-text").textContent = message;
    $("banner").dataset.kind = kind;
    $("banner").hidden = false;
    state.lastError = kind === "error" ? message : state.lastError;
  }
  function hideBanner() {
    $("banner").hidden = true;
  }
  $("banner-close").addEventListener("click", hideBanner);

  const STATUS_TEXT = {
    idle: "Idle", starting: "Opening camera…", connecting: "Connecting…", live: "Live",
    reconnecting: "Reconnecting…", waiting: "Reconnecting soon…", stopping: "Stopping…", error: "Stopped",
  };
  function setStatus(status) {
    state.status = status;
    $("status").dataset.state = status;
    $("status").textContent = STATUS_TEXT[status] || status;
    const busy = status !== "idle" && status !== "error";
    $("start").disabled = busy;
    $("stop").disabled = !busy || status === "stopping";
    $("codec").disabled = busy || !canPickCodec();
    document.body.dataset.state = status;
  }

  function setSync(mode) {
    $("sync").dataset.state = mode;
    $("sync").textContent = { local: "applies on start", live: "live", pending: "sending…" }[mode] || mode;
  }

  // ---- schema-driven controls ----
  // A server started with --token wants it on every API call: asked once, kept for this tab.
  const TOKEN_KEY = "camfx-token";
  function authorized(options = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return options;
    return { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` } };
  }

  async function fetchJSON(url, options, retried = false) {
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

  function rangeOf(spec, meta) {
    const step = meta.step ?? (spec.type === "integer" ? 1 : 0.01);
    let min = spec.minimum ?? (spec.exclusiveMinimum !== undefined ? spec.exclusiveMinimum + step : 0);
    let max = spec.maximum ?? (spec.exclusiveMaximum !== undefined ? spec.exclusiveMaximum - step : 100);
    return { min: +min.toFixed(6), max: +max.toFixed(6), step };
  }

  function kindOf(spec, meta) {
    if (meta.kind) return meta.kind;
    if (spec.enum) return spec.enum.length <= 4 ? "segmented" : "select";
    if (spec.type === "boolean") return "checkbox";
    if (spec.type === "number" || spec.type === "integer") return "range";
    return "text";
  }

  function prettyName(field) {
    const name = field.replace(/_/g, " ");
    return name.charAt(0).toUpperCase() + name.slice(1);
  }

  function buildControls() {
    const form = $("controls");
    form.replaceChildren();
    controls.clear();
    const props = state.schema.properties || {};
    const known = new Set(GROUPS.flatMap((g) => g.fields));
    const extra = Object.keys(props).filter((f) => !known.has(f));
    const groups = extra.length ? [...GROUPS, { title: "Other", fields: extra }] : GROUPS;

    for (const group of groups) {
      const fields = group.fields.filter((f) => props[f]);
      if (!fields.length) continue;
      const box = group.title
        ? el("details", { class: "group", open: !group.collapsed }, el("summary", { text: group.title }))
        : el("div", { class: "group group-plain" });
      box.when = group.when;
      for (const field of fields) box.append(buildControl(field, props[field], FIELDS[field] || {}));
      form.append(box);
    }
    form.addEventListener("submit", (e) => e.preventDefault());
    refreshVisibility();
  }

  function buildControl(field, spec, meta) {
    const kind = kindOf(spec, meta);
    const label = meta.label || spec.title || prettyName(field);
    const id = `f-${field}`;
    const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const row = el("div", { class: `field field-${kind}`, dataset: { field } });
    let set;

    if (kind === "segmented") {
      const buttons = spec.enum.map((value) =>
        el("button", {
          type: "button", class: "seg", dataset: { value }, "aria-pressed": "false",
          text: (meta.labels && meta.labels[value]) || prettyName(String(value)),
          onclick: () => change(field, value, true),
        }),
      );
      row.append(
        el("span", { class: "field-label", id: `${id}-label`, text: label }),
        el("div", { class: "segmented", role: "group", "aria-labelledby": `${id}-label`, id }, ...buttons),
      );
      set = (value) => buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.value === value)));
    } else if (kind === "select") {
      const select = el(
        "select", { id, name: field, onchange: () => change(field, select.value, true) },
        ...spec.enum.map((value) =>
          el("option", { value, text: (meta.labels && meta.labels[value]) || prettyName(String(value)) })),
      );
      row.append(el("label", { class: "field-label", for: id, text: label }), select);
      set = (value) => { select.value = value; };
    } else if (kind === "range") {
      const { min, max, step } = rangeOf(spec, meta);
      const fmt = meta.fmt || ((v) => String(+v.toFixed(3)));
      const output = el("output", { for: id, class: "field-value" });
      const parse = (raw) => (spec.type === "integer" ? parseInt(raw, 10) : parseFloat(raw));
      const input = el("input", {
        type: "range", id, name: field, min, max, step,
        oninput: () => { output.textContent = fmt(parse(input.value)); change(field, parse(input.value), false); },
        onchange: () => change(field, parse(input.value), true),
      });
      row.append(
        el("div", { class: "field-head" }, el("label", { class: "field-label", for: id, text: label }), output),
        input,
      );
      set = (value) => { input.value = value; output.textContent = fmt(Number(value)); };
    } else if (kind === "color") {
      const code = el("code", { class: "field-value" });
      const input = el("input", {
        type: "color", id, name: field,
        oninput: () => { code.textContent = input.value; change(field, input.value, false); },
        onchange: () => change(field, input.value, true),
      });
      row.append(
        el("div", { class: "field-head" }, el("label", { class: "field-label", for: id, text: label }), code),
        el("div", { class: "color-row" }, input),
      );
      set = (value) => { input.value = value; code.textContent = value; };
    } else if (kind === "number") {
      const input = el("input", {
        type: "number", id, name: field, min: spec.minimum ?? 0, max: spec.maximum ?? "", step: 1,
        onchange: () => change(field, parseInt(input.value, 10), true),
      });
      row.append(el("label", { class: "field-label", for: id, text: label }), input);
      set = (value) => { input.value = value; };
    } else if (kind === "checkbox") {
      const input = el("input", { type: "checkbox", id, name: field, onchange: () => change(field, input.checked, true) });
      row.append(el("label", { class: "check" }, input, el("span", { text: label })));
      set = (value) => { input.checked = !!value; };
    } else if (kind === "image") {
      const picker = el("div", { class: "bg-picker", role: "radiogroup", id, "aria-label": label });
      const upload = el("input", {
        type: "file", id: "upload", accept: "image/*", class: "visually-hidden",
        onchange: () => { if (upload.files[0]) uploadBackground(upload.files[0]); upload.value = ""; },
      });
      const uploadError = el("p", { class: "field-error", id: "upload-error", hidden: true });
      row.append(
        el("span", { class: "field-label", text: label }),
        picker,
        el("label", { class: "btn btn-small upload-btn", for: "upload" }, "Upload image…"),
        upload,
        uploadError,
      );
      set = (value) => {
        for (const tile of picker.children) tile.setAttribute("aria-checked", String(tile.dataset.value === value));
      };
      controls.set("__picker", { picker, uploadError });
    } else {
      const input = el("input", { type: "text", id, name: field, onchange: () => change(field, input.value, true) });
      row.append(el("label", { class: "field-label", for: id, text: label }), input);
      set = (value) => { input.value = value ?? ""; };
    }
    if (meta.hint) row.append(el("p", { class: "hint", text: meta.hint }));
    row.append(error);
    controls.set(field, { row, set, error });
    return row;
  }

  function renderBackgrounds() {
    const entry = controls.get("__picker");
    if (!entry) return;
    const { bundled, uploaded } = state.backgrounds;
    const names = [...bundled, ...uploaded];
    const current = state.params.background_image;
    if (current && !names.includes(current)) names.push(current);
    entry.picker.replaceChildren(
      ...names.map((name) => {
        const isBundled = bundled.includes(name);
        const preview = isBundled ? `/static/backgrounds/${encodeURIComponent(name)}.jpg` : uploadedPreviews.get(name);
        const tile = el("button", {
          type: "button", role: "radio", class: "bg-tile", dataset: { value: name },
          "aria-checked": String(name === current), title: isBundled ? name : `uploaded (${name})`,
          onclick: () => change("background_image", name, true),
        });
        if (preview) {
          const img = el("img", { src: preview, alt: "", loading: "lazy" });
          img.addEventListener("error", () => img.remove());
          tile.append(img);
        }
        tile.append(el("span", { text: isBundled ? name : "uploaded" }));
        return tile;
      }),
    );
  }

  function refreshVisibility() {
    const p = state.params;
    for (const box of $("controls").children) {
      box.hidden = box.when ? !box.when(p) : false;
    }
    for (const [field, when] of Object.entries(FIELD_WHEN)) {
      const entry = controls.get(field);
      if (entry) entry.row.hidden = !when(p);
    }
    $("effect-badge").textContent = p.effect || "";
  }

  function showParams(params, { skip = new Set() } = {}) {
    for (const [field, value] of Object.entries(params)) {
      if (skip.has(field)) continue;
      state.params[field] = value;
      const entry = controls.get(field);
      if (entry) entry.set(value);
    }
    renderBackgrounds();
    refreshVisibility();
  }

  // ---- errors from the server, shown next to the control they name ----
  function clearErrors() {
    state.errors = {};
    for (const entry of controls.values()) if (entry.error) entry.error.hidden = true;
    $("controls-error").hidden = true;
  }

  function showErrors(errors) {
    const general = [];
    for (const err of errors || []) {
      const field = String(err.field || "").split(".")[0];
      state.errors[field || "_"] = err.message;
      const entry = controls.get(field);
      if (entry && entry.error) {
        entry.error.textContent = err.message;
        entry.error.hidden = false;
        // Make sure the complaint is visible even if its group is folded.
        const group = entry.row.closest("details");
        if (group) group.open = true;
      } else {
        general.push(field ? `${field}: ${err.message}` : err.message);
      }
    }
    if (general.length) {
      $("controls-error").textContent = general.join("; ");
      $("controls-error").hidden = false;
    }
  }

  // ---- changing parameters ----
  function change(field, value, immediate) {
    state.params[field] = value;
    const entry = controls.get(field);
    if (entry && immediate) entry.set(value);
    if (entry && entry.error) entry.error.hidden = true;
    delete state.errors[field];
    refreshVisibility();
    if (field === "background_image") renderBackgrounds();
    queuePatch({ [field]: value }, immediate);
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

  // Send a patch: on the data channel when it is open, else over HTTP. Returns nothing; the
  // answer arrives as a "params" or "error" message.
  function send(patch) {
    const channel = state.channel;
    if (channel && channel.readyState === "open") {
      inflight += 1;
      channel.send(JSON.stringify(patch));
      return;
    }
    const id = state.sessionId;
    inflight += 1;
    fetchJSON(`/sessions/${id}/params`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(patch),
    })
      .then(({ ok, status, body }) => {
        if (id !== state.sessionId) return;
        if (ok) onControlMessage({ type: "params", params: body });
        else onControlMessage({ type: "error", errors: (body && body.errors) || [{ field: "", message: `HTTP ${status}` }] });
      })
      .catch((err) => onControlMessage({ type: "error", errors: [{ field: "", message: String(err) }] }));
  }
  state.send = (patch) => { send(patch); };

  function onControlMessage(message) {
    state.messages += 1;
    if (message.type === "stats") {
      state.lastServerStats = message;
      renderServerStats(message);
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
      // Only when nothing is on its way do the controls take the server's word for every
      // value, so an answer to an older patch never snaps a slider back mid-drag. After an
      // error this also restores the value the server kept.
      if (settled && state.serverParams) showParams(state.serverParams);
      if (settled) setSync("live");
    }
  }

  // ---- backgrounds ----
  async function loadBackgrounds() {
    try {
      const { ok, body } = await fetchJSON("/backgrounds");
      if (ok && body) state.backgrounds = { bundled: body.bundled || [], uploaded: body.uploaded || [] };
    } catch (_) {
      /* the picker keeps what it had */
    }
    renderBackgrounds();
  }

  async function uploadBackground(file) {
    const { uploadError } = controls.get("__picker");
    uploadError.hidden = true;
    if (file.size > MAX_UPLOAD_BYTES) {
      uploadError.textContent = `That file is ${(file.size / 1048576).toFixed(1)} MiB; the limit is 8 MiB.`;
      uploadError.hidden = false;
      return;
    }
    try {
      const { ok, status, body } = await fetchJSON("/backgrounds", {
        method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
      });
      if (!ok) throw new Error((body && body.error) || `upload failed (HTTP ${status})`);
      uploadedPreviews.set(body.id, URL.createObjectURL(file));
      await loadBackgrounds();
      change("background", "image", true);
      change("background_image", body.id, true);
    } catch (err) {
      uploadError.textContent = err.message || String(err);
      uploadError.hidden = false;
    }
  }

  // ---- codecs ----
  function canPickCodec() {
    return typeof RTCRtpTransceiver !== "undefined" && "setCodecPreferences" in RTCRtpTransceiver.prototype;
  }

  function setupCodecSelect() {
    const select = $("codec");
    if (!canPickCodec()) {
      select.disabled = true;
      select.title = "This browser cannot choose codecs (setCodecPreferences); it negotiates one itself.";
      return;
    }
    const caps = (RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities("video")) || { codecs: [] };
    for (const option of select.options) {
      if (!option.value) continue;
      const supported = caps.codecs.some((c) => c.mimeType.toLowerCase() === option.value.toLowerCase());
      option.disabled = !supported;
      if (!supported) option.textContent += " (not supported here)";
    }
  }

  function preferCodec(transceiver, mimeType) {
    if (!mimeType || !canPickCodec()) return;
    const caps = RTCRtpReceiver.getCapabilities("video");
    const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
    if (!wanted.length) return;
    // For H264 put constrained baseline with packetization-mode=1 first (what the server encodes).
    const score = (c) => {
      const fmtp = c.sdpFmtpLine || "";
      return (/packetization-mode=1/.test(fmtp) ? 2 : 0) + (/profile-level-id=42e0/.test(fmtp) ? 1 : 0);
    };
    wanted.sort((a, b) => score(b) - score(a));
    const rtx = caps.codecs.filter((c) => /\/rtx$/i.test(c.mimeType));
    try {
      transceiver.setCodecPreferences([...wanted, ...rtx]);
    } catch (err) {
      console.warn("setCodecPreferences failed; the browser picks the codec", err);
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
      // The server takes no trickled candidates; send what we have after a while.
      setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
    });
  }

  // ---- reconnecting by itself ----
  const retry = { attempt: 0, timer: null, active: false, disconnectedTimer: null };

  function cancelRetry() {
    clearTimeout(retry.timer);
    clearTimeout(retry.disconnectedTimer);
    Object.assign(retry, { attempt: 0, timer: null, active: false, disconnectedTimer: null });
  }

  // The session was lost without anyone here stopping it: close what is left, then try again.
  async function lose(message, serverGone = false) {
    await stop({ serverGone });
    reconnectLater(message);
  }

  function reconnectLater(message) {
    const delay = RETRY_MS[Math.min(retry.attempt, RETRY_MS.length - 1)];
    retry.attempt += 1;
    retry.active = true;
    showBanner(`${message} Trying again in ${delay / 1000} s (attempt ${retry.attempt}); Stop to give up.`);
    setStatus("waiting");
    retry.timer = setTimeout(() => {
      retry.timer = null;
      state.reconnects = (state.reconnects || 0) + 1;
      start();
    }, delay);
  }

  // Stop as the user means it: no reconnecting after it.
  function userStop(options) {
    cancelRetry();
    return stop(options);
  }

  async function start() {
    if (state.pc || state.status === "starting") return;
    clearTimeout(retry.timer);
    retry.timer = null;
    const gen = ++generation;
    hideBanner();
    clearErrors();
    if (retry.active) showBanner("Reconnecting to the server…");
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

    const transceiver = pc.addTransceiver(outgoingTrack(), { direction: "sendrecv", streams: [stream] });
    state.sender = transceiver.sender;
    preferCodec(transceiver, $("codec").value);

    pc.addEventListener("track", (event) => {
      if (pc !== state.pc) return;
      showVideo("remote", event.streams[0] || new MediaStream([event.track]));
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc !== state.pc) return;
      const s = pc.connectionState;
      clearTimeout(retry.disconnectedTimer);
      if (s === "connected") {
        setStatus("live");
        if (retry.active) hideBanner();
        cancelRetry();
      } else if (s === "disconnected") {
        setStatus("reconnecting");  // it may come back by itself; if not soon, start again
        retry.disconnectedTimer = setTimeout(() => {
          if (pc === state.pc && pc.connectionState === "disconnected") lose("The connection to the server was lost.");
        }, DISCONNECTED_GIVE_UP_MS);
      } else if (s === "failed") {
        lose("The connection to the server was lost.");
      }
    });

    let answer;
    let offered = {};
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (gen !== generation) return;
      for (const field of state.touched) offered[field] = state.params[field];
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
      // While reconnecting, a server not there yet or full is worth another try; a refusal
      // of what we sent is not.
      if (retry.active && (!err.status || err.status === 503 || err.status === 502 || err.status === 504)) {
        await stop();
        reconnectLater(err.message || String(err));
      } else {
        cancelRetry();
        stop({ message: err.message || String(err) });
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
    previousStats = null;
    previousTotals = null;
    statsTimer = setInterval(() => pollStats(pc), STATS_INTERVAL_MS);
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

  // Stop: camera off, session closed on the server, peer connection closed. `serverGone` when
  // the server already ended the session (nothing to DELETE).
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
    state.pc = null;
    state.sender = null;
    state.channel = null;
    state.stream = null;
    state.sessionId = null;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stopStamping();
    clearStats();
    showVideo("local", null);
    showVideo("remote", null);
    // DELETE first, then close our end: the server frees the slot at once, and it is not
    // racing our DTLS/SCTP shutdown (which would end the session too, only later).
    if (sessionId && !serverGone) await closeOnServer(sessionId);
    if (pc) pc.close();
    setSync("local");
    if (message) fail(message);
    else setStatus("idle");
  }

  function showVideo(which, stream) {
    const video = $(which);
    video.srcObject = stream;
    document.querySelector(`.video-empty[data-for="${which}"]`).hidden = !!stream;
    if (stream) video.play().catch(() => {}); // autoplay is allowed: the videos are muted
  }

  // ---- stats ----
  const fmtMs = (v) => (v == null || Number.isNaN(v) ? "–" : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);
  const fmtFps = (v) => (v == null || Number.isNaN(v) ? "–" : `${v.toFixed(v < 10 ? 1 : 0)} fps`);
  const fmtRate = (v) => (v == null || Number.isNaN(v) ? "–" : `${v.toFixed(v < 10 ? 1 : 0)}/s`);
  const DETAIL_TEXT = $("st-detail").textContent; // the explanation shown until there are figures

  // Stop: nothing stale stays on screen.
  function clearStats() {
    for (const dd of document.querySelectorAll(".stats dd")) dd.textContent = "–";
    delete $("sv-quality").dataset.level;
    $("sv-quality").title = "";
    $("st-detail").textContent = DETAIL_TEXT;
    for (const id of ["codec-in-use", "st-quality-note", "sv-runtime"]) $(id).textContent = "";
    $("sv-stages").replaceChildren();
    $("sv-diffusion").hidden = true;
    previousStats = null;
    previousTotals = null;
    state.lastStats = null;
    state.lastServerStats = null;
    state.serverRates = null;
    resetLatency();
  }

  async function pollStats(pc) {
    if (pc !== state.pc) return;
    let report;
    try {
      report = await pc.getStats();
    } catch (_) {
      return;
    }
    if (pc !== state.pc) return;
    let outbound = null;
    let inbound = null;
    let pair = null;
    let selectedPairId = null;
    for (const s of report.values()) {
      const kind = s.kind || s.mediaType;
      if (s.type === "outbound-rtp" && kind === "video") outbound = s;
      else if (s.type === "inbound-rtp" && kind === "video") inbound = s;
      else if (s.type === "transport" && s.selectedCandidatePairId) selectedPairId = s.selectedCandidatePairId;
    }
    if (selectedPairId) pair = report.get(selectedPairId);
    if (!pair) {
      for (const s of report.values()) {
        if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = s;
      }
    }
    const prev = previousStats;
    const timestamp = (inbound || outbound || { timestamp: performance.now() }).timestamp;
    const dt = prev ? timestamp - prev.timestamp : 0;
    const rate = (now, before) => (prev && dt > 0 && now != null && before != null ? ((now - before) * 1000) / dt : null);

    const codecOf = (rtp) => (rtp && rtp.codecId && report.get(rtp.codecId) ? report.get(rtp.codecId).mimeType : null);
    const jbDelay = inbound ? inbound.jitterBufferDelay : null;
    const jbCount = inbound ? inbound.jitterBufferEmittedCount : null;
    let jitterMs = jbCount ? (jbDelay / jbCount) * 1000 : null;
    // Prefer the delay over the last interval: the average since the start hides changes.
    if (prev && jbCount != null && prev.jbCount != null && jbCount > prev.jbCount) {
      jitterMs = ((jbDelay - prev.jbDelay) / (jbCount - prev.jbCount)) * 1000;
    }

    const stats = {
      timestamp,
      fpsSent: outbound ? outbound.framesPerSecond ?? rate(outbound.framesEncoded, prev && prev.framesEncoded) : null,
      framesSent: outbound ? outbound.framesSent ?? null : null,
      framesEncoded: outbound ? outbound.framesEncoded ?? null : null,
      fpsReceived: inbound ? inbound.framesPerSecond ?? rate(inbound.framesDecoded, prev && prev.framesDecoded) : null,
      framesDecoded: inbound ? inbound.framesDecoded ?? 0 : 0,
      framesDropped: inbound ? inbound.framesDropped ?? null : null,
      rttMs: pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
      jitterBufferMs: jitterMs,
      jitterBufferAvgMs: jbCount ? (jbDelay / jbCount) * 1000 : null,
      jbDelay,
      jbCount,
      width: inbound ? inbound.frameWidth ?? null : null,
      height: inbound ? inbound.frameHeight ?? null : null,
      sentWidth: outbound ? outbound.frameWidth ?? null : null,
      sentHeight: outbound ? outbound.frameHeight ?? null : null,
      codecSent: codecOf(outbound),
      codecReceived: codecOf(inbound),
      encoder: outbound ? outbound.encoderImplementation ?? null : null,
      decoder: inbound ? inbound.decoderImplementation ?? null : null,
      connectionState: pc.connectionState,
    };
    previousStats = stats;
    state.lastStats = stats;
    state.codec = stats.codecReceived || stats.codecSent;
    renderClientStats(stats);
  }

  function renderClientStats(s) {
    $("st-fps-sent").textContent = fmtFps(s.fpsSent);
    $("st-fps-recv").textContent = fmtFps(s.fpsReceived);
    $("st-decoded").textContent = s.framesDecoded != null ? s.framesDecoded.toLocaleString() : "–";
    $("st-rtt").textContent = fmtMs(s.rttMs);
    $("st-jitter").textContent = fmtMs(s.jitterBufferMs);
    $("st-res").textContent = s.width ? `${s.width}×${s.height}` : "–";
    $("codec-in-use").textContent = state.codec ? `· ${state.codec.replace(/^video\//, "")}` : "";
    const parts = [];
    if (s.sentWidth) parts.push(["sending", `${s.sentWidth}×${s.sentHeight}`]);
    if (s.encoder) parts.push(["encoder", s.encoder]);
    if (s.decoder) parts.push(["decoder", s.decoder]);
    if (s.framesDropped) parts.push(["dropped by decoder", String(s.framesDropped)]);
    if (s.jitterBufferAvgMs != null) parts.push(["jitter buffer avg", fmtMs(s.jitterBufferAvgMs)]);
    if (parts.length) {
      $("st-detail").replaceChildren(
        ...parts.flatMap(([k, v], i) => [i ? " · " : "", `${k} `, el("b", { text: v })]),
      );
    }
  }

  // The rungs of the engine's quality ladder (engine/budget.py LADDER), as a user sees them.
  const QUALITY_TIPS = {
    full: "Full quality: the person mask is made from every frame and its edges are snapped to the picture.",
    "no-feather": "Frames ran over budget, so edge snapping is off: mask edges are a little softer and coarser.",
    lean: "As no-feather, and the toon effect smooths in one pass instead of several.",
    "mask-every-2nd": "The lowest level: the person mask is made from every second frame and reused in between, "
      + "so edges may trail fast movement.",
  };
  const QUALITY_TITLE = "The engine's quality level: it steps down when frames take longer than the budget, "
    + "and back up once there is headroom.\n"
    + Object.entries(QUALITY_TIPS).map(([name, tip]) => `• ${name}: ${tip}`).join("\n");
  state.qualityTips = QUALITY_TIPS;

  // Drops and misses as per-second rates over the last stats interval, from successive totals.
  let previousTotals = null; // { at, dropped, misses } from the last stats message
  function serverRates(s) {
    const now = performance.now();
    const prev = previousTotals;
    previousTotals = { at: now, dropped: s.frames_dropped, misses: s.deadline_misses };
    const dt = prev ? (now - prev.at) / 1000 : 0;
    const rate = (total, before) => (dt > 0 && total != null && before != null ? Math.max(0, total - before) / dt : null);
    return { dropped: rate(s.frames_dropped, prev && prev.dropped), misses: rate(s.deadline_misses, prev && prev.misses) };
  }

  function renderServerStats(s) {
    const rates = serverRates(s);
    state.serverRates = rates;
    $("sv-fps").textContent = `${s.fps_in ?? "–"} / ${s.fps_out ?? "–"}`;
    $("sv-latency").textContent = fmtMs(s.engine_latency_ms_p50);
    $("sv-dropped").textContent = fmtRate(rates.dropped);
    $("sv-misses").textContent = fmtRate(rates.misses);
    $("sv-quality").textContent = s.quality ?? "–";
    $("sv-quality").dataset.level = s.quality === "full" ? "ok" : "degraded";
    $("sv-quality").title = QUALITY_TIPS[s.quality] || "";
    $("sv-budget").textContent = fmtMs(s.budget_ms);
    $("st-quality-note").textContent = s.frames_in != null ? `· ${s.frames_in.toLocaleString()} frames in` : "";

    const stages = Object.entries(s.stage_ms || {});
    const total = stages.reduce((sum, [, ms]) => sum + ms, 0);
    const budget = s.budget_ms || 33.3;
    const scale = Math.max(budget, total);
    const rows = stages.map(([name, ms]) =>
      el("div", { class: "stage-row", dataset: { stage: name } },
        el("span", { class: "stage-name", text: name }),
        el("span", { class: "stage-bar" }, el("i", { style: `width:${Math.min(100, (ms / scale) * 100).toFixed(1)}%` })),
        el("span", { class: "stage-ms", text: fmtMs(ms) })),
    );
    if (stages.length) {
      rows.push(
        el("div", { class: `stage-row stage-total${total > budget ? " over" : ""}` },
          el("span", { class: "stage-name", text: "total" }),
          el("span", { class: "stage-bar" }, el("i", { style: `width:${Math.min(100, (total / scale) * 100).toFixed(1)}%` })),
          el("span", { class: "stage-ms", text: `${fmtMs(total)} / ${fmtMs(budget)}` })),
      );
    }
    $("sv-stages").replaceChildren(...rows);

    const runtimes = Object.entries(s.runtimes || {});
    const failed = runtimes.flatMap(([model, r]) => r.failed.map((f) => `${model}: ${f}`));
    $("sv-runtime").textContent = runtimes.map(([model, r]) => `${model} on ${r.runtime}`).join(" · ")
      + (failed.length ? ` · fell back after: ${failed.join("; ")}` : "");
    $("sv-runtime").dataset.fallback = failed.length ? "yes" : "no";

    const d = s.diffusion;
    $("sv-diffusion").hidden = !d;
    if (d) {
      const stages = Object.entries(d.stage_ms || {}).map(([k, v]) => `${k} ${fmtMs(v)}`);
      const text = d.status === "error"
        ? `Diffusion: error · ${d.error}`
        : [`Diffusion: ${d.status}`, `${d.fps} pictures/s`, `${d.frames} made`, d.skipped ? `${d.skipped} skipped` : null,
          d.lag_frames ? `lag ${d.lag_frames} frames` : null, d.device, ...stages].filter(Boolean).join(" · ");
      $("sv-diffusion").textContent = text;
      $("sv-diffusion").dataset.status = d.status;
    }
  }

  // ---- glass-to-glass latency: a frame id stamped into the picture we send, read back ----
  // The stamp is engine/frame_ids.py's: ID_BITS blocks of floor(width / ID_BITS) across the top
  // ID_ROWS rows, light for 1, dark for 0. With `probe` on the server keeps those rows as they
  // came, so the id read from a returned frame names the camera frame it was made from.
  const ID_BITS = 20;
  const ID_ROWS = 16;
  const ID_MASK = (1 << ID_BITS) - 1;
  const ID_DARK = 32;
  const ID_LIGHT = 224;
  const ID_KEEP = 256; // ids drawn and not yet seen back: ~8 s at 30 fps
  const LATENCY_WINDOW = 300; // the percentiles are over the last this many frames
  const STAMP_FPS = 30;
  const LATENCY_EVERY_MS = 1000;

  const probe = {
    on: false,
    canvas: null, // the camera's picture with the id on top; its track is what we send
    ctx: null,
    track: null,
    cancelDraw: null,
    reader: null, // the small canvas the returned frames' top rows are read from
    remoteHandle: null,
    timer: null,
    nextId: 0,
    drawnAt: new Map(), // id -> performance.now() when drawn, oldest first
    samples: [], // latencies in ms, newest last
  };
  window.camfxLatency = { p50: null, p95: null, n: 0 };
  const canMeasure = "requestVideoFrameCallback" in HTMLVideoElement.prototype
    && "captureStream" in HTMLCanvasElement.prototype;

  // The track the sender should carry now: the stamped canvas's while measuring, else the camera's.
  function outgoingTrack() {
    const camera = state.stream ? state.stream.getVideoTracks()[0] : null;
    if (probe.on && camera && !probe.track) startStamping(camera);
    else if (!(probe.on && camera) && probe.track) stopStamping();
    return probe.track || camera;
  }

  async function switchTrack() {
    const track = outgoingTrack();
    if (!state.sender || !track || state.sender.track === track) return;
    try {
      await state.sender.replaceTrack(track);
    } catch (err) {
      console.warn("replaceTrack failed", err);
    }
  }

  function startStamping(camera) {
    const { width = 640, height = 480 } = camera.getSettings();
    probe.canvas = document.createElement("canvas");
    probe.canvas.width = width;
    probe.canvas.height = height;
    probe.ctx = probe.canvas.getContext("2d", { alpha: false });
    probe.track = probe.canvas.captureStream(STAMP_FPS).getVideoTracks()[0];
    drawStamped();
  }

  function stopStamping() {
    if (probe.cancelDraw) probe.cancelDraw();
    if (probe.track) probe.track.stop();
    Object.assign(probe, { canvas: null, ctx: null, track: null, cancelDraw: null });
    probe.drawnAt.clear();
  }

  // Each camera frame: copied onto the canvas with the next id over its top rows.
  function drawStamped() {
    const video = $("local");
    const { canvas, ctx } = probe;
    if (video.videoWidth) {
      if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
      }
      ctx.drawImage(video, 0, 0);
      stampId(ctx, canvas.width, probe.nextId);
      remember(probe.nextId, performance.now());
      probe.nextId = (probe.nextId + 1) & ID_MASK;
    }
    const handle = video.requestVideoFrameCallback(drawStamped);
    probe.cancelDraw = () => video.cancelVideoFrameCallback(handle);
  }

  function stampId(ctx, width, id) {
    const block = Math.floor(width / ID_BITS);
    for (let bit = 0; bit < ID_BITS; bit++) {
      const gray = (id >> bit) & 1 ? ID_LIGHT : ID_DARK;
      ctx.fillStyle = `rgb(${gray}, ${gray}, ${gray})`;
      ctx.fillRect(bit * block, 0, block, ID_ROWS);
    }
  }

  function remember(id, at) {
    probe.drawnAt.delete(id); // a wrapped id goes to the back again
    probe.drawnAt.set(id, at);
    if (probe.drawnAt.size > ID_KEEP) probe.drawnAt.delete(probe.drawnAt.keys().next().value);
  }

  // The id in a returned frame: each block's centre (rows 4..12, the middle half of its width,
  // away from the codec's smeared edges), thresholded halfway between dark and light.
  function readId(video) {
    const width = video.videoWidth;
    const canvas = probe.reader || (probe.reader = document.createElement("canvas"));
    if (canvas.width !== width || canvas.height !== ID_ROWS) {
      canvas.width = width;
      canvas.height = ID_ROWS;
    }
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, width, ID_ROWS, 0, 0, width, ID_ROWS);
    const data = ctx.getImageData(0, 0, width, ID_ROWS).data;
    const block = Math.floor(width / ID_BITS);
    const inset = Math.floor(block / 4);
    let id = 0;
    for (let bit = 0; bit < ID_BITS; bit++) {
      let sum = 0;
      let count = 0;
      for (let y = ID_ROWS / 4; y < (3 * ID_ROWS) / 4; y++) {
        for (let x = bit * block + inset; x < (bit + 1) * block - inset; x++) {
          const i = (y * width + x) * 4;
          sum += data[i] + data[i + 1] + data[i + 2];
          count += 3;
        }
      }
      if (sum / count > (ID_DARK + ID_LIGHT) / 2) id |= 1 << bit;
    }
    return id;
  }

  function onReturnedFrame(now, metadata) {
    const video = $("remote");
    probe.remoteHandle = video.requestVideoFrameCallback(onReturnedFrame);
    if (video.videoWidth >= ID_BITS * 4) record(readId(video), metadata.expectedDisplayTime || now);
  }

  // A known id seen for the first time: one sample. Frames come back in order, so it and every
  // id drawn before it are done with (a repeated frame, or a misread older id, adds nothing).
  function record(id, shownAt) {
    const drawn = probe.drawnAt.get(id);
    if (drawn === undefined) return;
    for (const key of probe.drawnAt.keys()) {
      probe.drawnAt.delete(key);
      if (key === id) break;
    }
    probe.samples.push(shownAt - drawn);
    if (probe.samples.length > LATENCY_WINDOW) probe.samples.shift();
  }

  function percentile(sorted, q) {
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  function showLatency() {
    const sorted = [...probe.samples].sort((a, b) => a - b);
    const n = sorted.length;
    window.camfxLatency = n ? { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), n } : { p50: null, p95: null, n: 0 };
    const { p50, p95 } = window.camfxLatency;
    const idle = state.sessionId ? "waiting for frames…" : "on";
    $("g2g").textContent = !probe.on ? "off" : n ? `p50 ${fmtMs(p50)} · p95 ${fmtMs(p95)}` : idle;
  }

  function resetLatency() {
    probe.samples = [];
    probe.drawnAt.clear();
    showLatency();
  }

  // The switch: stamp and read while on, and ask the server to keep the probe rows.
  async function setMeasuring(on) {
    probe.on = on;
    $("measure-latency").checked = on;
    change("probe", on, true);
    const video = $("remote");
    clearInterval(probe.timer);
    if (probe.remoteHandle !== null) video.cancelVideoFrameCallback(probe.remoteHandle);
    probe.remoteHandle = null;
    if (on) {
      probe.remoteHandle = video.requestVideoFrameCallback(onReturnedFrame);
      probe.timer = setInterval(showLatency, LATENCY_EVERY_MS);
    }
    resetLatency();
    await switchTrack();
  }

  function setupLatencySwitch() {
    const input = $("measure-latency");
    input.checked = false;
    input.disabled = !canMeasure;
    if (!canMeasure) input.closest("label").title = "This browser cannot read video frames (requestVideoFrameCallback).";
    input.addEventListener("change", () => setMeasuring(input.checked));
    state.setMeasuring = setMeasuring;
  }

  // ---- the stream's name: viewers (OBS Browser Sources, /view pages) find it by it ----
  function publishName() {
    return $("publish-name").value.trim();
  }

  function showViewLink(name) {
    const link = $("view-link");
    link.hidden = !name;
    if (!name) return;
    link.href = `/view/${encodeURIComponent(name)}`;
    link.textContent = `View as ${name}`;
    link.title = `Open in OBS as a Browser Source: ${location.origin}/view/${name} (add ?transparent=1 with Remove)`;
  }

  // ---- boot ----
  async function init() {
    setupCodecSelect();
    setupLatencySwitch();
    $("sv-quality-tile").title = QUALITY_TITLE;
    setStatus("idle");
    setSync("local");
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
      // The diffusion models this server serves become the model picker's choices.
      const health = await fetchJSON("/healthz");
      const model = (body.properties || {}).diffusion_model;
      if (model && health.ok && health.body && health.body.diffusion_models) model.enum = health.body.diffusion_models;
    } catch (err) {
      $("controls").replaceChildren(el("p", { class: "field-error", text: `Could not load the controls: ${err.message || err}` }));
      return;
    }
    buildControls();
    const defaults = {};
    for (const [field, spec] of Object.entries(state.schema.properties || {})) {
      if ("default" in spec) defaults[field] = spec.default;
    }
    showParams(defaults);
    await loadBackgrounds();
    state.ready = true;
    document.body.dataset.ready = "true";
  }

  init();
})();
