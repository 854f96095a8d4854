// The dashboard's scripts: refresh the job list; on a job page, draw the live curves from the
// job's event stream, keep the status current, and run predictions. No dependencies.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const COLORS = { train: "#1f77b4", val: "#ff7f0e" };

function refreshRows(tbody) {
  const url = tbody.dataset.rowsUrl;
  setInterval(async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" } });
      if (response.ok) tbody.innerHTML = await response.text();
    } catch (_) { /* the next tick retries */ }
  }, 3000);
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return { ticks, step };
}

function decimals(step) {
  const text = String(parseFloat(step.toPrecision(3)));
  return text.includes(".") ? text.split(".")[1].length : 0;
}

function drawChart(canvas, lines, maxEpoch) {
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { left: 52, right: 12, top: 10, bottom: 30 };
  const values = lines.flatMap((l) => l.points.map((p) => p[1])).filter(Number.isFinite);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#666";
  if (!values.length) {
    ctx.textAlign = "center";
    ctx.fillText("waiting for the first epoch…", w / 2, h / 2);
    return;
  }
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const margin = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 0.1;
  lo -= margin;
  hi += margin;
  const x0 = 1;
  const x1 = Math.max(maxEpoch, 2);
  const px = (e) => pad.left + ((e - x0) / (x1 - x0)) * (w - pad.left - pad.right);
  const py = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (h - pad.top - pad.bottom);
  ctx.strokeStyle = "#e5e5e5";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const y = niceTicks(lo, hi, 5);
  for (const t of y.ticks) {
    ctx.beginPath();
    ctx.moveTo(pad.left, py(t));
    ctx.lineTo(w - pad.right, py(t));
    ctx.stroke();
    ctx.fillText(t.toFixed(decimals(y.step)), pad.left - 6, py(t));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const x = niceTicks(x0, x1, 8);
  for (const t of x.ticks) {
    if (t !== Math.round(t)) continue;
    ctx.fillText(String(t), px(t), h - pad.bottom + 6);
  }
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad.left, pad.top, w - pad.left - pad.right, h - pad.top - pad.bottom);
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    for (const [e, v] of line.points) {
      if (!Number.isFinite(v)) { drawing = false; continue; }
      if (drawing) ctx.lineTo(px(e), py(v)); else ctx.moveTo(px(e), py(v));
      drawing = true;
    }
    ctx.stroke();
  }
}

function fmt(value, digits) {
  return typeof value === "number" ? value.toFixed(digits) : "";
}

