// The one way the pages talk to the service: the public JSON API, with the tab's API key.

import { $, h } from "./dom.js";

const KEY = "imgbatch.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const error = (body && body.error) || {};
    super(error.message || fallback || `The service answered ${status}.`);
    this.status = status;
    this.code = error.code || (status ? `http_${status}` : "network");
    this.details = error.details || [];
  }
}

function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function send(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch {
    throw new ApiError(0, null, "The service cannot be reached. Is it running? Try again in a moment.");
  }
  if (response.status === 401) {
    const body = await response.json().catch(() => null);
    const error = new ApiError(401, body);
    window.dispatchEvent(new CustomEvent("imgbatch:unauthorized", { detail: error.message }));
    throw error;
  }
  return response;
}

/** JSON in, JSON out; throws ApiError with the API's message and details on any non-2xx. */
export async function api(path, { method = "GET", body, json } = {}) {
  const options = { method };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers = { "Content-Type": "application/json" };
  } else if (body !== undefined) options.body = body;
  const response = await send(path, options);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/**
 * A download link. Without a key the browser fetches it itself (streamed to disk); with a
 * key the file goes through fetch() so it can carry the Authorization header.
 */
export function downloadLink(label, path, filename, onError) {
  const link = h("a", { class: "button quiet", href: path, download: filename }, label);
  link.addEventListener("click", async (event) => {
    if (!apiKey.get()) return;
    event.preventDefault();
    try {
      const response = await send(path);
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      const url = URL.createObjectURL(await response.blob());
      const save = h("a", { href: url, download: filename });
      document.body.appendChild(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      onError(error);
    }
  });
  return link;
}

/** An error as the user should read it: the message, then each detail as a table row. */
export function errorView(error) {
  const box = h("div", { class: "error-box", role: "alert" }, h("p", { class: "error" }, error.message));
  if (error.details && error.details.length) {
    box.appendChild(
      h("div", { class: "scroll" },
        h("table", { class: "errors" },
          h("caption", { class: "muted small" }, `${error.details.length} problem(s) found; nothing was stored.`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Row"), h("th", { scope: "col" }, "Column"), h("th", { scope: "col" }, "Message"))),
          h("tbody", {}, error.details.map((d) =>
            h("tr", {}, h("td", {}, d.row ?? "–"), h("td", {}, d.column ?? d.field ?? "–"), h("td", {}, d.message)))))),
    );
  }
  return box;
}

/**
 * The API key bar: shown when the service says it needs keys (/readyz) or after a 401.
 * `onChange` runs after the user enters or forgets a key (the page reloads its data).
 */
export async function setupKeyBar(onChange) {
  const form = $("#keyform");
  const input = $("#apikey");
  const message = $("#keymessage");
  input.value = apiKey.get();
  const show = () => { form.hidden = false; };
  window.addEventListener("imgbatch:unauthorized", (event) => {
    show();
    message.textContent = apiKey.get()
      ? `The API key was refused (${event.detail}). Enter a valid key above.`
      : "This service needs an API key: enter yours above (kept for this tab only).";
    message.hidden = false;
    input.focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    message.hidden = true;
    onChange();
  });
  $("#forgetkey").addEventListener("click", () => {
    apiKey.set("");
    input.value = "";
    onChange();
  });
  if (apiKey.get()) show();
  try {
    const ready = await fetch("/readyz").then((r) => r.json());
    if (ready && ready.auth === "api_keys") show();
  } catch {
    // /readyz unreachable: the next API call says so
  }
}
