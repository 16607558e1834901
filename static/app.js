// billfold's only script besides htmx (vendored, pinned in htmx.min.js).
// 422 answers carry a re-rendered form: swap them like 2xx. Other errors show a toast.
document.addEventListener("DOMContentLoaded", function () {
  if (!window.htmx) return;
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "422", swap: true },
    { code: "[45]..", swap: false, error: true },
  ];
  document.body.addEventListener("htmx:responseError", function (e) {
    var toast = document.getElementById("toast");
    if (!toast) return;
    toast.textContent = "Something went wrong (" + e.detail.xhr.status + "). Please try again.";
    toast.hidden = false;
    setTimeout(function () { toast.hidden = true; }, 6000);
  });
});

// Copy buttons (`data-copy="<input id>"`): shown only when the Clipboard API exists;
// without it the field stays selectable.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      }, function () { field.select(); });
    });
  });
});

// The phone menu: below 720 px the nav collapses behind a Menu button (CSS hides it
// only once this script marks the page with `js`, so without JavaScript the links
// stay visible and wrap).
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  var toggle = document.querySelector(".menu-toggle");
  if (!toggle) return;
  var row = toggle.closest(".topbar-row");
  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    var open = row.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && row.classList.contains("open")) {
      row.classList.remove("open");
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    }
  });
});

// A <dialog> swapped in by htmx (the upgrade preview) opens as a modal: focus moves
// into it and Esc closes it. Closing it empties its container; `data-close-dialog`
// links close it instead of leaving the page.
document.addEventListener("htmx:afterSwap", function (e) {
  var dialog = e.detail.target.querySelector("dialog:not([open])");
  if (!dialog || typeof dialog.showModal !== "function") return;
  dialog.addEventListener("close", function () { dialog.remove(); });
  dialog.querySelectorAll("[data-close-dialog]").forEach(function (link) {
    link.addEventListener("click", function (ev) { ev.preventDefault(); dialog.close(); });
  });
  dialog.showModal();
});
