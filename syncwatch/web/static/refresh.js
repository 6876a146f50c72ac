// Auto-refresh for syncwatch's read views: every `data-refresh` seconds, fetch this same URL
// (its filters and page included) and swap <main> in place, so the scroll position, the
// filters and the address bar stay as they are. Without JavaScript the pages work unchanged;
// this only adds to them. Paused while the tab is hidden or while focus is in <main>.
(function () {
  "use strict";
  var main = document.querySelector("main[data-refresh]");
  if (!main || !window.fetch || !window.DOMParser) {
    return;
  }
  var every = Number(main.getAttribute("data-refresh"));
  if (!(every > 0)) {
    return;
  }
  var paused = false;
  var status = document.createElement("p");
  status.id = "refresh";
  status.className = "muted";
  var text = document.createElement("span");
  var toggle = document.createElement("button");
  toggle.type = "button";
  status.appendChild(text);
  status.appendChild(document.createTextNode(" "));
  status.appendChild(toggle);
  document.querySelector("header").appendChild(status);

  function show(note) {
    text.textContent = paused
      ? "Auto-refresh paused."
      : "Auto-refresh every " + every + " s" + (note ? "; " + note : "") + ".";
    // The label says what a press does; no aria-pressed beside a changing label (it would
    // announce "Resume, pressed").
    toggle.textContent = paused ? "Resume" : "Pause";
  }
  toggle.addEventListener("click", function () {
    paused = !paused;
    show("");
  });

  function busy() {
    var active = document.activeElement;
    return document.hidden || (active && active !== document.body && main.contains(active));
  }

  function refresh() {
    if (paused || busy()) {
      return;
    }
    fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var next = fresh.querySelector("main");
        if (!next || busy()) {
          return;
        }
        main.innerHTML = next.innerHTML;
        document.title = fresh.title;
        show("updated " + new Date().toLocaleTimeString());
      })
      .catch(function (error) {
        show("last try failed (" + error.message + ")");
      });
  }

  show("");
  window.setInterval(refresh, every * 1000);
})();
