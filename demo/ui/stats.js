// The serve page's statistics: one summary line always in view, and the details (connection,
// engine, per-stage time) behind one click. The browser's side from pc.getStats(), the engine's
// from the "stats" messages on the control channel.

import { $, el, fmtFps, fmtMs, fmtRate } from "./dom.js";

// The rungs of the engine's quality ladder (engine/pipeline/budget.py LADDER), as a user sees them.
export const QUALITY_TIPS = {
  full: "Full quality: the person mask is made from every frame and its edges are snapped to the picture.",
  "no-feather": "Frames ran over budget, so edge snapping is off: mask edges are a little softer and coarser.",
  lean: "As no-feather, and the toon effect smooths in one pass instead of several.",
  "mask-every-2nd": "The lowest level: the person mask is made from every second frame and reused in between, "
    + "so edges may trail fast movement.",
};
const QUALITY_TITLE = "The engine's quality level: it steps down when frames take longer than the budget, "
  + "and back up once there is headroom.\n"
  + Object.entries(QUALITY_TIPS).map(([name, tip]) => `• ${name}: ${tip}`).join("\n");

export class Stats {
  constructor(state) {
    this.state = state; // the page's state: lastStats, lastServerStats, serverRates, codec
    this.previous = null; // the last getStats() figures, for rates
    this.previousTotals = null; // { at, dropped, misses } from the last server message
    this.detailText = $("st-detail").textContent; // the explanation shown until there are figures
    $("sv-quality-tile").title = QUALITY_TITLE;
  }

  summary() {
    const s = this.state.lastStats;
    const v = this.state.lastServerStats;
    const parts = [];
    if (s && s.fpsReceived != null) parts.push(fmtFps(s.fpsReceived));
    if (v && v.engine_latency_ms_p50 != null) parts.push(`engine ${fmtMs(v.engine_latency_ms_p50)}`);
    if (v && v.quality && v.quality !== "full") parts.push(`quality: ${v.quality}`);
    if (v && v.diffusion && v.diffusion.status === "error") parts.push("diffusion: error");
    $("stats-summary").textContent = parts.length ? parts.join(" · ") : "";
  }

  // Stop: nothing stale stays on screen.
  clear() {
    for (const dd of document.querySelectorAll(".stats dd")) dd.textContent = "–";
    delete $("sv-quality").dataset.level;
    $("sv-quality").title = "";
    $("st-detail").textContent = this.detailText;
    for (const id of ["codec-in-use", "st-quality-note", "sv-runtime", "stats-summary"]) $(id).textContent = "";
    $("sv-stages").replaceChildren();
    $("sv-diffusion").hidden = true;
    this.previous = null;
    this.previousTotals = null;
    Object.assign(this.state, { lastStats: null, lastServerStats: null, serverRates: null });
  }

  async poll(pc) {
    let report;
    try {
      report = await pc.getStats();
    } catch (_) {
      return;
    }
    if (pc !== this.state.pc) return;
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
    const prev = this.previous;
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
    this.previous = stats;
    this.state.lastStats = stats;
    this.state.codec = stats.codecReceived || stats.codecSent;
    this.renderClient(stats);
  }

  renderClient(s) {
    $("st-fps-sent").textContent = fmtFps(s.fpsSent);
    $("st-fps-recv").textContent = fmtFps(s.fpsReceived);
    $("st-decoded").textContent = s.framesDecoded != null ? s.framesDecoded.toLocaleString() : "–";
    // A round trip under 0.1 ms is loopback: say so rather than "0.0 ms".
    $("st-rtt").textContent = s.rttMs != null && s.rttMs < 0.1 ? "< 0.1 ms" : fmtMs(s.rttMs);
    $("st-jitter").textContent = fmtMs(s.jitterBufferMs);
    $("st-res").textContent = s.width ? `${s.width}×${s.height}` : "–";
    $("codec-in-use").textContent = this.state.codec ? `· ${this.state.codec.replace(/^video\//, "")}` : "";
    const parts = [];
    if (s.sentWidth) parts.push(["sending", `${s.sentWidth}×${s.sentHeight}`]);
    if (s.encoder) parts.push(["encoder", s.encoder]);
    if (s.decoder) parts.push(["decoder", s.decoder]);
    if (s.framesDropped) parts.push(["dropped by decoder", String(s.framesDropped)]);
    if (s.jitterBufferAvgMs != null) parts.push(["jitter buffer avg", fmtMs(s.jitterBufferAvgMs)]);
    if (parts.length) {
      $("st-detail").replaceChildren(...parts.flatMap(([k, v], i) => [i ? " · " : "", `${k} `, el("b", { text: v })]));
    }
    this.summary();
  }

