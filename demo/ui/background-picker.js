// The background picker: a tile per picture or video the server has (a thumbnail each), and an
// upload button. A ControlForm widget for `background_image`.
//
// GET /backgrounds answers {"items": [{id, kind: "image"|"video", bundled}], ...} with a JPEG at
// /backgrounds/{id}/thumbnail; an older server only {"bundled": [...], "uploaded": [...]}: then
// bundled pictures show their file under /static/backgrounds/ and uploads the file picked here.

import { el, fetchJSON, networkMessage } from "./dom.js";

function itemsOf(body) {
  if (body && Array.isArray(body.items)) return { items: body.items, thumbnails: true };
  const bundled = (body && body.bundled) || [];
  const uploaded = (body && body.uploaded) || [];
  return {
    items: [...bundled.map((id) => ({ id, kind: "image", bundled: true })),
      ...uploaded.map((id) => ({ id, kind: "image", bundled: false }))],
    thumbnails: false,
  };
}

export class BackgroundPicker {
  // onPick(id): a tile was picked or an upload finished.
  constructor({ onPick, id = "f-background_image", label = "Picture" }) {
    this.onPick = onPick;
    this.items = [];
    this.thumbnails = false;
    this.current = null;
    this.localPreviews = new Map(); // uploaded id -> object URL of the file picked here
    this.tiles = el("div", { class: "bg-picker", role: "radiogroup", id, "aria-label": label });
    this.upload = el("input", {
      type: "file", id: "upload", accept: "image/*,video/*", class: "visually-hidden",
      onchange: () => {
        if (this.upload.files[0]) this.send(this.upload.files[0]);
        this.upload.value = "";
      },
    });
    this.error = el("p", { class: "field-error", id: "upload-error", hidden: true });
    this.status = el("span", { class: "upload-status muted", "aria-live": "polite" });
    this.element = el("div", { class: "bg-chooser" },
      this.tiles,
      el("div", { class: "upload-row" },
        el("label", { class: "btn btn-small upload-btn", for: "upload", text: "Upload picture or video…" }),
        this.status),
      this.upload, this.error);
  }

  // The ControlForm widget: (field, spec, meta, change) -> { element, set }.
  widget() {
    return { element: this.element, set: (value) => this.select(value) };
  }

  async load() {
    try {
      const { ok, body } = await fetchJSON("/backgrounds");
      if (ok) Object.assign(this, itemsOf(body));
    } catch (_) {
      /* the picker keeps what it had */
    }
    this.render();
  }

  thumbnailOf(item) {
    if (!item.bundled && this.localPreviews.has(item.id) && item.kind === "image") return this.localPreviews.get(item.id);
    if (this.thumbnails) return `/backgrounds/${encodeURIComponent(item.id)}/thumbnail`;
    return item.bundled ? `/static/backgrounds/${encodeURIComponent(item.id)}.jpg` : null;
  }

  render() {
    const items = [...this.items];
    if (this.current && !items.some((i) => i.id === this.current)) items.push({ id: this.current, kind: "image", bundled: false });
    this.tiles.replaceChildren(...items.map((item) => {
      const name = item.bundled ? item.id : item.kind === "video" ? "your video" : "your picture";
      const tile = el("button", {
        type: "button", role: "radio", class: "bg-tile", dataset: { value: item.id, kind: item.kind },
        "aria-checked": String(item.id === this.current), title: item.bundled ? item.id : `uploaded (${item.id})`,
        onclick: () => this.onPick(item.id),
      });
      const src = this.thumbnailOf(item);
      if (src) {
        const img = el("img", { src, alt: "", loading: "lazy" });
        img.addEventListener("error", () => {
          const fallback = item.bundled ? `/static/backgrounds/${encodeURIComponent(item.id)}.jpg` : null;
          if (fallback && !img.src.endsWith(fallback)) img.src = fallback;
          else img.remove();
        });
        tile.append(img);
      }
      if (item.kind === "video") tile.append(el("i", { class: "bg-video", "aria-label": "video", text: "▶" }));
      tile.append(el("span", { text: name }));
      return tile;
    }));
  }

  select(id) {
    this.current = id;
    for (const tile of this.tiles.children) tile.setAttribute("aria-checked", String(tile.dataset.value === id));
    if (id && ![...this.tiles.children].some((t) => t.dataset.value === id)) this.render();
  }

  async send(file) {
    this.error.hidden = true;
    this.status.textContent = `Uploading ${file.name}…`;
    try {
      const { ok, status, body } = await fetchJSON("/backgrounds", {
        method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
      });
      if (!ok) throw new Error((body && body.error) || `The upload failed (HTTP ${status}).`);
      this.localPreviews.set(body.id, URL.createObjectURL(file));
      await this.load();
      this.onPick(body.id);
    } catch (err) {
      this.error.textContent = networkMessage(err);
      this.error.hidden = false;
    } finally {
      this.status.textContent = "";
    }
  }
}
