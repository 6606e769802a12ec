// The upload form: a CSV by drag-and-drop or picker, the request's options, errors as a table.

import { api, errorView } from "./api.js";
import { h } from "./dom.js";

const FORMATS = [
  ["keep", "Keep each image's format"],
  ["jpeg", "JPEG"],
  ["webp", "WebP"],
  ["avif", "AVIF"],
  ["png", "PNG"],
];

function field(id, label, control, hint, wide = false) {
  return h("div", { class: wide ? "field wide" : "field" },
    h("label", { for: id }, label, hint ? h("span", { class: "hint" }, ` ${hint}`) : null),
    control);
}

export function uploadForm() {
  const file = h("input", { id: "file", name: "file", type: "file", accept: ".csv,text/csv", required: true });
  const chosen = h("span", { class: "muted small", id: "chosen", "aria-live": "polite" });
  const drop = h("div", { class: "drop", id: "drop" },
    h("strong", {}, "Drop a product CSV here"),
    h("span", { class: "muted small" }, "S. No., Product Name, Input Image Urls"),
    h("label", { for: "file" }, "or choose a file: "),
    file, chosen);
  const quality = h("input", { id: "quality", name: "quality", type: "text", inputmode: "text", list: "qualities",
    placeholder: "server default", pattern: "auto|[0-9]{1,3}", size: 8, "aria-describedby": "quality-hint" });
  const qualities = h("datalist", { id: "qualities" }, ["auto", "50", "65", "75", "85"].map((q) => h("option", { value: q })));
  const format = h("select", { id: "format", name: "format" }, FORMATS.map(([v, l]) => h("option", { value: v }, l)));
  const maxWidth = h("input", { id: "max_width", name: "max_width", type: "number", min: 1, max: 16384, placeholder: "none" });
  const maxHeight = h("input", { id: "max_height", name: "max_height", type: "number", min: 1, max: 16384, placeholder: "none" });
  const webhook = h("input", { id: "webhook_url", name: "webhook_url", type: "url", placeholder: "https://example.com/hooks/imgbatch" });
  const submit = h("button", { type: "submit", id: "submit" }, "Compress images");
  const result = h("div", { id: "upload-result", "aria-live": "polite" });

  const form = h("form", { id: "upload", class: "card", "aria-labelledby": "upload-title", novalidate: true },
    h("h2", { id: "upload-title" }, "New request"),
    drop,
    h("div", { class: "row" },
      field("quality", "Quality", quality, "1–100 or auto"),
      qualities,
      field("format", "Format", format),
      field("max_width", "Max width", maxWidth, "px"),
      field("max_height", "Max height", maxHeight, "px"),
      field("webhook_url", "Webhook URL", webhook, "optional", true)),
    h("p", { class: "muted small", id: "quality-hint" },
      "Images are scaled down to fit the box (never up) and are never stored larger than they came. ",
      "Quality auto picks the lowest quality that still looks like the original."),
    h("div", { class: "actions" }, submit),
    result);

  const showFile = () => { chosen.textContent = file.files.length ? `Selected: ${file.files[0].name}` : ""; };
  file.addEventListener("change", showFile);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      file.files = event.dataTransfer.files;
      showFile();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    if (!file.files.length) {
      result.appendChild(errorView({ message: "Choose a CSV file first (or drop one on the box above).", details: [] }));
      file.focus();
      return;
    }
    // Only what the user set is sent: empty fields leave the server's defaults in charge.
    const body = new FormData();
    for (const control of [quality, format, maxWidth, maxHeight, webhook]) {
      const value = control.value.trim();
      if (value) body.append(control.name, value);
    }
    body.append("file", file.files[0], file.files[0].name);
    submit.disabled = true;
    submit.textContent = "Uploading…";
    try {
      const accepted = await api("/api/upload", { method: "POST", body });
      window.location.assign(`/requests/${encodeURIComponent(accepted.request_id)}`);
    } catch (error) {
      result.appendChild(errorView(error));
    } finally {
      submit.disabled = false;
      submit.textContent = "Compress images";
    }
  });
  return form;
}
