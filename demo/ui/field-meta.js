// How each parameter is shown: labels, value formats, hints. Ranges, choices and defaults come
// from /params/schema, and which controls apply from its `x-camfx-ui` metadata; a field with no
// entry here still gets a control, labelled from its name.

const fixed = (digits) => (v) => v.toFixed(digits);
const px = (v) => `${v} px`;
const offWhenZero = (fmt) => (v) => (v ? fmt(v) : "off");

export const FIELDS = {
  effect: {
    label: "Effect", kind: "segmented",
    labels: { none: "None", blur: "Blur", replace: "Replace", remove: "Remove", toon: "Toon", diffusion: "Diffusion" },
  },
  blur_strength: { label: "Blur strength", step: 0.5, fmt: (v) => `${v.toFixed(1)} px` },
  background: { label: "Fill with", kind: "segmented", labels: { color: "Colour", image: "Picture" } },
  background_color: { label: "Colour", kind: "color" },
  background_image: { label: "Picture", kind: "background" },
  background_fit: { label: "Fit", kind: "segmented", labels: { cover: "Fill the frame", contain: "Show all" } },
  key_color: { label: "Key colour", kind: "color", hint: "Key it out downstream (OBS chroma key)." },
  toon_smoothing: { label: "Smoothing passes", step: 1, fmt: String },
  toon_edges: { label: "Edge darkness", step: 0.05, fmt: fixed(2) },
  diffusion_mode: {
    label: "Restyle", kind: "segmented",
    labels: { frame: "Frame", background: "Background", person: "Person", backdrop: "Backdrop" },
    hint: "Backdrop and background keep the camera's frame rate whatever the generation rate.",
  },
  backdrop_source: { label: "Backdrop from", kind: "segmented", labels: { prompt: "Prompt only", room: "The room" } },
  prompt: { label: "Prompt", kind: "text", hint: "Press Enter: applied within a few frames, no model reload." },
  strength: { label: "Strength", step: 0.05, fmt: fixed(2) },
  steps: { label: "Steps", step: 1, fmt: String },
  seed: { label: "Seed", kind: "number" },
  diffusion_size: { label: "Resolution (long side)", step: 64, fmt: px },
  diffusion_model: { label: "Model", kind: "select" },
  diffusion_feedback: { label: "Anti-flicker feedback", step: 0.05, fmt: offWhenZero(fixed(2)) },
  similarity_threshold: { label: "Skip similar frames", step: 0.01, fmt: offWhenZero(fixed(2)) },
  stream_batch: { label: "Stream batch (steps − 1 frames of lag)", kind: "checkbox" },
  guidance: { label: "Self-negative guidance", step: 0.1, fmt: (v) => (v > 1 ? v.toFixed(1) : "off") },
  model: {
    label: "Model", kind: "select",
    labels: { general: "General · 256×256", landscape: "Landscape · 144×256 (fast)" },
  },
  mask_region: { label: "Look at the person (sharper edges)", kind: "checkbox" },
  mask_mode: { label: "Mask edges", kind: "segmented", labels: { soft: "Soft", threshold: "Hard" } },
  mask_threshold: { label: "Threshold", step: 0.01, fmt: fixed(2) },
  mask_smoothing: { label: "Temporal smoothing", step: 0.05, fmt: fixed(2) },
  mask_feather: { label: "Edge snapping", step: 1, fmt: offWhenZero(px) },
  probe: { label: "Keep probe rows (latency measurement)", kind: "checkbox" },
};

export function prettyName(field) {
  const name = String(field).replace(/_/g, " ");
  return name.charAt(0).toUpperCase() + name.slice(1);
}
