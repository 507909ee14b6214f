// emovox demo page: a client of the service's JSON API (GET labels, POST predict, POST timeline).
// Plain browser JavaScript, no dependencies and no build step; every URL is relative to the page.
"use strict";

const SAMPLE_RATE = 16000;
const $ = (id) => document.getElementById(id);
const state = { info: null, audio: null, name: null, recorder: null };

// ---- what the recognizer takes ------------------------------------------------------------

async function init() {
  $("file").addEventListener("change", onFile);
  $("record").addEventListener("click", toggleRecording);
  $("submit").addEventListener("click", recognize);
  $("text").addEventListener("input", updateSubmit);
  const res = await call("labels");
  if (!res.ok) {
    $("model").textContent = "The recognizer could not be reached.";
    showError(res.data);
    return;
  }
  const info = (state.info = res.data);
  $("model").textContent = `${info.name}: ${info.modality} recognizer, labels ${info.labels.join(", ")}`;
  if (info.needs_text) {
    $("text-input").hidden = false;
    $("text").maxLength = 5000;
    $("text-hint").textContent = info.asr
      ? "(optional: without one, the audio is transcribed)"
      : "(this recognizer reads text only)";
    $("audio-input").hidden = !info.asr;
    if (!info.asr) $("input").querySelector("h2").textContent = "Your transcript";
  }
  updateSubmit();
}

function updateSubmit() {
  const text = $("text").value.trim();
  const ready = state.info && (state.audio || (state.info.needs_text && text));
  $("submit").disabled = !ready || state.busy;
}

function setAudio(blob, name, note) {
  state.audio = blob;
  state.name = name;
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
  $("chosen").textContent = note ? `${name} (${note})` : name;
  updateSubmit();
}

function onFile(event) {
  const file = event.target.files[0];
  if (file) setAudio(file, file.name, `${(file.size / 1024).toFixed(1)} KB`);
}

// ---- the microphone: MediaRecorder, then WAV made here (the server decodes what soundfile reads) ----