  // Drops and misses as per-second rates over the last stats interval, from successive totals.
  rates(s) {
    const now = performance.now();
    const prev = this.previousTotals;
    this.previousTotals = { at: now, dropped: s.frames_dropped, misses: s.deadline_misses };
    const dt = prev ? (now - prev.at) / 1000 : 0;
    const rate = (total, before) => (dt > 0 && total != null && before != null ? Math.max(0, total - before) / dt : null);
    return { dropped: rate(s.frames_dropped, prev && prev.dropped), misses: rate(s.deadline_misses, prev && prev.misses) };
  }

  renderServer(s) {
    const rates = this.rates(s);
    this.state.lastServerStats = s;
    this.state.serverRates = rates;
    $("sv-fps").textContent = `${s.fps_in ?? "–"} / ${s.fps_out ?? "–"}`;
    $("sv-latency").textContent = fmtMs(s.engine_latency_ms_p50);
    $("sv-dropped").textContent = fmtRate(rates.dropped);
    $("sv-misses").textContent = fmtRate(rates.misses);
    $("sv-quality").textContent = s.quality ?? "–";
    $("sv-quality").dataset.level = s.quality === "full" ? "ok" : "degraded";
    $("sv-quality").title = QUALITY_TIPS[s.quality] || "";
    $("sv-budget").textContent = fmtMs(s.budget_ms);
    $("st-quality-note").textContent = s.frames_in != null ? `· ${s.frames_in.toLocaleString()} frames in` : "";
    renderStages($("sv-stages"), s.stage_ms, s.budget_ms);

    const runtimes = Object.entries(s.runtimes || {});
    const failed = runtimes.flatMap(([model, r]) => (r.failed || []).map((f) => `${model}: ${f}`));
    $("sv-runtime").textContent = runtimes.map(([model, r]) => `${model} on ${r.runtime}`).join(" · ")
      + (failed.length ? ` · fell back after: ${failed.join("; ")}` : "");
    $("sv-runtime").dataset.fallback = failed.length ? "yes" : "no";

    const d = s.diffusion;
    $("sv-diffusion").hidden = !d;
    if (d) {
      const stages = Object.entries(d.stage_ms || {}).map(([k, v]) => `${k} ${fmtMs(v)}`);
      $("sv-diffusion").textContent = d.status === "error"
        ? `Diffusion: error · ${d.error}`
        : [`Diffusion: ${d.status}`, `${d.fps} pictures/s`, `${d.frames} made`, d.skipped ? `${d.skipped} skipped` : null,
          d.lag_frames ? `lag ${d.lag_frames} frames` : null, d.device, ...stages].filter(Boolean).join(" · ");
      $("sv-diffusion").dataset.status = d.status;
    }
    this.summary();
  }
}

// Per-stage time as bars against the frame budget (both pages).
export function renderStages(box, stageMs, budgetMs) {
  const stages = Object.entries(stageMs || {});
  const total = stages.reduce((sum, [, ms]) => sum + ms, 0);
  const budget = budgetMs || 33.3;
  const scale = Math.max(budget, total);
  const bar = (ms) => el("span", { class: "stage-bar" }, el("i", { style: `width:${Math.min(100, (ms / scale) * 100).toFixed(1)}%` }));
  const rows = stages.map(([name, ms]) =>
    el("div", { class: "stage-row", dataset: { stage: name } },
      el("span", { class: "stage-name", text: name }), bar(ms), el("span", { class: "stage-ms", text: fmtMs(ms) })));
  if (stages.length) {
    rows.push(el("div", { class: `stage-row stage-total${total > budget ? " over" : ""}` },
      el("span", { class: "stage-name", text: "total" }), bar(total),
      el("span", { class: "stage-ms", text: budgetMs ? `${fmtMs(total)} / ${fmtMs(budget)}` : fmtMs(total) })));
  }
  box.replaceChildren(...rows);
}
