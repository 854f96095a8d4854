// The dashboard's scripts: refresh the job and sweep lists; on a job page, draw the live curves
// from the job's event stream, keep the status current, and run predictions; on a sweep page,
// keep the leaderboard current and overlay every trial's validation curves. No dependencies.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const COLORS = { train: "#1f77b4", val: "#ff7f0e" };
// A sweep's trials are coloured by their parameters apart from the seed (one colour per group).
const PALETTE = ["#d62728", "#2ca02c", "#9467bd", "#1f77b4", "#ff7f0e", "#8c564b", "#e377c2",
  "#17becf", "#bcbd22", "#7f7f7f"];

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
    ctx.lineWidth = line.width || 2;
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
      const compare = document.getElementById("compare-form");
      if (compare) compare.hidden = false;
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

// A searched value, short, as the leaderboard writes it: `sgd(learning_rate=0.01, momentum=0.9)`.
function paramText(value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const inner = Object.entries(value)
      .filter(([key]) => key !== "type")
      .map(([key, v]) => key + "=" + paramText(v))
      .join(", ");
    return "type" in value ? value.type + "(" + inner + ")" : "{" + inner + "}";
  }
  if (typeof value === "number" && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(4)));
  }
  return Array.isArray(value) ? JSON.stringify(value) : String(value);
}

function watchSweep(root) {
  const charts = {
    val_loss: document.getElementById("chart-val_loss"),
    val_accuracy: document.getElementById("chart-val_accuracy"),
  };
  const trials = new Map(); // job id -> {group, epochs, val_loss, val_accuracy}
  const groups = []; // labels: a trial's parameters apart from the seed
  let best = null;
  let pending = false;

  function trialOf(jobId) {
    if (!trials.has(jobId)) {
      trials.set(jobId, { group: -1, epochs: [], val_loss: [], val_accuracy: [] });
    }
    return trials.get(jobId);
  }

  function redraw() {
    pending = false;
    const all = [...trials.entries()];
    const maxEpoch = Math.max(1, ...all.map(([, t]) => t.epochs[t.epochs.length - 1] || 0));
    for (const [name, canvas] of Object.entries(charts)) {
      // Thin lines first, the best trial last and thick, so that it stays visible on top.
      const ordered = all.filter(([id]) => id !== best).concat(all.filter(([id]) => id === best));
      const lines = ordered.map(([id, t]) => ({
        color: t.group < 0 ? "#999" : PALETTE[t.group % PALETTE.length],
        width: id === best ? 3.5 : 1.5,
        points: t.epochs.map((e, i) => [e, t[name][i]]),
      }));
      const hasData = all.some(([, t]) => t[name].some((v) => typeof v === "number"));
      canvas.closest("figure").hidden = name === "val_accuracy" && trials.size > 0 && !hasData;
      drawChart(canvas, lines, maxEpoch);
    }
    // One entry per group while each has a colour of its own (a grid over a few values).
    const legend = document.getElementById("curve-legend");
    legend.textContent = "";
    legend.hidden = groups.length > PALETTE.length;
    groups.forEach((label, i) => {
      const item = legend.appendChild(document.createElement("span"));
      item.className = "item";
      const swatch = item.appendChild(document.createElement("span"));
      swatch.className = "swatch";
      swatch.style.background = PALETTE[i % PALETTE.length];
      item.appendChild(document.createTextNode(label));
    });
    const count = all.reduce((n, [, t]) => n + t.epochs.length, 0);
    document.getElementById("curve-count").textContent = String(count);
  }
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(redraw); } };

  // The leaderboard is rendered by the server: read again when a trial starts or ends, or the
  // sweep's state changes; at most one read at a time, and one more if news came meanwhile.
  let loading = null;
  let again = false;
  async function loadBoard() {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      do {
        again = false;
        try {
          const response = await fetch(root.dataset.boardUrl, { headers: { Accept: "text/html" } });
          if (response.ok) {
            const fresh = document.createElement("template");
            fresh.innerHTML = await response.text();
            for (const id of ["sweep-state", "leaderboard"]) {
              document.getElementById(id).replaceWith(fresh.content.getElementById(id));
            }
          }
        } catch (_) { /* the next event reads it again */ }
      } while (again);
      loading = null;
    })();
    return loading;
  }

  async function finish(status) {
    root.dataset.status = status;
    await loadBoard();
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
    document.getElementById("plot").src = root.dataset.plotUrl + "?s=" + status;
    root.dataset.finished = "true";
  }

  function connect() {
    const source = new EventSource(root.dataset.eventsUrl);
    source.addEventListener("trial", (event) => {
      const row = JSON.parse(event.data);
      const trial = trialOf(row.job_id);
      const rest = Object.entries(row.params || {}).filter(([path]) => path !== "seed");
      const label = rest.map(([path, v]) => path + "=" + paramText(v)).join(" ") || "trials";
      if (!groups.includes(label)) groups.push(label);
      trial.group = groups.indexOf(label);
      schedule();
      loadBoard();
    });
    source.addEventListener("epoch", (event) => {
      const row = JSON.parse(event.data);
      const trial = trialOf(row.job_id);
      // A retried trial, or a stream opened again, sends its epochs from the first.
      let keep = trial.epochs.length;
      while (keep && trial.epochs[keep - 1] >= row.epoch) keep--;
      for (const name of ["epochs", "val_loss", "val_accuracy"]) trial[name].length = keep;
      trial.epochs.push(row.epoch);
      trial.val_loss.push(row.val_loss);
      trial.val_accuracy.push(row.val_accuracy);
      schedule();
    });
    // The sweep may say it has ended before its last trial's last epochs have been sent: the
    // server ends the stream once those have been too, so the page waits for that end.
    let ended = null;
    source.addEventListener("sweep", (event) => {
      const sweep = JSON.parse(event.data);
      best = sweep.best ? sweep.best.job_id : null;
      schedule();
      loadBoard();
      if (TERMINAL.has(sweep.status)) ended = sweep.status;
    });
    // The browser reconnects by itself when a stream ends (EVENTS_MAX_SECONDS), but not after a
    // refusal (429: all the tenant's streams are open; 503): try again shortly, from here.
    source.addEventListener("error", () => {
      if (ended) {
        source.close(); // the stream of an ended sweep: don't let EventSource reconnect
        finish(ended);
      } else if (source.readyState === EventSource.CLOSED && root.dataset.finished !== "true") {
        setTimeout(connect, 5000);
      }
    });
  }
  schedule();
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("job-rows");
  if (rows) refreshRows(rows);
  const sweepRows = document.getElementById("sweep-rows");
  if (sweepRows) refreshRows(sweepRows);
  const sweep = document.getElementById("sweep");
  if (sweep) watchSweep(sweep);
  const job = document.getElementById("job");
  if (job) {
    watchJob(job);
    predictBox(job);
  }
});
