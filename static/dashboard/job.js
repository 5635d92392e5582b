// Job page: ask the server for the job's state every second and update the page in place
// (progress bar, status, event log) until the job has ended. No reload, no library.
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root || root.dataset.finished === "1") {
    return;
  }
  const url = root.dataset.progressUrl;
  const fill = root.querySelector(".progress .fill");
  const bar = document.getElementById("job-progress");
  const percent = document.getElementById("job-percent");
  const status = document.getElementById("job-status");
  const step = document.getElementById("job-step");
  const events = document.querySelector("#job-events tbody");
  const tones = {SUCCEEDED: "ok", FAILED: "bad", CANCELLED: "idle", QUEUED: "warn", RUNNING: "warn"};
  let shown = events.querySelectorAll("tr:not(.placeholder)").length;
  let failures = 0;

  function render(job) {
    const value = Math.round(job.progress);
    fill.style.width = value + "%";
    fill.classList.toggle("failed", job.status === "FAILED");
    fill.classList.toggle("cancelled", job.status === "CANCELLED");
    bar.setAttribute("aria-valuenow", String(value));
    bar.setAttribute("aria-valuetext", value + " %, " + job.status.toLowerCase());
    percent.textContent = value + " %";
    // #job-live is a polite live region: only a change of status or step is written, so a screen
    // reader announces what happened, not every poll.
    if (status.textContent !== job.status.toLowerCase()) {
      status.textContent = job.status.toLowerCase();
      status.className = "badge " + (tones[job.status] || "idle");
    }
    if (step.textContent !== (job.current_step || "")) {
      step.textContent = job.current_step || "";
    }
    if (job.events.length > shown) {
      events.querySelectorAll("tr.placeholder").forEach(function (row) { row.remove(); });
    }
    for (const event of job.events.slice(shown)) {
      const row = document.createElement("tr");
      row.className = "level-" + (event.level || "info");
      const time = document.createElement("td");
      time.className = "mono small";
      time.textContent = (event.at || "").slice(11, 19);
      const message = document.createElement("td");
      message.textContent = event.message;
      row.append(time, message);
      events.append(row);
    }
    shown = Math.max(shown, job.events.length);
    if (job.finished) {
      const results = document.getElementById("job-results");
      if (job.status !== "SUCCEEDED") {
        results.textContent = "Back to the version";
      }
      results.hidden = false;
      const cancel = document.getElementById("cancel-form");
      if (cancel) {
        cancel.remove();
      }
      if (job.best) {
        document.getElementById("job-best-name").textContent = job.best;
        document.getElementById("job-best").hidden = false;
      }
      if (job.error) {
        document.getElementById("job-error-text").textContent = job.error;
        document.getElementById("job-error").hidden = false;
      }
    }
  }

  function poll() {
    fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (job) {
        failures = 0;
        render(job);
        if (!job.finished) {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(function () {
        // A restarting server or a dropped connection: try again, a little slower each time.
        failures += 1;
        step.textContent = "connection lost, retrying…";
        window.setTimeout(poll, Math.min(10000, 1000 * (failures + 1)));
      });
  }

  window.setTimeout(poll, 1000);
})();
