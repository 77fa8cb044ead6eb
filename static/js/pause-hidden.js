// A region marked data-pause-when-hidden stops polling while the tab is hidden, and catches up as soon as it shows
// (its hx-trigger listens for syncChanged on the body).
document.addEventListener("htmx:beforeRequest", function (event) {
  if (document.hidden && event.target.closest && event.target.closest("[data-pause-when-hidden]")) {
    event.preventDefault();
  }
});
document.addEventListener("visibilitychange", function () {
  if (!document.hidden && window.htmx && document.querySelector("[data-pause-when-hidden]")) {
    window.htmx.trigger(document.body, "syncChanged");
  }
});
