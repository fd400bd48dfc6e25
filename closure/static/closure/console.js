// Progressive enhancement only: every page works without this file.
// A button marked data-once is disabled after its form is submitted, so a double click on
// "Execute live" or "Retry now" cannot send the request twice.
document.addEventListener("submit", function (event) {
  var buttons = event.target.querySelectorAll("button[data-once]");
  for (var i = 0; i < buttons.length; i++) {
    var button = buttons[i];
    window.setTimeout(function (b) { b.disabled = true; b.textContent = "Working…"; }, 0, button);
  }
});
