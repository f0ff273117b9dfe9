// Enhances pages that work without it: refreshes the part marked data-refresh every
// few seconds, pausable, and skips refreshing while the tab is hidden.
"use strict";
(() => {
  const live = document.querySelector("[data-refresh]");
  const button = document.getElementById("pause");
  const state = document.getElementById("refresh-state");
  if (!live || !button) return;
  let paused = false;
  button.hidden = false;
  button.addEventListener("click", () => {
    paused = !paused;
    button.textContent = paused ? "Resume updates" : "Pause updates";
    button.setAttribute("aria-pressed", String(paused));
    state.textContent = paused ? "Paused" : "";
  });
  const refresh = async () => {
    if (paused || document.hidden) return;
    try {
      const response = await fetch(live.dataset.refresh, { credentials: "same-origin" });
      if (response.redirected) return location.assign(response.url);
      if (!response.ok) throw new Error(response.status);
      live.innerHTML = await response.text();
      state.textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (error) {
      state.textContent = "Update failed; retrying";
    }
  };
  setInterval(refresh, 5000);
})();