function watchJob(root) {
  const history = [];
  let epochs = 1;
  let pending = false;
  const charts = {
    loss: document.getElementById("chart-loss"),
    accuracy: document.getElementById("chart-accuracy"),
  };

  function redraw() {
    pending = false;
    for (const [name, canvas] of Object.entries(charts)) {
      const lines = [
        { color: COLORS.train, points: history.map((r) => [r.epoch, r[name]]) },
        { color: COLORS.val, points: history.map((r) => [r.epoch, r["val_" + name]]) },
      ];
      const hasData = history.some((r) => typeof r[name] === "number");
      canvas.closest("figure").hidden = name === "accuracy" && history.length > 0 && !hasData;
      drawChart(canvas, lines, epochs);
    }
    document.getElementById("epoch-count").textContent = String(history.length);
  }
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(redraw); } };

  function showStatus(job) {
    const badge = document.getElementById("status");
    badge.textContent = job.status;
    badge.className = "badge status-" + job.status;
    root.dataset.status = job.status;
    document.getElementById("attempts").textContent = String(job.attempts);
    document.getElementById("resumed").hidden = !job.resumed_from_epoch;
    document.getElementById("resumed-epoch").textContent = String(job.resumed_from_epoch || "");
    epochs = job.progress.epochs || 1;
    const bar = document.querySelector("#progress progress");
    bar.max = job.progress.epochs || 1;
    bar.value = job.progress.epoch;
    bar.className = "status-" + job.status;
    document.querySelector("#progress .count").textContent =
      job.progress.epoch + "/" + job.progress.epochs;
    for (const cell of document.querySelectorAll("#metrics [data-metric]")) {
      cell.textContent = fmt(job.metrics[cell.dataset.metric], 4);
    }
    const error = document.getElementById("error");
    error.hidden = !job.error;
    if (job.error) error.textContent = job.error.code + ": " + (job.error.message || "");
    if (TERMINAL.has(job.status)) {
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      document.getElementById("predict").hidden = job.status !== "succeeded";
      if (job.status === "succeeded") showEvaluation();
    }
    document.getElementById("plot").src = root.dataset.plotUrl + "?s=" + job.status;
    schedule();
  }

  // A job that finished while the page was open: its model's evaluation (rendered by the server
  // with the page) is taken from a fresh copy of this page and put before the predict box.
  function showEvaluation() {
    if (document.getElementById("evaluation")) return;
    fetch(window.location.href, { headers: { Accept: "text/html" } })
      .then((response) => (response.ok ? response.text() : ""))
      .then((html) => {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("evaluation");
        if (fresh && !document.getElementById("evaluation")) {
          document.getElementById("predict").before(document.adoptNode(fresh));
        }
      })
      .catch(() => {}); // a reload shows it too
  }

  function connect() {
    const last = history.length ? history[history.length - 1].epoch : 0;
    const source = new EventSource(root.dataset.eventsUrl + (last ? "?after=" + last : ""));
    source.addEventListener("status", (event) => {
      const job = JSON.parse(event.data);
      showStatus(job);
      if (TERMINAL.has(job.status)) {
        source.close(); // the server has ended the stream; don't let EventSource reconnect
        root.dataset.streamEnded = "true";
      }
    });
    source.addEventListener("epoch", (event) => {
      const row = JSON.parse(event.data);
      while (history.length && history[history.length - 1].epoch >= row.epoch) history.pop();
      history.push(row); // a retried job restarts its history from epoch 1
      const count = document.querySelector("#progress .count");
      const bar = document.querySelector("#progress progress");
      bar.value = row.epoch;
      count.textContent = row.epoch + "/" + epochs;
      schedule();
    });
    // The browser reconnects by itself when a stream ends (EVENTS_MAX_SECONDS), but not after a
    // refusal (429: all the tenant's streams are open; 503): try again shortly, from here.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && root.dataset.streamEnded !== "true") {
        setTimeout(connect, 5000);
      }
    });
  }
  connect();
  schedule();
}

function predictBox(root) {
  const button = document.getElementById("predict-button");
  const errorBox = document.getElementById("predict-error");
  const table = document.getElementById("predictions");
  button.addEventListener("click", async () => {
    errorBox.hidden = true;
    table.hidden = true;
    let instances;
    try {
      instances = JSON.parse(document.getElementById("instances").value);
    } catch (err) {
      errorBox.textContent = "Not valid JSON: " + err.message;
      errorBox.hidden = false;
      return;
    }
    if (Array.isArray(instances) && instances.length && !Array.isArray(instances[0])) {
      instances = [instances]; // one row
    }
    const body = Array.isArray(instances) ? { instances } : instances;
    const response = await fetch(root.dataset.predictUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-CSRF-Token": document.getElementById("csrf").value,
      },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) {
      const details = (answer.error.details || []).map((d) => d.field + ": " + d.message);
      errorBox.textContent = [answer.error.message, ...details].join(" — ");
      errorBox.hidden = false;
      return;
    }
    const probs = answer.probabilities;
    const classes = answer.classes || (probs && probs[0] ? probs[0].map((_, i) => i) : []);
    const head = ["#", "prediction", ...classes.map((c) => "p(" + c + ")")];
    table.tHead.innerHTML = "";
    const headRow = table.tHead.insertRow();
    for (const text of head) headRow.appendChild(document.createElement("th")).textContent = text;
    const tbody = table.tBodies[0];
    tbody.innerHTML = "";
    answer.predictions.forEach((prediction, i) => {
      const row = tbody.insertRow();
      row.insertCell().textContent = String(i + 1);
      row.insertCell().textContent = JSON.stringify(prediction);
      for (const p of probs ? probs[i] : []) {
        const cell = row.insertCell();
        cell.textContent = fmt(p, 3);
        cell.className = "num";
      }
    });
    table.hidden = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("job-rows");
  if (rows) refreshRows(rows);
  const job = document.getElementById("job");
  if (job) {
    watchJob(job);
    predictBox(job);
  }
});
