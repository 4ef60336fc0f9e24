// The web app: a key, the models and their schemas, a form or a CSV, a job followed live, its outputs, the jobs.

import { Api, TERMINAL } from "./api.js";
import { loadAdmin } from "./admin.js";
import { $, buildRecordForm, clearError, el, outputsTable, schemaTable, showError, when } from "./dom.js";

const KEY_ITEM = "infer.key";
const state = { api: null, model: null, choice: null, following: null, job: null };

function setKey(key) {
  state.api = key ? new Api(key) : null;
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

async function useKey(key) {
  clearError();
  $("key-status").textContent = "Checking the key…";
  const api = new Api(key);
  try {
    const { models } = await api.json("GET", "/v1/models");
    setKey(key);
    $("key").value = "";
    $("key-status").textContent = "Key accepted: it stays in this tab until you forget it or close the tab.";
    $("key-form").hidden = true;
    $("forget-key").hidden = false;
    $("workspace").hidden = false;
    showModels(models);
    refreshJobs();
  } catch (error) {
    setKey(null);
    $("workspace").hidden = true;
    $("key-status").textContent = "That key was refused.";
    showError(error);
  }
}

function showModels(models) {
  const chips = models.map((m) => el("button", {
    type: "button", class: "chip", role: "listitem", "data-model": m.name,
    onclick: () => selectModel(m.name),
  }, m.name, el("span", { class: "type", text: ` ${m.version}` })));
  $("models").replaceChildren(...chips);
  if (!models.length) $("models").append(el("p", { text: "No model is published yet." }));
  else selectModel(models[0].name);
}

async function selectModel(name) {
  clearError();
  for (const chip of $("models").children) chip.setAttribute("aria-pressed", String(chip.dataset.model === name));
  try {
    state.choice = name;
    const model = await state.api.json("GET", `/v1/models/${encodeURIComponent(name)}`);
    if (state.choice !== name) return; // another model was chosen while this one was read
    state.model = model;
    $("model-detail").replaceChildren(
      el("h3", { text: `${model.name} ${model.version}` }),
      el("p", { text: `${model.description} (${model.task}, served with ${model.runtime}; versions: ${model.versions.join(", ")})` }),
      schemaTable(model),
      model.labels ? el("p", { text: `Labels: ${model.labels.join(", ")}` }) : null,
    );
    $("predict-section").hidden = false;
    buildRecordForm($("record-form"), model, (record) => submitRecord(model.name, record));
    loadAdmin(state.api, model, followJob);
  } catch (error) {
    showError(error);
  }
}

async function submitRecord(model, record) {
  clearError();
  try {
    followJob(await state.api.submit(model, [record]));
  } catch (error) {
    showError(error);
  }
}

async function sendCsv(file) {
  clearError();
  if (!state.model) return;
  const meter = $("upload");
  meter.hidden = false;
  const shown = (loaded, total) => {
    const share = total ? Math.round((100 * loaded) / total) : 0;
    $("upload-progress").value = share;
    $("upload-text").textContent = `${(loaded / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB (${share} %)`;
  };
  shown(0, file.size);
  try {
    const job = await state.api.send("POST", `/v1/models/${encodeURIComponent(state.model.name)}/jobs`, file, "text/csv", shown);
    shown(file.size, file.size);
    followJob(job);
  } catch (error) {
    showError(error);
  }
}

function followJob(job) {
  state.following?.abort();
  const control = new AbortController();
  state.following = control;
  $("job-section").hidden = false;
  $("outputs").replaceChildren();
  showJob(job);
  $("job-section").scrollIntoView({ block: "nearest" });
  state.api.follow(job.id, showJob, control.signal)
    .then(() => finished(job.id, control))
    .catch((error) => { if (!control.signal.aborted) showError(error); });
}

function showJob(job) {
  state.job = job;
  const { done, total } = job.progress;
  $("job-id").textContent = job.id;
  $("job-model").textContent = `${job.model} ${job.version}`;
  $("job-status").textContent = job.status;
  $("job-status").className = `badge ${job.status}`;
  $("job-progress").max = Math.max(total, 1);
  $("job-progress").value = done;
  $("job-progress-text").textContent = `${done.toLocaleString()} of ${total.toLocaleString()} records`;
  $("cancel-job").hidden = TERMINAL.has(job.status);
  const failed = job.error ? `${job.error.message} (${job.error.code})` : "";
  $("job-error").textContent = failed;
  $("job-error").hidden = !failed;
  const ready = job.status === "succeeded";
  $("download-csv").hidden = !ready;
  $("download-ndjson").hidden = !ready;
}

async function finished(jobId, control) {
  if (control.signal.aborted) return;
  try {
    // Events carry no outputs: read the ended job once, with its outputs when they are inline.
    const job = await state.api.json("GET", `/v1/jobs/${jobId}`);
    showJob(job);
    if (job.outputs) $("outputs").replaceChildren(outputsTable(job.outputs));
    else if (job.status === "succeeded") $("outputs").replaceChildren(el("p", { class: "hint", text: "Too many outputs to show here: download them." }));
    refreshJobs();
  } catch (error) {
    showError(error);
  }
}

async function download(accept, extension) {
  clearError();
  const job = state.job;
  try {
    const blob = await state.api.outputs(job.id, accept);
    const link = el("a", { href: URL.createObjectURL(blob), download: `${job.model}-${job.id}.${extension}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  } catch (error) {
    showError(error);
  }
}

async function refreshJobs() {
  if (!state.api) return;
  try {
    const { jobs } = await state.api.json("GET", "/v1/jobs?limit=20");
    const rows = jobs.map((job) => el("tr", { tabindex: 0, onclick: () => followJob(job), onkeydown: (e) => { if (e.key === "Enter") followJob(job); } },
      el("td", { class: "mono", text: job.id.slice(-8), title: job.id }),
      el("td", { text: job.model }),
      el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
      el("td", { text: `${job.progress.done.toLocaleString()}/${job.progress.total.toLocaleString()}` }),
      el("td", { text: when(job.created_at) })));
    $("jobs").replaceChildren(jobs.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ...["job", "model", "status", "records", "created"].map((h) => el("th", { text: h })))), el("tbody", {}, ...rows))
      : el("p", { class: "hint", text: "No jobs yet: predict something above." }));
  } catch (error) {
    showError(error);
  }
}

async function cancelJob() {
  clearError();
  try {
    showJob(await state.api.json("POST", `/v1/jobs/${state.job.id}/cancel`));
  } catch (error) {
    showError(error);
  }
}

function wire() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("key").value.trim());
  });
  $("forget-key").addEventListener("click", () => {
    state.following?.abort();
    setKey(null);
    $("workspace").hidden = true;
    $("forget-key").hidden = true;
    $("key-form").hidden = false;
    $("key-status").textContent = "The key is forgotten.";
  });
  $("csv-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) sendCsv(file);
    event.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) sendCsv(file);
  });
  $("download-csv").addEventListener("click", () => download("text/csv", "csv"));
  $("download-ndjson").addEventListener("click", () => download("application/x-ndjson", "ndjson"));
  $("cancel-job").addEventListener("click", cancelJob);
  $("refresh-jobs").addEventListener("click", refreshJobs);
  const saved = sessionStorage.getItem(KEY_ITEM);
  if (saved) useKey(saved);
}

wire();
