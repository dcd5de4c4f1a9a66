// fastns's browser-only page: stylise a photo with model.onnx and onnxruntime-web, in this browser.
// Images are float32 (1, 3, H, W) RGB in [0, 1] at the network, as in fastns; the controls follow
// fastns.stylize.stylizer.apply_controls: preserve colour (stylised luminance, the photo's BT.601
// chrominance), then strength (a linear blend with the photo).
"use strict";

const $ = (id) => document.getElementById(id);
const RGB_TO_YUV = [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]];
const YUV_TO_RGB = [
  [0.9999999502050635, -1.1780677157738278e-5, 1.1398345946896977],
  [1.0000039601175919, -0.3946460645487037, -0.5805942244969615],
  [0.9999796741143063, 2.0321119919658472, -1.5097609808930817e-5],
];

let session = null; // the onnxruntime-web session
let meta = null; // model.json: name, styles, min_side
let backend = ""; // the execution provider the session runs on
let photo = null; // the chosen file
let content = null; // ImageData of the photo at the size the network runs at
let stylised = null; // the network's output, Float32Array (3, H, W)
let timing = null; // {total, network} in ms of the last stylisation

function status(text, state) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = state;
  el.classList.toggle("error", state === "error");
}

async function createSession() {
  // ?backend=wasm (or webgpu) forces one; otherwise WebGPU where the browser offers it, else WebAssembly.
  const forced = new URLSearchParams(location.search).get("backend");
  const candidates = forced ? [forced] : "gpu" in navigator ? ["webgpu", "wasm"] : ["wasm"];
  const failed = [];
  for (const ep of candidates) {
    try {
      session = await ort.InferenceSession.create("model.onnx", { executionProviders: [ep] });
      backend = ep;
      return;
    } catch (e) {
      failed.push(`${ep}: ${e.message || e}`);
    }
  }
  throw new Error(`no onnxruntime-web backend could load the network (${failed.join("; ")})`);
}

function backendName() {
  if (backend !== "wasm") return backend;
  const threads = ort.env.wasm.numThreads || (self.crossOriginIsolated ? navigator.hardwareConcurrency : 1);
  return `WebAssembly, ${threads} thread${threads === 1 ? "" : "s"}`;
}

async function loadPhoto() {
  // The photo, downscaled (never up) to "max size", drawn into the input canvas.
  let bitmap;
  try {
    bitmap = await createImageBitmap(photo, { colorSpaceConversion: "none", imageOrientation: "from-image" });
  } catch (e) {
    throw new Error(`${photo.name}: not an image this browser can read`);
  }
  const limit = Number($("max-size").value) || Infinity;
  const scale = Math.min(1, limit / Math.max(bitmap.width, bitmap.height));
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  if (Math.min(w, h) < meta.min_side) {
    throw new Error(`${photo.name}: ${w}x${h} px is too small to stylise (${meta.min_side} px minimum)`);
  }
  const canvas = $("input");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, w, h);
  bitmap.close();
  content = ctx.getImageData(0, 0, w, h);
}

async function runNetwork() {
  // RGBA bytes (H, W, 4) -> float32 (1, 3, H, W) in [0, 1] -> the network -> (3, H, W).
  const { width: w, height: h, data } = content;
  const n = w * h;
  const x = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    x[i] = data[4 * i] / 255;
    x[n + i] = data[4 * i + 1] / 255;
    x[2 * n + i] = data[4 * i + 2] / 255;
  }
  const feeds = { images: new ort.Tensor("float32", x, [1, 3, h, w]) };
  if (meta.styles.length > 1) {
    const weights = new Float32Array(meta.styles.length);
    weights[Number($("style").value)] = 1;
    feeds.style_weights = new ort.Tensor("float32", weights, [meta.styles.length]);
  }
  const results = await session.run(feeds);
  stylised = results.stylised.data;
}

