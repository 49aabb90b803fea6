// Choosing the video codec (where the browser lets a page: setCodecPreferences).

import { $ } from "./dom.js";

export function canPickCodec() {
  return typeof RTCRtpTransceiver !== "undefined" && "setCodecPreferences" in RTCRtpTransceiver.prototype;
}

export function setupCodecSelect() {
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

export function preferCodec(transceiver, mimeType) {
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
