// A confirmation as a native modal <dialog>: focus is trapped, Escape answers "no".

import { h } from "./dom.js";

export function confirmDialog(title, text, yes, no) {
  return new Promise((resolve) => {
    const confirm = h("button", { type: "button", class: "danger", id: "confirm-yes" }, yes);
    const cancel = h("button", { type: "button", class: "quiet", id: "confirm-no" }, no);
    const dialog = h("dialog", { id: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title), h("p", {}, text), h("div", { class: "actions" }, confirm, cancel));
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    confirm.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(false); });
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();  // the safe answer is the default one
  });
}
