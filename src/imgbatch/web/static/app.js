// The dashboard's entry point: picks the view from the URL (every view has a stable address).

import { setupKeyBar } from "./api.js";
import { $, h } from "./dom.js";
import { historyView } from "./history.js";
import { requestView } from "./request.js";
import { uploadForm } from "./upload.js";

function route() {
  const view = $("#view");
  const match = window.location.pathname.match(/^\/requests\/([^/]+)\/?$/);
  if (match) {
    const page = requestView(decodeURIComponent(match[1]));
    view.replaceChildren(h("p", {}, h("a", { href: "/" }, "← History")), page.node);
    return page;
  }
  if (window.location.pathname === "/") {
    const flash = sessionStorage.getItem("imgbatch.flash");
    sessionStorage.removeItem("imgbatch.flash");
    const history = historyView();
    view.replaceChildren(
      flash ? h("p", { class: "banner info", role: "status", id: "flash" }, flash) : "",
      uploadForm(), history.node);
    return history;
  }
  view.replaceChildren(h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "/" }, "Go to the history")));
  return { reload() {} };
}

let current = null;
setupKeyBar(() => current && current.reload());
current = route();