async function toggleRecording() {
  if (state.recorder && state.recorder.state === "recording") {
    state.recorder.stop();
    return;
  }
  hideError();
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError({ error: "no_microphone", detail: "this browser cannot record here; recording needs a secure origin (open the page at http://localhost or http://127.0.0.1)" });
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError({ error: "no_microphone", detail: `the microphone is not available (${e.name}: ${e.message})` });
    return;
  }
  const chunks = [];
  const recorder = (state.recorder = new MediaRecorder(stream));
  const started = performance.now();
  const timer = setInterval(() => {
    $("rec-status").textContent = `recording ${((performance.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
  recorder.addEventListener("stop", async () => {
    clearInterval(timer);
    stream.getTracks().forEach((t) => t.stop());
    $("record").textContent = "Record";
    $("record").classList.remove("recording");
    try {
      const wav = await toWav(new Blob(chunks, { type: recorder.mimeType }));
      $("rec-status").textContent = "";
      setAudio(wav, "recording.wav", `${((wav.size - 44) / 2 / SAMPLE_RATE).toFixed(1)} s, 16 kHz WAV`);
    } catch (e) {
      $("rec-status").textContent = "";
      showError({ error: "recording", detail: `the recording could not be converted to WAV (${e.message})` });
    }
  });
  recorder.start();
  $("record").textContent = "Stop";
  $("record").classList.add("recording");
}

// Decode (any format the browser records), resample to 16 kHz, mix to mono, write 16-bit PCM WAV.
async function toWav(blob) {
  const decoder = new OfflineAudioContext(1, 1, SAMPLE_RATE); // decodeAudioData resamples to this rate
  const buffer = await decoder.decodeAudioData(await blob.arrayBuffer());
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < data.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
  }
  const out = new DataView(new ArrayBuffer(44 + 2 * mono.length));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i)); };
  text(0, "RIFF"); out.setUint32(4, 36 + 2 * mono.length, true); text(8, "WAVE");
  text(12, "fmt "); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, SAMPLE_RATE, true); out.setUint32(28, 2 * SAMPLE_RATE, true); out.setUint16(32, 2, true); out.setUint16(34, 16, true);
  text(36, "data"); out.setUint32(40, 2 * mono.length, true);
  for (let i = 0; i < mono.length; i++) {
    const x = Math.max(-1, Math.min(1, mono[i]));
    out.setInt16(44 + 2 * i, x < 0 ? x * 0x8000 : x * 0x7fff, true);
  }
  return new Blob([out], { type: "audio/wav" });
}

// ---- calling the service ----------------------------------------------------------------------

// Every answer becomes {ok, data}; a failure always carries the server's {error, detail}, or a
// short description of the HTTP status: a response body that is not the service's JSON error
// (a proxy's HTML page, a traceback) is never put on the page.
async function call(path, form) {
  let res;
  try {
    res = await fetch(path, form ? { method: "POST", body: form } : {});
  } catch (e) {
    return { ok: false, data: { error: "unreachable", detail: "the server did not answer; is `emovox serve` still running?" } };
  }
  let data = null;
  if ((res.headers.get("content-type") || "").includes("application/json")) {
    try { data = await res.json(); } catch (e) { data = null; }
  }
  if (res.ok && data) return { ok: true, data };
  if (!data || typeof data.error !== "string" || typeof data.detail !== "string") {
    data = { error: `http_${res.status}`, detail: `the server answered HTTP ${res.status} ${res.statusText}`.trim() };
  }
  return { ok: false, data };
}

async function recognize() {
  const info = state.info;
  const text = info.needs_text ? $("text").value.trim() : "";
  hideError();
  $("result").hidden = true;
  $("timeline").hidden = true;
  state.busy = true;
  updateSubmit();
  $("status").textContent = "Recognizing…";
  try {
    const form = new FormData();
    if (state.audio && !(info.needs_text && !info.asr)) form.append("audio", state.audio, state.name);
    if (text) form.append("text", text);
    const res = await call("predict", form);
    if (res.ok) showPrediction(res.data);
    const long = (res.ok && res.data.duration > info.model_max_seconds) || (!res.ok && res.data.error === "too_long");
    if (long && info.timeline && state.audio && !text) {
      $("status").textContent = "A long recording: segmenting it…";
      const tform = new FormData();
      tform.append("audio", state.audio, state.name);
      const tl = await call("timeline", tform);
      if (tl.ok) showTimeline(tl.data);
      else showError(tl.data);
    } else if (!res.ok) {
      showError(res.data);
    }
  } finally {
    $("status").textContent = "";
    state.busy = false;
    updateSubmit();
  }
}

// ---- showing results ---------------------------------------------------------------------------

function labelClass(label) {
  return `c${state.info.labels.indexOf(label) % 8}`;
}

function showPrediction(p) {
  const info = state.info;
  $("label").textContent = p.label;
  $("label").className = labelClass(p.label);
  const bars = $("bars");
  bars.replaceChildren();
  for (const label of info.labels) {
    const prob = p.probabilities[label];
    const li = document.createElement("li");
    li.className = "bar" + (label === p.label ? " top" : "");
    li.dataset.label = label;
    li.dataset.probability = String(prob);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = `fill ${labelClass(label)}`;
    fill.style.width = `${(100 * prob).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * prob).toFixed(2)}%`;
    li.append(name, track, value);
    bars.append(li);
  }
  const transcript = $("transcript");
  transcript.hidden = !p.transcript;
  transcript.textContent = p.transcript ? `“${p.transcript}”` : "";
  const cropped = p.duration != null && p.duration > info.model_max_seconds;
  $("result-scope").textContent = cropped ? `(first ${info.model_max_seconds} s)` : "";
  $("result-meta").textContent = p.duration != null
    ? `${p.duration.toFixed(2)} s of audio` + (cropped ? `; the recognizer reads the first ${info.model_max_seconds} s, the timeline covers it all` : "")
    : "";
  $("result").hidden = false;
}

function showTimeline(t) {
  const strip = $("strip");
  const body = $("segments").querySelector("tbody");
  strip.replaceChildren();
  body.replaceChildren();
  $("timeline-meta").textContent = `${t.source}, ${t.duration.toFixed(1)} s, ${t.segments.length} segments (${t.segmentation.mode})`;
  $("axis-end").textContent = `${t.duration.toFixed(1)} s`;
  $("no-speech").hidden = t.segments.length > 0;
  const anyTranscript = t.segments.some((s) => s.transcript);
  for (const s of t.segments) {
    const p = s.probabilities[s.label];
    const block = document.createElement("span");
    block.className = `segment ${labelClass(s.label)}`;
    block.style.left = `${(100 * s.start) / t.duration}%`;
    block.style.width = `${(100 * (s.end - s.start)) / t.duration}%`;
    block.title = `${s.start.toFixed(2)}-${s.end.toFixed(2)} s: ${s.label} (${(100 * p).toFixed(1)}%)`;
    strip.append(block);
    const row = document.createElement("tr");
    row.dataset.label = s.label;
    for (const cell of [s.start.toFixed(2), s.end.toFixed(2), s.label, p.toFixed(3), s.transcript || ""]) {
      const td = document.createElement("td");
      td.textContent = cell;
      row.append(td);
    }
    body.append(row);
  }
  $("segments").classList.toggle("with-transcripts", anyTranscript);
  const legend = $("legend");
  legend.replaceChildren();
  for (const label of t.labels) {
    const seconds = t.label_seconds[label] || 0;
    if (!seconds) continue;
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${labelClass(label)}`;
    li.append(swatch, `${label} ${seconds.toFixed(1)} s`);
    legend.append(li);
  }
  $("timeline").hidden = false;
}

function showError(e) {
  $("error-code").textContent = e.error;
  $("error-detail").textContent = e.detail;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

init();
