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
