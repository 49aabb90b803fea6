// camfx viewer: /view/NAME plays the stream published as NAME (WHEP), full window, for an OBS
// Browser Source or any browser. ?transparent=1 turns the key colour of the `remove` effect into
// real transparency (a soft-edged chroma key in WebGL), so OBS needs no chroma-key filter.
// Query options: token=T (a server started with --token), key=00ff00 (the key colour; default:
// the stream's own key_color), status=0 (no status line), ice=relay (TURN only).
"use strict";

(() => {
  const query = new URLSearchParams(location.search);
  const name = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const token = query.get("token") || "";
  const transparent = ["1", "true", "yes"].includes(query.get("transparent") || "");
  const RETRY_MS = 2000;
  const GATHER_MS = 3000;
  const video = document.getElementById("video");
  const canvas = document.getElementById("canvas");
  const status = document.getElementById("status");
  const viewer = { state: "connecting", playing: false, frames: 0, resource: null, pc: null, key: null };
  window.camfxViewer = viewer; // for tests and for looking at it in devtools

  const DISCONNECTED_GIVE_UP_MS = 3000; // "disconnected" this long: the stream or its server is gone

  // What the viewer is doing, shown over the picture (status=0 hides the line, not the state):
  // connecting, waiting (no such stream yet, or it stopped), connected, gone (the server is not
  // answering). Only while connected is the picture shown: never a frozen last frame.
  function setState(state, text) {
    viewer.state = state;
    document.body.dataset.state = state;
    status.textContent = text;
    status.hidden = !text || query.get("status") === "0";
  }

  function headers(extra = {}) {
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  async function json(url) {
    const response = await fetch(url, { headers: headers() });
    return response.ok ? response.json() : null;
  }

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => pc.iceGatheringState === "complete" && resolve();
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, GATHER_MS);
    });
  }

  async function leave() {
    const { pc, resource } = viewer;
    viewer.pc = viewer.resource = null;
    viewer.playing = false;
    video.srcObject = null;
    if (pc) pc.close();
    if (resource) fetch(resource, { method: "DELETE", headers: headers(), keepalive: true }).catch(() => {});
  }

  let retryTimer = null;
  function retry() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(watch, RETRY_MS);
  }

  // The stream stopped (its publisher or the server went away): look for it again.
  async function lost(pc) {
    if (pc !== viewer.pc) return;
    await leave();
    setState("waiting", `The stream “${name}” stopped. Waiting for it to come back…`);
    retry();
  }

  async function watch() {
    await leave();
    let ice;
    try {
      ice = (await json("/ice-servers")) || { iceServers: [] };
    } catch (err) {
      setState("gone", `The server is not answering. Trying again in ${RETRY_MS / 1000} s…`);
      retry();
      return;
    }
    const pc = new RTCPeerConnection({
      iceServers: ice.iceServers, iceTransportPolicy: query.get("ice") === "relay" ? "relay" : "all",
    });
    viewer.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (event) => {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
    });
    let disconnected = null;
    pc.addEventListener("connectionstatechange", () => {
      if (pc !== viewer.pc) return;
      clearTimeout(disconnected);
      if (pc.connectionState === "connected") setState("connected", "");
      else if (pc.connectionState === "disconnected") {
        disconnected = setTimeout(() => pc.connectionState === "disconnected" && lost(pc), DISCONNECTED_GIVE_UP_MS);
      } else if (["failed", "closed"].includes(pc.connectionState)) lost(pc);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (pc !== viewer.pc) return;
    let response;
    try {
      response = await fetch(`/whep/${encodeURIComponent(name)}`, {
        method: "POST", headers: headers({ "Content-Type": "application/sdp" }), body: pc.localDescription.sdp,
      });
    } catch (err) {
      await leave();
      setState("gone", `The server is not answering. Trying again in ${RETRY_MS / 1000} s…`);
      retry();
      return;
    }
    if (response.status !== 201) {
      const body = await response.json().catch(() => null);
      const why = (body && body.error) || `HTTP ${response.status}`;
      await leave();
      if (response.status === 404) setState("waiting", `Waiting for the stream “${name}” to start…`);
      else setState("refused", `Cannot view “${name}”: ${why}`);
      if (response.status !== 401) retry();
      return;
    }
    viewer.resource = new URL(response.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  }

  // ---- the chroma key: key colour to alpha, by distance in the CbCr plane, with soft edges ----
  const VERTEX = `
    attribute vec2 corner;
    varying vec2 uv;
    void main() {
      uv = vec2((corner.x + 1.0) / 2.0, (1.0 - corner.y) / 2.0);
      gl_Position = vec4(corner, 0.0, 1.0);
    }`;
  const FRAGMENT = `
    precision mediump float;
    uniform sampler2D picture;
    uniform vec2 keyChroma;
    uniform vec2 edges;  // chroma distance: fully keyed below edges.x, fully kept above edges.y
    varying vec2 uv;
    vec2 chroma(vec3 c) {
      return vec2(-0.168736 * c.r - 0.331264 * c.g + 0.5 * c.b, 0.5 * c.r - 0.418688 * c.g - 0.081312 * c.b);
    }
    uniform vec3 key;
    void main() {
      vec3 c = texture2D(picture, uv).rgb;
      // The server blended the person over the key colour: c = a * person + (1 - a) * key. How
      // far c's chroma is from the key's says a; then the person's own colour is unmixed from c,
      // so soft edges (hair, motion) carry no green fringe.
      float alpha = smoothstep(edges.x, edges.y, distance(chroma(c), keyChroma));
      vec3 person = clamp((c - (1.0 - alpha) * key) / max(alpha, 0.05), 0.0, 1.0);
      gl_FragColor = vec4(person, alpha);
    }`;

  function hexToRgb(hex) {
    const value = parseInt(hex.replace(/^#/, ""), 16);
    return [(value >> 16) & 255, (value >> 8) & 255, value & 255].map((v) => v / 255);
  }

  function startKeying(keyHex) {
    const gl = canvas.getContext("webgl", { premultipliedAlpha: false, alpha: true });
    if (!gl) {
      console.warn("This browser has no WebGL: showing the picture without transparency.");
      return;
    }
    document.body.classList.add("keyed");
    const compile = (type, source) => {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      return shader;
    };
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    gl.useProgram(program);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const corner = gl.getAttribLocation(program, "corner");
    gl.enableVertexAttribArray(corner);
    gl.vertexAttribPointer(corner, 2, gl.FLOAT, false, 0, 0);
    gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
    for (const [p, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
      [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_2D, p, v);
    const [r, g, b] = hexToRgb(keyHex);
    gl.uniform3f(gl.getUniformLocation(program, "key"), r, g, b);
    gl.uniform2f(gl.getUniformLocation(program, "keyChroma"),
      -0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b);
    gl.uniform2f(gl.getUniformLocation(program, "edges"),
      parseFloat(query.get("key_low") || "0.08"), parseFloat(query.get("key_high") || "0.40"));
    const draw = () => {
      if (video.videoWidth) {
        if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
          canvas.width = video.videoWidth;
          canvas.height = video.videoHeight;
          gl.viewport(0, 0, canvas.width, canvas.height);
        }
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, video);
        gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
      }
      schedule(draw);
    };
    schedule(draw);
  }

  function schedule(callback) {
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => callback());
    else requestAnimationFrame(callback);
  }

  function countFrames() {
    viewer.frames += 1;
    viewer.playing = true;
    schedule(countFrames);
  }

  async function init() {
    if (!name) {
      setState("refused", "No stream name: open /view/NAME");
      return;
    }
    setState("connecting", `Connecting to “${name}”…`);
    if (transparent) {
      const stream = await json(`/streams/${encodeURIComponent(name)}`);
      const key = query.get("key") || (stream && stream.params && stream.params.key_color) || "#00ff00";
      viewer.key = key.startsWith("#") ? key : `#${key}`;
      startKeying(viewer.key);
    }
    schedule(countFrames);
    window.addEventListener("pagehide", leave);
    watch();
  }

  init();
})();
