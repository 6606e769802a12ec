// Small helpers: build DOM nodes safely (text is always text, never HTML) and format numbers.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const UNITS = ["kB", "MB", "GB", "TB", "PB"];

/** Decimal units, written exactly as the CLI's rich.filesize.decimal writes them. */
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const size = Number(n);
  if (size === 1) return "1 byte";
  if (size < 1000) return `${size.toLocaleString("en-US")} bytes`;
  let i = 2;
  while (i < UNITS.length + 1 && size >= 1000 ** i) i += 1;
  const value = (1000 * size) / 1000 ** i;
  return `${value.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })} ${UNITS[i - 2]}`;
}

export const count = (n) => Number(n || 0).toLocaleString("en-US");

export function percent(p) {
  return p === null || p === undefined ? "–" : `${Number(p).toFixed(1)}%`;
}

/** % saved of one image, one decimal, as the API computes it for a request. */
export function savedPercent(bytesIn, bytesOut) {
  if (!bytesIn) return null;
  return Math.round((1000 * (bytesIn - bytesOut)) / bytesIn) / 10;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export const FINAL = ["completed", "completed_with_errors", "failed", "cancelled"];
export const isFinal = (status) => FINAL.includes(status);

const STATUS_WORDS = {
  pending: "Waiting",
  processing: "Processing",
  done: "Done",
  completed: "Completed",
  completed_with_errors: "Completed with errors",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const statusWord = (status) => STATUS_WORDS[status] || status;

export function badge(status) {
  return h("span", { class: `badge ${status}` }, statusWord(status));
}

// The reason codes of failed images (README "Statuses"), in words a shop person understands.
const REASONS = {
  bad_url: "The address is not a valid image URL.",
  blocked_address: "The address points to a private or forbidden network, so it was not fetched.",
  not_found: "The image is not there (the host answered “not found”).",
  upstream: "The image host answered with an error or could not be reached.",
  timeout: "The image host took too long to answer.",
  too_large: "The file is larger than the download limit.",
  not_an_image: "The file at this address is not an image.",
  unsupported_format: "The image format is not supported.",
  too_many_pixels: "The image has too many pixels to process safely.",
  corrupt_image: "The image file is damaged or incomplete.",
  storage: "The compressed image could not be stored.",
  internal: "The image could not be processed (internal error).",
  cancelled: "Not processed: the request was cancelled.",
};

export const reasonWords = (code) => REASONS[code] || "The image could not be processed.";

/** An http(s) URL, or null: nothing else becomes a link or an image source. */
export function httpUrl(value) {
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}
