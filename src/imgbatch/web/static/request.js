// One request at /requests/<id>: results first (savings, progress, actions), then its products
// page by page with a thumbnail of every output image.

import { api, downloadLink, errorView } from "./api.js";
import { badge, bytes, count, h, httpUrl, isFinal, percent, reasonWords, savedPercent, statusWord, when } from "./dom.js";
import { confirmDialog } from "./dialog.js";
import { features, offers } from "./features.js";

const PAGE_SIZE = 20;
const POLL_MS = 1000;

function stat(label, big, sub, cls = "") {
  return h("div", { class: "stat" },
    h("div", { class: "label" }, label),
    h("div", { class: `big ${cls}` }, big),
    sub ? h("div", { class: "small muted" }, sub) : null);
}

function optionsLine(options) {
  if (!options) return null;
  const parts = [`quality ${options.quality ?? "default"}`, `format ${options.format || "keep"}`];
  if (options.max_width || options.max_height) parts.push(`fit ${options.max_width || "any"} × ${options.max_height || "any"} px`);
  return h("p", { class: "small muted", id: "options" }, `Options: ${parts.join(" · ")}`);
}

function imageCard(requestId, productNumber, image, index) {
  const label = `Image ${index + 1}`;
  const thumb = h("div", { class: "thumb" });
  const caption = h("figcaption", {});
  if (image.status === "done" && httpUrl(image.output_url)) {
    thumb.appendChild(h("img", { src: httpUrl(image.output_url), loading: "lazy", decoding: "async", alt: `${label}, compressed` }));
    const saved = savedPercent(image.bytes_in, image.bytes_out);
    const kind = [image.format ? image.format.toUpperCase() : null, image.quality ? `q${image.quality}` : null].filter(Boolean).join(" ");
    caption.append(
      h("span", { class: "dims" }, `${image.width ?? "?"} × ${image.height ?? "?"}`, kind ? ` · ${kind}` : ""),
      h("span", { class: "sizes" }, `${bytes(image.bytes_in)} → ${bytes(image.bytes_out)}`),
      h("span", { class: "saved" }, saved === null ? "–" : saved > 0 ? `−${percent(saved)} saved` : "kept as is (no smaller)"),
      h("a", { href: `/requests/${encodeURIComponent(requestId)}/compare/${productNumber}/${index + 1}` },
        "Before / after", h("span", { class: "sr-only" }, ` of product ${productNumber}, ${label.toLowerCase()}`)));
  } else if (image.status === "failed") {
    thumb.appendChild(h("span", { class: "placeholder error" }, "Failed"));
    const error = image.error || {};
    caption.append(
      h("span", { class: "reason" }, reasonWords(error.code)),
      h("span", { class: "small" }, `${error.message || ""} (${error.code || "error"})`),
      h("span", { class: "url" }, image.input_url));
  } else if (image.status === "cancelled") {
    thumb.appendChild(h("span", { class: "placeholder" }, "Cancelled"));
    caption.append(h("span", { class: "muted" }, reasonWords("cancelled")), h("span", { class: "url" }, image.input_url));
  } else {
    thumb.appendChild(h("span", { class: "placeholder" }, statusWord(image.status), "…"));
    caption.append(h("span", { class: "url" }, image.input_url));
  }
  return h("figure", { class: `image ${image.status}`, "data-status": image.status }, thumb, caption);
}

function productItem(requestId, product, productNumber) {
  const images = product.images || product.input_urls.map((url) => ({ input_url: url, status: "pending" }));
  return h("li", { class: "product", "data-serial": product.serial_number },
    h("h3", {}, h("span", { class: "muted" }, `#${product.serial_number}`), product.product_name, badge(product.status),
      h("span", { class: "small muted" }, `${images.length} image${images.length === 1 ? "" : "s"}`)),
    h("div", { class: "images" }, images.map((image, i) => imageCard(requestId, productNumber, image, i))));
}