function render() {
  // Preserve colour, then strength, as fastns does; 8-bit with rounding; into the output canvas.
  const { width: w, height: h, data } = content;
  const n = w * h;
  const strength = Number($("strength").value);
  const preserve = $("preserve").checked;
  const out = new ImageData(w, h);
  const px = [0, 0, 0];
  for (let i = 0; i < n; i++) {
    const c = [data[4 * i] / 255, data[4 * i + 1] / 255, data[4 * i + 2] / 255];
    px[0] = stylised[i];
    px[1] = stylised[n + i];
    px[2] = stylised[2 * n + i];
    if (preserve) {
      const m = RGB_TO_YUV;
      const y = m[0][0] * px[0] + m[0][1] * px[1] + m[0][2] * px[2];
      const u = m[1][0] * c[0] + m[1][1] * c[1] + m[1][2] * c[2];
      const v = m[2][0] * c[0] + m[2][1] * c[1] + m[2][2] * c[2];
      for (let k = 0; k < 3; k++) {
        const r = YUV_TO_RGB[k];
        px[k] = Math.min(1, Math.max(0, r[0] * y + r[1] * u + r[2] * v));
      }
    }
    for (let k = 0; k < 3; k++) {
      const value = strength < 1 ? c[k] + strength * (px[k] - c[k]) : px[k];
      out.data[4 * i + k] = Math.round(Math.min(1, Math.max(0, value)) * 255);
    }
    out.data[4 * i + 3] = 255;
  }
  const canvas = $("output");
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").putImageData(out, 0, 0);
  canvas.toBlob((blob) => {
    const link = $("download");
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `${photo.name.replace(/\.[^.]*$/, "")}_stylised.png`;
    link.hidden = false;
  }, "image/png");
}

function report() {
  const s = (ms) => `${(ms / 1000).toFixed(2)} s`;
  const el = $("status");
  status(
    `Stylised ${content.width}×${content.height} px in ${s(timing.total)} ` +
      `(network ${s(timing.network)}) · backend: ${backendName()}`,
    "done",
  );
  el.dataset.ms = timing.total.toFixed(1);
  el.dataset.networkMs = timing.network.toFixed(1);
  el.dataset.backend = backend;
}

async function stylise({ reload = true } = {}) {
  if (!photo || !session) return;
  $("run").disabled = true;
  status(`Stylising ${photo.name}…`, "running");
  await new Promise((resolve) => setTimeout(resolve, 0)); // let the status paint first
  try {
    const t0 = performance.now();
    if (reload) await loadPhoto();
    const t1 = performance.now();
    await runNetwork();
    const t2 = performance.now();
    render();
    timing = { total: performance.now() - t0, network: t2 - t1 };
    report();
  } catch (e) {
    stylised = null;
    status(e.message || String(e), "error");
  } finally {
    $("run").disabled = false;
  }
}

function controlsChanged() {
  $("strength-value").textContent = $("strength").value;
  if (stylised && content) {
    render(); // strength and colour need no new network run
    report();
  }
}

async function main() {
  try {
    if (typeof ort === "undefined") throw new Error("onnxruntime-web did not load (offline? export with web.runtime=)");
    const response = await fetch("model.json");
    if (!response.ok) throw new Error(`model.json: HTTP ${response.status}`);
    meta = await response.json();
    if (meta.styles.length > 1) {
      meta.styles.forEach((name, i) => $("style").add(new Option(name, String(i))));
      $("style-label").hidden = false;
    }
    await createSession();
    status(`Ready (${meta.name}; backend: ${backendName()}). Choose a photo.`, "ready");
  } catch (e) {
    status(e.message || String(e), "error");
    return;
  }
  $("run").disabled = false;
  $("photo").addEventListener("change", () => {
    photo = $("photo").files[0] || null;
    stylise();
  });
  $("run").addEventListener("click", () => stylise());
  $("style").addEventListener("change", () => stylise());
  $("max-size").addEventListener("change", () => stylise());
  $("strength").addEventListener("input", controlsChanged);
  $("preserve").addEventListener("change", controlsChanged);
}

main();
