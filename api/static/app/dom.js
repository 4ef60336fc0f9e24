// Building the page's pieces: elements, the form a model's input schema makes, tables, errors in words.

import { ApiError } from "./api.js";

/** Return a new element with attributes (on* are listeners) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

// What a person can do about an error the service's own message does not already say.
const NEXT_STEPS = {
  401: "Check the key: paste it again, whole (the local run prints one).",
  403: "This needs an admin key.",
  429: "The service is busy or this key has many requests open: try again in a few seconds.",
  503: "The service cannot take work now: try again shortly.",
};

/** Say what went wrong in words: the error body's message and each detail, or why nothing answered. */
export function showError(error, where = $("error")) {
  where.replaceChildren();
  if (error instanceof ApiError) {
    where.append(el("p", { class: "error-message", text: error.message }));
    where.append(el("p", { class: "error-code", text: `${error.status} ${error.code}` }));
    const next = NEXT_STEPS[error.status];
    if (next) where.append(el("p", { class: "error-next", text: next }));
    if (error.details.length) {
      where.append(el("ul", { class: "error-details" }, ...error.details.slice(0, 20).map((d) => el("li", { text: detailText(d) }))));
    }
  } else {
    where.append(el("p", { class: "error-message", text: `The service did not answer: ${error.message || error}` }));
  }
  where.hidden = false;
  where.scrollIntoView({ block: "nearest" });
}

export function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function detailText(detail) {
  if (typeof detail !== "object" || detail === null) return String(detail);
  const where = [];
  if (detail.index !== undefined && detail.index !== null) where.push(`record ${detail.index}`);
  if (detail.field) where.push(`field ${detail.field}`);
  return `${where.join(", ") || "request"}: ${detail.reason ?? ""}`;
}

/** Return the feature names of a model in the order an array record gives them. */
export function featuresOf(model) {
  if (Array.isArray(model.features) && model.features.length) return model.features;
  return Object.keys(model.input_schema?.properties ?? {});
}

/** Fill the form with one input per feature of the model's input schema, typed as the schema says. */
export function buildRecordForm(form, model, onSubmit) {
  const props = model.input_schema?.properties ?? {};
  form.replaceChildren();
  for (const name of featuresOf(model)) {
    const spec = props[name] ?? {};
    const id = `field-${name}`;
    const kind = spec.type === "integer" || spec.type === "number" ? "number" : "text";
    const input = kind === "text" && (spec.maxLength ?? 0) > 200
      ? el("textarea", { id, name, rows: 4, required: true, maxlength: spec.maxLength })
      : el("input", { id, name, type: kind, step: spec.type === "integer" ? "1" : "any", required: true, inputmode: kind === "number" ? "decimal" : null });
    const hint = spec.type ? `${spec.type}${spec.enum ? `: one of ${spec.enum.join(", ")}` : ""}` : "";
    form.append(el("div", { class: "field" }, el("label", { for: id }, name, el("span", { class: "type", text: hint })), input));
  }
  form.append(el("button", { type: "submit", id: "predict-record" }, "Predict"));
  form.onsubmit = (event) => {
    event.preventDefault();
    const record = {};
    for (const name of featuresOf(model)) {
      const spec = props[name] ?? {};
      const raw = form.elements[name].value;
      record[name] = spec.type === "number" || spec.type === "integer" ? Number(raw) : raw;
    }
    onSubmit(record);
  };
}

/** Return a model's features and their types, folded away when there are many. */
export function schemaTable(model) {
  const props = model.input_schema?.properties ?? {};
  const names = featuresOf(model);
  const limits = (spec) => (spec.minLength !== undefined ? `${spec.minLength}–${spec.maxLength ?? "…"} characters` : "");
  const withLimits = names.some((name) => limits(props[name] ?? {}));
  const rows = names.map((name) => {
    const spec = props[name] ?? {};
    return el("tr", {}, el("td", { class: "mono", text: name }), el("td", { text: spec.type ?? "?" }),
      withLimits ? el("td", { text: limits(spec) }) : null);
  });
  const head = ["feature", "type", ...(withLimits ? ["limits"] : [])].map((h) => el("th", { text: h }));
  const table = el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows)));
  return el("details", { open: names.length <= 10 },
    el("summary", { text: `${names.length} features, in the order a CSV header or an array record gives them` }), table);
}

/** Return a table of outputs: a label and each label's probability, or a value. */
export function outputsTable(outputs, limit = 100) {
  const shown = outputs.slice(0, limit);
  const labels = Object.keys(shown[0]?.probabilities ?? {});
  const head = labels.length ? ["#", "label", ...labels.map((l) => `P(${l})`)] : ["#", "value"];
  const rows = shown.map((o, i) => el("tr", {}, el("td", { text: String(i) }),
    ...(labels.length
      ? [el("td", { text: o.label }), ...labels.map((l) => el("td", { text: formatNumber(o.probabilities[l]) }))]
      : [el("td", { text: formatNumber(o.value) })])));
  const table = el("table", { id: "outputs-table" },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))), el("tbody", {}, ...rows));
  const more = outputs.length > limit ? el("p", { class: "hint", text: `The first ${limit} of ${outputs.length.toLocaleString()} outputs; download them all.` }) : null;
  return el("div", {}, el("div", { class: "scroll" }, table), more);
}

export function formatNumber(value) {
  return typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(3)) : String(value ?? "");
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}