export function requestView(requestId) {
  const params = new URLSearchParams(window.location.search);
  const R = "/api/requests/{}";
  const state = { ops: null, page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1), timer: 0, token: 0, doc: null, rendered: new Map() };

  const summary = h("section", { class: "card", id: "summary", "aria-labelledby": "request-title" }, h("p", { class: "muted" }, "Loading…"));
  const actionMessage = h("div", { id: "action-message", "aria-live": "polite" });
  const list = h("ol", { class: "products", id: "products" });
  const pagerTop = h("div", { class: "pager", id: "pager" });
  const products = h("section", { class: "card", "aria-labelledby": "products-title" },
    h("h2", { id: "products-title" }, "Products"), pagerTop, list);
  const root = h("div", {}, summary, actionMessage, products);

  async function act(button, run) {
    actionMessage.replaceChildren();
    button.disabled = true;
    try {
      await run();
    } catch (error) {
      actionMessage.replaceChildren(errorView(error));
    } finally {
      button.disabled = false;
    }
  }

  function actions(doc) {
    const base = `/api/requests/${encodeURIComponent(requestId)}`;
    const final = isFinal(doc.status);
    const failed = doc.progress.failed || 0;
    const buttons = [];
    const can = (method, path) => offers(state.ops, method, path);
    if (final && (failed > 0 || doc.status === "cancelled") && can("POST", `${R}/retry`)) {
      const retry = h("button", { type: "button", id: "retry" }, doc.status === "cancelled" ? "Retry failed and cancelled images" : `Retry ${count(failed)} failed image${failed === 1 ? "" : "s"}`);
      retry.addEventListener("click", () => act(retry, async () => {
        render(await api(`${base}/retry`, { method: "POST" }));
        schedule();
      }));
      buttons.push(retry);
    }
    if (!final && can("POST", `${R}/cancel`)) {
      const cancel = h("button", { type: "button", class: "danger", id: "cancel" }, "Cancel request");
      cancel.addEventListener("click", () => act(cancel, async () => {
        const ok = await confirmDialog("Cancel this request?", "Images not started yet will not be processed. Images in flight finish. You can retry them later.", "Cancel request", "Keep running");
        if (!ok) return;
        render(await api(`${base}/cancel`, { method: "POST" }));
        schedule();
      }));
      buttons.push(cancel);
    } else if (final && can("DELETE", R)) {
      const remove = h("button", { type: "button", class: "danger", id: "delete" }, "Delete");
      remove.addEventListener("click", () => act(remove, async () => {
        const ok = await confirmDialog("Delete this request?", "Its compressed images, output CSV and history entry are removed for good.", "Delete", "Keep it");
        if (!ok) return;
        await api(base, { method: "DELETE" });
        sessionStorage.setItem("imgbatch.flash", `Request ${requestId.slice(0, 8)}… was deleted.`);
        window.location.assign("/");
      }));
      buttons.push(remove);
    }
    const onError = (error) => actionMessage.replaceChildren(errorView(error));
    const downloads = [];
    if (can("GET", `${R}/images.csv`)) downloads.push(downloadLink("images.csv", `${base}/images.csv`, `imgbatch-${requestId}-images.csv`, onError));
    if (final) {
      downloads.unshift(downloadLink("Output CSV", `${base}/output.csv`, `imgbatch-${requestId}.csv`, onError));
      if ((doc.savings?.images || doc.progress.succeeded) > 0 && can("GET", `${R}/images.zip`)) downloads.push(downloadLink("Images (ZIP)", `${base}/images.zip`, `imgbatch-${requestId}.zip`, onError));
    }
    return h("div", { class: "actions", id: "actions" }, buttons, h("span", { class: "muted small" }, "Download:"), downloads);
  }

  // Rebuilt only when what they offer changes, so a focused button survives the live updates.
  function keptActions(doc) {
    const key = [doc.status, doc.progress.failed, (doc.savings?.images || doc.progress.succeeded) > 0].join("|");
    if (state.actionsKey !== key) {
      state.actionsKey = key;
      state.actionsNode = actions(doc);
    }
    return state.actionsNode;
  }

  function renderSummary(doc) {
    const p = doc.progress;
    const s = doc.savings || { images: 0, bytes_in: 0, bytes_out: 0, saved_bytes: 0, saved_percent: 0 };
    const title = doc.filename || `Request ${requestId.slice(0, 8)}…`;
    document.title = `${title} · imgbatch`;
    const facts = h("div", { class: "facts" },
      h("div", { class: "pager" },
        h("h1", { id: "request-title" }, title),
        h("span", { id: "request-status" }, badge(doc.status))),
      h("div", { class: "summary" },
        stat("Saved", s.images ? percent(s.saved_percent) : "–", s.images ? `${bytes(s.saved_bytes)} smaller` : "nothing done yet", "good"),
        stat("Size", `${bytes(s.bytes_in)} → ${bytes(s.bytes_out)}`, `over ${count(s.images)} compressed image${s.images === 1 ? "" : "s"}`),
        stat("Images", `${count(p.succeeded)} of ${count(p.total)} done`,
          [p.failed ? `${count(p.failed)} failed` : null, p.pending ? `${count(p.pending)} to go` : null, p.cancelled ? `${count(p.cancelled)} cancelled` : null].filter(Boolean).join(" · ") || "all done")),
      h("div", { class: "bar" },
        h("label", { for: "progress", class: "small" }, `Progress: ${percent(p.percent)}`),
        h("progress", { id: "progress", max: 100, value: p.percent })),
      h("p", { class: "small muted" }, `Request ${requestId} · created ${when(doc.created_at)}`,
        doc.completed_at ? ` · finished ${when(doc.completed_at)}` : ""),
      optionsLine(doc.options));
    // The facts are replaced on every update; the actions stay put (see keptActions).
    const actionsNode = keptActions(doc);
    if (summary.firstElementChild && summary.firstElementChild.classList.contains("facts")) {
      summary.firstElementChild.replaceWith(facts);
    } else {
      summary.replaceChildren(facts);
    }
    if (summary.lastElementChild !== actionsNode) {
      if (summary.children.length > 1) summary.lastElementChild.replaceWith(actionsNode);
      else summary.appendChild(actionsNode);
    }
    summary.dataset.status = doc.status;
  }

  function renderProducts(doc) {
    const pagerKey = [doc.offset, doc.products.length, doc.products_total, doc.next_offset].join("|");
    if (state.pagerKey !== pagerKey) {
      state.pagerKey = pagerKey;
      renderPager(doc);
    }
    // Keep unchanged products' nodes, so thumbnails do not flicker while the request runs.
    const seen = new Map();
    const nodes = doc.products.map((product, i) => {
      const key = `${doc.offset + i}:${JSON.stringify(product)}`;
      const node = state.rendered.get(key) || productItem(requestId, product, doc.offset + i + 1);
      seen.set(key, node);
      return node;
    });
    state.rendered = seen;
    list.start = doc.offset + 1;
    nodes.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    while (list.children.length > nodes.length) list.lastElementChild.remove();
  }

  function renderPager(doc) {
    const pages = Math.max(1, Math.ceil(doc.products_total / PAGE_SIZE));
    const first = doc.offset + 1;
    const last = doc.offset + doc.products.length;
    const prev = h("button", { type: "button", class: "quiet", id: "prev-page", disabled: state.page <= 1 }, "← Previous");
    const next = h("button", { type: "button", class: "quiet", id: "next-page", disabled: doc.next_offset === null }, "Next →");
    const jump = h("input", { id: "page-number", type: "number", min: 1, max: pages, value: state.page, size: 5 });
    const go = h("form", { class: "row" }, h("label", { for: "page-number" }, "Page"), jump, h("span", { class: "small muted" }, `of ${count(pages)}`), h("button", { type: "submit", class: "quiet" }, "Go"));
    prev.addEventListener("click", () => goTo(state.page - 1));
    next.addEventListener("click", () => goTo(state.page + 1));
    go.addEventListener("submit", (event) => { event.preventDefault(); goTo(parseInt(jump.value, 10) || 1); });
    pagerTop.replaceChildren(
      h("span", { class: "small muted", id: "range" }, doc.products.length ? `Products ${count(first)}–${count(last)} of ${count(doc.products_total)}` : "No products on this page"),
      h("div", { class: "actions" }, prev, next, pages > 1 ? go : null));
  }

  function render(doc) {
    state.doc = doc;
    renderSummary(doc);
    renderProducts(doc);
  }

  function schedule() {
    clearTimeout(state.timer);
    if (state.doc && !isFinal(state.doc.status)) state.timer = setTimeout(load, POLL_MS);
  }

  function goTo(page) {
    const pages = state.doc ? Math.max(1, Math.ceil(state.doc.products_total / PAGE_SIZE)) : page;
    state.page = Math.min(Math.max(1, page), pages);
    const url = state.page > 1 ? `?page=${state.page}` : window.location.pathname;
    window.history.replaceState(null, "", url);
    load();
  }

  async function load() {
    const token = ++state.token;
    clearTimeout(state.timer);
    state.ops = await features();
    const offset = (state.page - 1) * PAGE_SIZE;
    try {
      const doc = await api(`/api/status/${encodeURIComponent(requestId)}?offset=${offset}&limit=${PAGE_SIZE}`);
      if (token !== state.token) return;
      render(doc);
      schedule();
    } catch (error) {
      if (token !== state.token) return;
      if (error.status === 404) {
        summary.replaceChildren(h("h1", { id: "request-title" }, "Request not found"),
          h("p", {}, "There is no such request: it may have been deleted, or it belongs to another API key."),
          h("p", {}, h("a", { href: "/" }, "Back to the history")));
        list.replaceChildren();
        pagerTop.replaceChildren();
      } else {
        summary.replaceChildren(h("h1", { id: "request-title" }, `Request ${requestId.slice(0, 8)}…`), errorView(error));
        if (error.status === 0) state.timer = setTimeout(load, 3000);  // the service may come back
      }
    }
  }

  load();
  return { node: root, reload: load };
}
