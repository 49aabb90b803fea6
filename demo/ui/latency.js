// Glass-to-glass latency: a frame id stamped into the picture this page sends, read back from the
// processed frames. The stamp is engine/media/frame_ids.py's: ID_BITS blocks of floor(width / ID_BITS)
// across the top ID_ROWS rows, light for 1, dark for 0. With `probe` on the server keeps those
// rows as they came, so the id read from a returned frame names the camera frame it was made from.

import { $, fmtMs } from "./dom.js";

const ID_BITS = 20;
const ID_ROWS = 16;
const ID_MASK = (1 << ID_BITS) - 1;
const ID_DARK = 32;
const ID_LIGHT = 224;
const ID_KEEP = 256; // ids drawn and not yet seen back: ~8 s at 30 fps
const LATENCY_WINDOW = 300; // the percentiles are over the last this many frames
const STAMP_FPS = 30;
const LATENCY_EVERY_MS = 1000;

export const canMeasure = "requestVideoFrameCallback" in HTMLVideoElement.prototype
  && "captureStream" in HTMLCanvasElement.prototype;

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function stampId(ctx, width, id) {
  const block = Math.floor(width / ID_BITS);
  for (let bit = 0; bit < ID_BITS; bit++) {
    const gray = (id >> bit) & 1 ? ID_LIGHT : ID_DARK;
    ctx.fillStyle = `rgb(${gray}, ${gray}, ${gray})`;
    ctx.fillRect(bit * block, 0, block, ID_ROWS);
  }
}

export class LatencyProbe {
  // state: the page's (stream, sender, sessionId); setProbe(on): ask the server to keep the rows.
  constructor(state, setProbe) {
    this.state = state;
    this.setProbe = setProbe;
    this.on = false;
    this.canvas = null; // the camera's picture with the id on top; its track is what we send
    this.ctx = null;
    this.track = null;
    this.cancelDraw = null;
    this.reader = null; // the small canvas the returned frames' top rows are read from
    this.remoteHandle = null;
    this.timer = null;
    this.nextId = 0;
    this.drawnAt = new Map(); // id -> performance.now() when drawn, oldest first
    this.samples = []; // latencies in ms, newest last
    window.camfxLatency = { p50: null, p95: null, n: 0 };
  }

  setup() {
    const input = $("measure-latency");
    input.checked = false;
    input.disabled = !canMeasure;
    if (!canMeasure) input.closest("label").title = "This browser cannot read video frames (requestVideoFrameCallback).";
    input.addEventListener("change", () => this.setMeasuring(input.checked));
  }

  // The track the sender should carry now: the stamped canvas's while measuring, else the camera's.
  outgoingTrack() {
    const camera = this.state.stream ? this.state.stream.getVideoTracks()[0] : null;
    if (this.on && camera && !this.track) this.startStamping(camera);
    else if (!(this.on && camera) && this.track) this.stopStamping();
    return this.track || camera;
  }

  async switchTrack() {
    const track = this.outgoingTrack();
    const sender = this.state.sender;
    if (!sender || !track || sender.track === track) return;
    try {
      await sender.replaceTrack(track);
    } catch (err) {
      console.warn("replaceTrack failed", err);
    }
  }

  startStamping(camera) {
    const { width = 640, height = 480 } = camera.getSettings();
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.ctx = this.canvas.getContext("2d", { alpha: false });
    this.track = this.canvas.captureStream(STAMP_FPS).getVideoTracks()[0];
    this.drawStamped();
  }

  stopStamping() {
    if (this.cancelDraw) this.cancelDraw();
    if (this.track) this.track.stop();
    Object.assign(this, { canvas: null, ctx: null, track: null, cancelDraw: null });
    this.drawnAt.clear();
  }

  // Each camera frame: copied onto the canvas with the next id over its top rows.
  drawStamped() {
    const video = $("local");
    const { canvas, ctx } = this;
    if (!canvas) return;
    if (video.videoWidth) {
      if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
      }
      ctx.drawImage(video, 0, 0);
      stampId(ctx, canvas.width, this.nextId);
      this.remember(this.nextId, performance.now());
      this.nextId = (this.nextId + 1) & ID_MASK;
    }
    const handle = video.requestVideoFrameCallback(() => this.drawStamped());
    this.cancelDraw = () => video.cancelVideoFrameCallback(handle);
  }

  remember(id, at) {
    this.drawnAt.delete(id); // a wrapped id goes to the back again
    this.drawnAt.set(id, at);
    if (this.drawnAt.size > ID_KEEP) this.drawnAt.delete(this.drawnAt.keys().next().value);
  }

  // The id in a returned frame: each block's centre (rows 4..12, the middle half of its width,
  // away from the codec's smeared edges), thresholded halfway between dark and light.
  readId(video) {
    const width = video.videoWidth;
    const canvas = this.reader || (this.reader = document.createElement("canvas"));
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

  onReturnedFrame(now, metadata) {
    const video = $("remote");
    this.remoteHandle = video.requestVideoFrameCallback((n, m) => this.onReturnedFrame(n, m));
    if (video.videoWidth >= ID_BITS * 4) this.record(this.readId(video), metadata.expectedDisplayTime || now);
  }

  // A known id seen for the first time: one sample. Frames come back in order, so it and every
  // id drawn before it are done with (a repeated frame, or a misread older id, adds nothing).
  record(id, shownAt) {
    const drawn = this.drawnAt.get(id);
    if (drawn === undefined) return;
    for (const key of this.drawnAt.keys()) {
      this.drawnAt.delete(key);
      if (key === id) break;
    }
    this.samples.push(shownAt - drawn);
    if (this.samples.length > LATENCY_WINDOW) this.samples.shift();
  }

  show() {
    const sorted = [...this.samples].sort((a, b) => a - b);
    const n = sorted.length;
    window.camfxLatency = n ? { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), n } : { p50: null, p95: null, n: 0 };
    const { p50, p95 } = window.camfxLatency;
    const idle = this.state.sessionId ? "waiting for frames…" : "on";
    $("g2g").textContent = !this.on ? "off" : n ? `p50 ${fmtMs(p50)} · p95 ${fmtMs(p95)}` : idle;
  }

  reset() {
    this.samples = [];
    this.drawnAt.clear();
    this.show();
  }

  // The switch: stamp and read while on, and ask the server to keep the probe rows.
  async setMeasuring(on) {
    this.on = on;
    $("measure-latency").checked = on;
    this.setProbe(on);
    const video = $("remote");
    clearInterval(this.timer);
    if (this.remoteHandle !== null) video.cancelVideoFrameCallback(this.remoteHandle);
    this.remoteHandle = null;
    if (on) {
      this.remoteHandle = video.requestVideoFrameCallback((n, m) => this.onReturnedFrame(n, m));
      this.timer = setInterval(() => this.show(), LATENCY_EVERY_MS);
    }
    this.reset();
    await this.switchTrack();
  }
}
