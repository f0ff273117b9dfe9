// Enhances pages that work without it: refreshes the part marked data-refresh every
// few seconds (data-interval milliseconds), pausable where the page offers a button,
// not while the tab is hidden, and no more once the part says it is final. A run's
// page also shows the run's events as they come (data-events), as plain text.
"use strict";
(() => {
  const live = document.querySelector("[data-refresh]");
  if (!live) return;
  const button = document.getElementById("pause");
  const state = document.getElementById("refresh-state");
  const say = (text) => { if (state) state.textContent = text; };
  let paused = false;
  if (button) {
    button.hidden = false;
    button.addEventListener("click", () => {
      paused = !paused;
      button.textContent = paused ? "Resume updates" : "Pause updates";
      button.setAttribute("aria-pressed", String(paused));
      say(paused ? "Paused" : "");
    });
  }
  let timer;
  const refresh = async () => {
    if (paused || document.hidden) return;
    try {
      const response = await fetch(live.dataset.refresh, { credentials: "same-origin" });
      if (response.redirected) return location.assign(response.url);
      if (!response.ok) throw new Error(response.status);
      live.innerHTML = await response.text();
      say("Updated " + new Date().toLocaleTimeString());
      if (live.querySelector("[data-final]")) clearInterval(timer);
    } catch (error) {
      say("Update failed; retrying");
    }
  };
  timer = setInterval(refresh, Number(live.dataset.interval) || 5000);

  const stream = document.querySelector("[data-events]");
  if (!stream || !window.EventSource) return;
  const events = new EventSource(stream.dataset.events);
  const text = document.getElementById("stream-text");
  const progress = document.getElementById("progress");
  stream.hidden = false;
  events.addEventListener("progress", (event) => {
    const { elapsed_ms, message } = JSON.parse(event.data);
    progress.textContent = `${Math.round(elapsed_ms / 1000)} s: ${message}`;
  });
  events.addEventListener("delta", (event) => {
    text.textContent += JSON.parse(event.data).text;
  });
  for (const status of ["completed", "failed", "timed_out", "cancelled"]) {
    events.addEventListener(status, () => {
      events.close();
      progress.textContent = "Finished: " + status;
      refresh();
    });
  }
  events.onerror = () => { if (events.readyState === EventSource.CLOSED) say("Event stream closed"); };
})();
