// The console's only script: refreshes the panel every 5 s without reloading the page, and
// goes to the sign-in page when the session has ended. Forms work without it.
"use strict";
(function () {
  const panel = document.getElementById("panel");
  if (!panel) return;
  async function refresh() {
    // Do not pull a menu away from someone using it.
    if (panel.contains(document.activeElement) && document.activeElement.tagName === "SELECT") return;
    try {
      const response = await fetch("/ui/panel", { credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/ui/login"); return; }
      if (response.ok) panel.innerHTML = await response.text();
    } catch (error) {
      // The master is restarting or the network dropped: the next tick tries again.
    }
  }
  setInterval(refresh, 5000);
})();
