// Before / after of one image: the input, fetched by the browser from its own URL only on this
// page (whose policy allows that one origin), beside the stored output at the same scale.

import { api, errorView, setupKeyBar } from "./api.js";
import { $, bytes, h, httpUrl, percent, reasonWords, savedPercent } from "./dom.js";

const match = window.location.pathname.match(/^\/requests\/([^/]+)\/compare\/(\d+)\/(\d+)\/?$/);

function side(title, src, alt, facts, id) {
  const frame = h("div", { class: "frame" });
  const note = h("p", { class: "small muted", hidden: true });
  if (src) {
    const img = h("img", { src, alt, id });
    img.addEventListener("error", () => {
      note.textContent = "Your browser could not load this image here (it may have moved, be gone, or be served from another address).";
      note.hidden = false;
    });
    frame.appendChild(img);
  }
  return h("figure", {}, frame, h("figcaption", {}, h("strong", {}, title), " ", facts), note);
}

async function load() {
  const view = $("#view");
  if (!match) {
    view.replaceChildren(h("h1", {}, "Page not found"));
    return;
  }
  const [, requestId, productNumber, imageNumber] = match;
  const back = `/requests/${requestId}?page=${Math.floor((productNumber - 1) / 20) + 1}`;
  let doc;
  try {
    doc = await api(`/api/status/${requestId}?offset=${productNumber - 1}&limit=1`);
  } catch (error) {
    view.replaceChildren(h("p", {}, h("a", { href: back }, "← Back to the request")), errorView(error));
    return;
  }
  const product = doc.products[0];
  const image = product && product.images ? product.images[imageNumber - 1] : null;
  if (!image) {
    view.replaceChildren(h("p", {}, h("a", { href: back }, "← Back to the request")), h("h1", {}, "No such image in this request"));
    return;
  }
  document.title = `${product.product_name}, image ${imageNumber} · imgbatch`;
  const saved = savedPercent(image.bytes_in, image.bytes_out);
  const after = image.status === "done"
    ? side("After", httpUrl(image.output_url), "Compressed image", `${bytes(image.bytes_out)} · ${image.width} × ${image.height} · ${String(image.format).toUpperCase()}${image.quality ? ` q${image.quality}` : ""}`, "after")
    : side("After", null, "", image.status === "failed" ? reasonWords(image.error?.code) : "Not compressed yet.", "after");
  view.replaceChildren(
    h("p", {}, h("a", { href: back }, "← Back to the request")),
    h("section", { class: "card", "aria-labelledby": "compare-title" },
      h("h1", { id: "compare-title" }, `#${product.serial_number} ${product.product_name} · image ${imageNumber}`),
      saved !== null ? h("p", { class: "stat" }, h("span", { class: "big good" }, `−${percent(saved)}`), ` ${bytes(image.bytes_in)} → ${bytes(image.bytes_out)}`) : null,
      h("div", { class: "compare" },
        side("Before", httpUrl(image.input_url), "Original image, from its own address", image.bytes_in ? bytes(image.bytes_in) : "", "before"),
        after),
      h("p", { class: "small muted" }, "Both are shown at the same displayed size. The original is loaded by your browser from ",
        h("a", { href: httpUrl(image.input_url), rel: "noreferrer" }, image.input_url), ".")));
}

setupKeyBar(load);
load();
