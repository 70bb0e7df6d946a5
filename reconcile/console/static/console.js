// Progressive enhancement: with this script (and htmx) an action's confirmation opens in a
// dialog; without it, the same buttons open the confirmation as a page of its own.
(function () {
  "use strict";
  var opener = null;
  function dialog() { return document.getElementById("confirm-dialog"); }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-opens-dialog]");
    if (button) { opener = button; }
    var closer = event.target.closest("[data-closes-dialog]");
    var box = dialog();
    if (closer && box && box.open) {
      event.preventDefault();
      box.close();
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var box = dialog();
    if (!box || event.detail.target.id !== "confirm-body") { return; }
    if (!box.open) { box.showModal(); }
    var first = box.querySelector("textarea, select, input:not([type=hidden])");
    if (first) { first.focus(); }
  });
  document.addEventListener("close", function (event) {
    if (event.target === dialog() && opener) { opener.focus(); }
  }, true);
})();
