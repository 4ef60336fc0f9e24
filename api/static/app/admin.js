// The admin panel of a model: routing weights, each version's traffic, latency and drift, publishing.

import { ApiError } from "./api.js";
import { $, el, featuresOf, formatNumber, showError } from "./dom.js";

let current = null;

// What a publish job's status means while a worker takes the version in.
const STAGES = {
  queued: "Sent. Waiting for a worker…",
  running: "A worker is checking it: loading it, predicting the reference rows, converting it to ONNX…",
};

/** Show the admin panel for the model when the key is an admin key, and hide it otherwise. */
export async function loadAdmin(api, model) {
  current = { api, model };
  const section = $("admin-section");
  section.hidden = true;
  delete section.dataset.scope;
  const admin = await isAdmin(api, model.name);
  if (current.model !== model) return; // another model was chosen meanwhile
  section.dataset.scope = admin ? "admin" : "user";
  if (!admin) return;
  $("admin-model").textContent = model.name;
  section.hidden = false;
  say("routing-status", "");
  say("publish-status", "");
  await showVersions();
}

/** Tell whether the key is an admin key by reading one entry of the model's prediction log, an admin read. */
async function isAdmin(api, name) {
  try {
    const path = `/v1/models/${encodeURIComponent(name)}/predictions?limit=1`;
    const response = await fetch(path, { headers: api.headers(), cache: "no-store" });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/** Put a line under a button: "failed" in red, "done" in green, else muted. */
function say(id, text, mood = "") {
  $(id).textContent = text;
  $(id).classList.toggle("error-text", mood === "failed");
  $(id).classList.toggle("ok-text", mood === "done");
}

/** Say why the service refused, beside the button: its message and the first detail's reason. */
function refusal(error) {
  const reason = error instanceof ApiError && error.details[0]?.reason ? ` (${error.details[0].reason})` : "";
  return `${error.message}${reason}`;
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
    const standard = defaultOf(routing.routes);
    const rows = model.versions.map((version, i) => {
      const f = figures[version] ?? { jobs: 0, failed: 0, seconds: 0, timed: 0 };
      const latency = f.timed ? `${formatNumber((1000 * f.seconds) / f.timed)} ms` : "–";
      const weight = routing.routes[version] ?? 0;
      const notes = [version === standard ? "default" : null, routing.shadow?.version === version ? "shadow" : null];
      return el("tr", {},
        el("td", { class: "mono", "data-label": "version" }, version, ...notes.filter(Boolean).map((n) => el("span", { class: "badge note", text: n }))),
        el("td", { "data-label": "weight (%)" }, el("input", {
          type: "number", min: 0, max: 100, step: 1, class: "weight", name: version, id: `weight-${version}`,
          "aria-label": `weight of ${version}`, value: String(weight), oninput: showTotal,
        })),
        el("td", { "data-label": "jobs", text: `${f.jobs.toLocaleString()}${f.failed ? ` (${f.failed} failed)` : ""}` }),
        el("td", { "data-label": "latency", text: latency }),
        el("td", { "data-label": "drift (1 h)", text: drifts[i] }));
    });
    $("versions").replaceChildren(el("table", { id: "versions-table" },
      el("thead", {}, el("tr", {}, ...["version", "weight (%)", "jobs", "latency", "drift (1 h)"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows)));
    showTotal();
    $("routing-form").dataset.shadow = JSON.stringify(routing.shadow ?? null);
    $("shadow").replaceChildren(shadowText(shadow, model.name));
    $("publish-version").placeholder = nextVersion(model.versions);
  } catch (error) {
    showError(error);
  }
}

/** Show the sum of the weights typed, in red while it is not 100. */
function showTotal() {
  const weights = [...$("versions").querySelectorAll("input.weight")].map((input) => Number(input.value) || 0);
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  $("routing-total").textContent = total === 100 ? "Total 100 %" : `Total ${total} %: the weights must sum to 100`;
  $("routing-total").classList.toggle("error-text", total !== 100);
}

/** Return the model's default: the version with the largest weight, the newest of equals. */
function defaultOf(routes) {
  const newer = (a, b) => compareVersions(a.split(".").map(Number), b.split(".").map(Number)) > 0;
  let found = null;
  for (const [version, weight] of Object.entries(routes)) {
    if (found === null || weight > routes[found] || (weight === routes[found] && newer(version, found))) found = version;
  }
  return found;
}

function compareVersions(a, b) {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

/** Return the version after the highest one, its minor number raised: what a retrained model would be. */
function nextVersion(versions) {
  const parts = versions.map((v) => v.split(".").map(Number)).filter((p) => p.length === 3 && p.every(Number.isInteger));
  if (!parts.length) return "1.0.0";
  parts.sort(compareVersions);
  const [major, minor] = parts[parts.length - 1];
  return `${major}.${minor + 1}.0`;
}

function shadowText(shadow, model) {
  if (!shadow || !shadow.version) {
    return el("p", { class: "hint" }, "No shadow version. To have one predict a share of jobs, compared only: ",
      el("code", { text: `infer route ${model} … --shadow VERSION:0.1` }), ".");
  }
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
    if (!found.current_rows) return "no rows yet";
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
  say("routing-status", "Saving…");
  try {
    const saved = await api.json("PUT", `/v1/models/${encodeURIComponent(model.name)}/routing`, { body });
    say("routing-status", `Saved: ${Object.entries(saved.routes).map(([v, w]) => `${v} ${w} %`).join(", ")}. New jobs follow it within a second.`, "done");
    await showVersions();
  } catch (error) {
    say("routing-status", `Not saved: ${refusal(error)}`, "failed");
    showError(error);
  }
}

async function publish(event) {
  event.preventDefault();
  const { api, model } = current;
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
  const what = `${model.name} ${metadata.version}`;
  try {
    const job = await api.send("POST", `/v1/models/${encodeURIComponent(model.name)}/versions`, body, null,
      (loaded, total) => say("publish-status", total ? `Sending ${Math.round((100 * loaded) / total)} %` : "Sending…"));
    say("publish-status", STAGES.queued);
    await api.follow(job.id, (seen) => { if (STAGES[seen.status]) say("publish-status", STAGES[seen.status]); });
    const ended = await api.json("GET", `/v1/jobs/${job.id}`);
    if (ended.status !== "succeeded") {
      say("publish-status", `Not published: ${ended.error?.message ?? ended.status}`, "failed");
      return;
    }
    const runtime = ended.outputs?.[0]?.runtime;
    say("publish-status", `Published ${what}${runtime ? `, served with ${runtime}` : ""}. It gets no new jobs until you give it a weight above.`, "done");
    form.reset();
    if (current.model === model) {
      // Reading the new version itself lists it at once, where the model's list may lag by a second.
      const path = `/v1/models/${encodeURIComponent(model.name)}/versions/${encodeURIComponent(metadata.version)}`;
      current = { ...current, model: { ...model, versions: (await api.json("GET", path)).versions } };
      await showVersions();
    }
  } catch (error) {
    say("publish-status", `Not published: ${refusal(error)}`, "failed");
    showError(error);
  }
}

$("routing-form").addEventListener("submit", saveRouting);
$("publish-form").addEventListener("submit", publish);
