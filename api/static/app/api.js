// The page's one door to the service: the public /v1 API with the key, its error bodies as ApiError.

export const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);

/** An error answer of the API: its status and the {code, message, details} of its body. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The service answered ${status} without an error body.`);
    this.status = status;
    this.code = error.code || "unknown";
    this.details = Array.isArray(error.details) ? error.details : [];
  }

  static async of(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return new ApiError(response.status, body);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function idempotencyKey() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  /** Send a request and return its JSON body (null for 204); throw ApiError for an error answer. */
  async json(method, path, { body, headers = {}, signal } = {}) {
    const sent = { ...headers };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData) && typeof body !== "string") {
      sent["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers: this.headers(sent), body: payload, signal, cache: "no-store" });
    if (!response.ok) throw await ApiError.of(response);
    return response.status === 204 ? null : response.json();
  }

  /** Submit one job of JSON records, with a fresh Idempotency-Key. */
  submit(model, inputs) {
    return this.json("POST", `/v1/models/${encodeURIComponent(model)}/jobs`, {
      body: { inputs }, headers: { "Idempotency-Key": idempotencyKey() },
    });
  }

  /** Send a body with XMLHttpRequest, whose upload events tell progress(loaded, total). */
  send(method, path, body, contentType, progress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, path);
      for (const [name, value] of Object.entries(this.headers({ "Idempotency-Key": idempotencyKey() }))) {
        xhr.setRequestHeader(name, value);
      }
      if (contentType) xhr.setRequestHeader("Content-Type", contentType);
      xhr.upload.addEventListener("progress", (e) => progress(e.loaded, e.lengthComputable ? e.total : 0));
      xhr.addEventListener("load", () => {
        let parsed = null;
        try {
          parsed = JSON.parse(xhr.responseText);
        } catch {
          parsed = null;
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve(parsed);
        else reject(new ApiError(xhr.status, parsed));
      });
      xhr.addEventListener("error", () => reject(new Error("The service could not be reached while sending.")));
      xhr.send(body);
    });
  }

  /** Return a succeeded job's outputs as a Blob of CSV or NDJSON. */
  async outputs(jobId, accept) {
    const response = await fetch(`/v1/jobs/${jobId}/outputs`, { headers: this.headers({ Accept: accept }) });
    if (!response.ok) throw await ApiError.of(response);
    return response.blob();
  }

  /**
   * Call onJob with the job at once and at each change until it ends, from its events stream.
   * EventSource cannot send the key, so the stream is read with fetch; it is resumed with
   * Last-Event-ID when it closes early, and long-polled should it fail three times in a row.
   */
  async follow(jobId, onJob, signal) {
    let lastId = null;
    let failures = 0;
    while (!signal?.aborted) {
      let retry = 1000;
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(`/v1/jobs/${jobId}/events`, { headers: this.headers(headers), signal, cache: "no-store" });
        if (response.status === 204) return;
        if (!response.ok) throw await ApiError.of(response);
        const lines = readLines(response.body);
        let data = [];
        let event = "";
        for await (const line of lines) {
          if (line === "") {
            if (event === "job" && data.length) {
              const job = JSON.parse(data.join("\n"));
              failures = 0;
              onJob(job);
              if (TERMINAL.has(job.status)) return;
            }
            data = [];
            event = "";
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "data") data.push(value);
          else if (name === "event") event = value;
          else if (name === "id") lastId = value;
          else if (name === "retry" && /^\d+$/.test(value)) retry = Number(value);
        }
      } catch (error) {
        if (error instanceof ApiError || signal?.aborted) throw error;
        failures += 1;
        if (failures >= 3) return this.poll(jobId, onJob, signal);
        retry = 500 * 2 ** failures;
      }
      await sleep(retry, signal);
    }
  }

  /** Follow a job by long-polling it, a short wait at a time so progress shows. */
  async poll(jobId, onJob, signal) {
    while (!signal?.aborted) {
      const job = await this.json("GET", `/v1/jobs/${jobId}?wait=2`, { signal });
      onJob(job);
      if (TERMINAL.has(job.status)) return;
    }
  }
}

/** Yield the lines of a byte stream as text, without their line ends. */
async function* readLines(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        yield buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
