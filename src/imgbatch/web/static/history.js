// History, the start page: recent requests newest first, live while any of them runs.

import { api, errorView } from "./api.js";
import { badge, bytes, count, h, isFinal, percent, when } from "./dom.js";
import { features, offers } from "./features.js";

const PAGE_SIZE = 20;
const POLL_MS = 2000;
const STATUSES = ["pending", "processing", "completed", "completed_with_errors", "failed", "cancelled"];

function row(item) {
  const name = item.filename || `request ${item.request_id.slice(0, 8)}`;
  const progress = item.progress || { percent: 0, succeeded: 0, failed: 0, total: item.images };
  const savings = item.savings || {};
  return h("tr", { "data-request": item.request_id },
    h("td", {}, h("a", { href: `/requests/${encodeURIComponent(item.request_id)}` }, name)),
    h("td", {}, badge(item.status)),
    h("td", {},
      h("progress", { max: 100, value: progress.percent, "aria-label": `${name}: ${percent(progress.percent)} done` }),
      h("span", { class: "small muted" }, ` ${percent(progress.percent)}`)),
    h("td", { class: "num opt" }, count(item.images)),
    h("td", { class: "num", title: `${bytes(savings.bytes_in)} → ${bytes(savings.bytes_out)}` },
      savings.images ? percent(savings.saved_percent) : "–"),
    h("td", { class: "opt-time" }, h("time", { datetime: item.created_at }, when(item.created_at))));
}

export function historyView() {
  const params = new URLSearchParams(window.location.search);
  const state = { status: params.get("status") || "", cursor: params.get("cursor") || "", previous: [], timer: 0, token: 0 };

  const filter = h("select", { id: "status-filter", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s }, s.replaceAll("_", " "))));
  filter.value = state.status;
  const body = h("tbody", { id: "history-rows" });
  const message = h("div", { "aria-live": "polite" });
  const newer = h("button", { type: "button", class: "quiet", id: "newer" }, "← Newer");
  const older = h("button", { type: "button", class: "quiet", id: "older" }, "Older →");
  const live = h("span", { class: "small muted", id: "history-live" });
  const section = h("section", { class: "card history", "aria-labelledby": "history-title" },
    h("div", { class: "pager" },
      h("h2", { id: "history-title" }, "History"),
      h("div", { class: "row" }, h("label", { for: "status-filter" }, "Show"), filter)),
    message,
    h("div", { class: "scroll" },
      h("table", {},
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "File"), h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col" }, "Progress"), h("th", { scope: "col", class: "num opt" }, "Images"),
          h("th", { scope: "col", class: "num" }, "Saved"), h("th", { scope: "col" }, "Created"))),
        body)),
    h("div", { class: "pager" }, h("div", { class: "actions" }, newer, older), live));

  function remember() {
    const query = new URLSearchParams();
    if (state.status) query.set("status", state.status);
    if (state.cursor) query.set("cursor", state.cursor);
    const search = query.toString();
    window.history.replaceState(null, "", search ? `/?${search}` : "/");
  }

  async function load() {
    const token = ++state.token;
    clearTimeout(state.timer);
    if (!offers(await features(), "GET", "/api/requests")) {
      section.replaceChildren(h("h2", { id: "history-title" }, "History"),
        h("p", { class: "muted" }, "This server does not list past requests; each request has its own page, /requests/<id>."));
      return;
    }
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) query.set("status", state.status);
    if (state.cursor) query.set("cursor", state.cursor);
    let page;
    try {
      page = await api(`/api/requests?${query}`);
    } catch (error) {
      if (token !== state.token) return;
      message.replaceChildren(errorView(error));
      return;
    }
    if (token !== state.token) return;  // a newer load started meanwhile
    message.replaceChildren();
    body.replaceChildren(...page.requests.map(row));
    if (!page.requests.length) {
      body.appendChild(h("tr", {}, h("td", { colspan: 6, class: "muted" },
        state.status || state.cursor ? "No requests here." : "No requests yet: upload a CSV above.")));
    }
    newer.hidden = !state.cursor;
    older.hidden = !page.next_cursor;
    older.dataset.cursor = page.next_cursor || "";
    const running = page.requests.some((r) => !isFinal(r.status));
    live.textContent = running ? "Updating live…" : "";
    if (running) state.timer = setTimeout(load, POLL_MS);
  }

  filter.addEventListener("change", () => {
    state.status = filter.value;
    state.cursor = "";
    state.previous = [];
    remember();
    load();
  });
  older.addEventListener("click", () => {
    state.previous.push(state.cursor);
    state.cursor = older.dataset.cursor;
    remember();
    load();
  });
  newer.addEventListener("click", () => {
    state.cursor = state.previous.pop() || "";  // after a reload the way back is the newest page
    remember();
    load();
  });
  load();
  return { node: section, reload: load };
}
