// The admin panel of a model: routing weights, each version's traffic, latency and drift, publishing.

import { ApiError } from "./api.js";
import { $, el, featuresOf, formatNumber, showError } from "./dom.js";

let current = null;

/** Show the admin panel for the model when the key is an admin key, and hide it otherwise. */
export async function loadAdmin(api, model, followJob) {
  current = { api, model, followJob };
  $("admin-section").hidden = true;
  if (!(await isAdmin(api, model.name))) return;
  $("admin-model").textContent = model.name;
  $("admin-section").hidden = false;
  $("routing-status").textContent = "";
  $("publish-status").textContent = "";
  await showVersions();
}

/** Tell whether the key may change routing: a PUT of no routing at all is refused 403 for a user key and
 * 422 for an admin key, and changes nothing either way. */
async function isAdmin(api, name) {
  try {
    await api.json("PUT", `/v1/models/${encodeURIComponent(name)}/routing`, { body: {} });
    return true;
  } catch (error) {
    return error instanceof ApiError && error.status === 422;
  }
}

async function showVersions() {
  const { api, model } = current;
  const name = encodeURIComponent(model.name);
  try {
    const [routing, figures, shadow] = await Promise.all([
      api.json("GET", `/v1/models/${name}/routing`),
      versionFigures(model.name),
      api.json("GET", `/v1/models/${name}/shadow`).catch(() => null),
    ]);
    const drifts = await Promise.all(model.versions.map((v) => drift(api, model.name, v)));
    const rows = model.versions.map((version, i) => {
      const f = figures[version] ?? { jobs: 0, failed: 0, seconds: 0, timed: 0 };
      const latency = f.timed ? `${formatNumber((1000 * f.seconds) / f.timed)} ms` : "–";
      return el("tr", {},
        el("td", { class: "mono", text: version }),
        el("td", {}, el("input", {
          type: "number", min: 0, max: 100, step: 1, class: "weight", name: version, id: `weight-${version}`,
          "aria-label": `weight of ${version}`, value: String(routing.routes[version] ?? 0),
        })),
        el("td", { text: `${f.jobs.toLocaleString()}${f.failed ? ` (${f.failed} failed)` : ""}` }),
        el("td", { text: latency }),
        el("td", { text: drifts[i] }));
    });
    $("versions").replaceChildren(el("table", { id: "versions-table" },
      el("thead", {}, el("tr", {}, ...["version", "weight %", "jobs", "mean latency", "drift"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows)));
    $("routing-form").dataset.shadow = JSON.stringify(routing.shadow ?? null);
    $("shadow").replaceChildren(shadowText(shadow));
  } catch (error) {
    showError(error);
  }
}

function shadowText(shadow) {
  if (!shadow || !shadow.version) return el("p", { class: "hint", text: "No shadow version." });
  const agreement = shadow.agreement === null ? "–" : `${(100 * shadow.agreement).toFixed(1)} %`;
  return el("p", { text: `Shadow ${shadow.version}: ${shadow.compared.toLocaleString()} records compared, agreement ${agreement}, mean absolute difference ${formatNumber(shadow.mean_abs_diff ?? "–")}.` });
}

/** Return each version's ended jobs and latency, read from the service's public /metrics. */
async function versionFigures(model) {
  const figures = {};
  const response = await fetch("/metrics", { cache: "no-store" });
  if (!response.ok) return figures;
  for (const line of (await response.text()).split("\n")) {
    const match = /^(infer_jobs_total|infer_job_seconds_sum|infer_job_seconds_count)\{([^}]*)\} ([0-9.e+-]+)$/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[2].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (labels.model !== model) continue;
    const f = (figures[labels.version] ??= { jobs: 0, failed: 0, seconds: 0, timed: 0 });
    const value = Number(match[3]);
    if (match[1] === "infer_jobs_total") {
      f.jobs += value;
      if (labels.outcome === "failed") f.failed += value;
    } else if (match[1] === "infer_job_seconds_sum") f.seconds += value;
    else f.timed += value;
  }
  return figures;
}

async function drift(api, model, version) {
  try {
    const found = await api.json("GET", `/v1/models/${encodeURIComponent(model)}/versions/${version}/drift?window_s=3600`);
    const share = `${Math.round(100 * (found.drifted_share ?? 0))} % of features`;
    return `${found.dataset_drift ? "drifting" : "steady"} (${share}, ${found.current_rows.toLocaleString()} rows)`;
  } catch {
    return "–";
  }
}

async function saveRouting(event) {
  event.preventDefault();
  const { api, model } = current;
  const routes = {};
  for (const input of $("versions").querySelectorAll("input.weight")) {
    const weight = Number(input.value);
    if (weight > 0) routes[input.name] = weight;
  }
  const body = { routes, shadow: JSON.parse($("routing-form").dataset.shadow || "null") };
  $("routing-status").textContent = "Saving…";
  try {
    const saved = await api.json("PUT", `/v1/models/${encodeURIComponent(model.name)}/routing`, { body });
    $("routing-status").textContent = `Saved: ${Object.entries(saved.routes).map(([v, w]) => `${v} ${w} %`).join(", ")}.`;
    await showVersions();
  } catch (error) {
    $("routing-status").textContent = `Not saved: ${error.message}`;
    showError(error);
  }
}

async function publish(event) {
  event.preventDefault();
  const { api, model, followJob } = current;
  const form = event.target;
  const props = model.input_schema?.properties ?? {};
  const metadata = {
    version: form.elements.version.value.trim(),
    description: form.elements.description.value.trim() || model.description,
    task: model.task,
    features: featuresOf(model).map((name) => ({ name, type: props[name]?.type ?? "number" })),
    allow_pickle: form.elements.allow_pickle.checked,
  };
  if (model.labels) metadata.labels = model.labels;
  const body = new FormData();
  body.append("metadata", JSON.stringify(metadata));
  body.append("artifact", form.elements.artifact.files[0]);
  if (form.elements.reference.files[0]) body.append("reference", form.elements.reference.files[0]);
  const status = $("publish-status");
  try {
    const job = await api.send("POST", `/v1/models/${encodeURIComponent(model.name)}/versions`, body, null,
      (loaded, total) => { status.textContent = total ? `Sending ${Math.round((100 * loaded) / total)} %` : "Sending…"; });
    status.textContent = `Publishing as job ${job.id}: follow it below.`;
    followJob(job);
  } catch (error) {
    status.textContent = `Not published: ${error.message}`;
    showError(error);
  }
}

$("routing-form").addEventListener("submit", saveRouting);
$("publish-form").addEventListener("submit", publish);
