// Semantic segmentation in the visitor's browser: an agent_hf model folder exported by scripts/export_onnx.py, run by
// onnxruntime-web (WebAssembly). Nothing leaves the page: the image is read, resized, run and drawn here.
//
// The same steps as the Python path (agent_hf's image processor + onnxruntime + post_process_semantic_segmentation):
//   1. mmseg's test pipeline: keep-ratio resize to fit `scale` (mmcv `rescale_size`) with OpenCV's INTER_LINEAR
//      arithmetic (agent_hf.image_ops.resize_bilinear, bit-exact), then `(pixel - mean) * (1 / std)` in float32;
//   2. the model: `pixel_values` (1, 3, h, w) -> `logits` (1, C, h/4, w/4);
//   3. the logits resized bilinearly (align_corners=False, as torch's F.interpolate) to the resized input, then to
//      the image, then argmax over the classes;
//   4. the overlay `(1 - alpha) * image + alpha * color` and the legend of the classes found, largest area first.
// The browser's own canvas resize is not used: its filter differs from OpenCV's, so the label maps would not agree.

import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

// The wasm files are served from the same npm package (no CDN). Threads need a cross-origin isolated page, which a
// static Space is not: one thread.
ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1;

export const ALPHA = 0.5; // as the Gradio app (app/app.py DEFAULT_ALPHA)
const COEF_SCALE = 2048; // OpenCV's INTER_RESIZE_COEF_SCALE: 11-bit fixed-point weights

/** mmcv `rescale_size`: `[width, height]` of a `width x height` image resized to fit `scale = [long, short]`. */
export function rescaleSize(width, height, scale) {
  const longEdge = Math.max(...scale);
  const shortEdge = Math.min(...scale);
  const factor = Math.min(longEdge / Math.max(height, width), shortEdge / Math.min(height, width));
  return [Math.floor(width * factor + 0.5), Math.floor(height * factor + 0.5)];
}

/** Round half to even, as numpy's rint (and OpenCV's saturate_cast<short>(float)). */
function rintEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Source indices and 11-bit weights of cv2.INTER_LINEAR along one axis (image_ops._linear_taps). */
function linearTaps(srcLen, dstLen, clampWeight) {
  const scale = 1.0 / (dstLen / srcLen);
  const first = new Int32Array(dstLen);
  const second = new Int32Array(dstLen);
  const wFirst = new Int32Array(dstLen);
  const wSecond = new Int32Array(dstLen);
  for (let x = 0; x < dstLen; x++) {
    const pos = Math.fround((x + 0.5) * scale - 0.5); // computed in double, stored as float
    const start = Math.floor(pos);
    let frac = Math.fround(pos - start);
    // Horizontal pass: outside the image OpenCV puts the whole weight on the edge pixel.
    if (clampWeight && (start < 0 || start >= srcLen - 1)) frac = 0;
    first[x] = Math.min(Math.max(start, 0), srcLen - 1);
    second[x] = Math.min(Math.max(start + 1, 0), srcLen - 1);
    wSecond[x] = rintEven(frac * COEF_SCALE);
    wFirst[x] = rintEven(Math.fround(1 - frac) * COEF_SCALE);
  }
  return { first, second, wFirst, wSecond };
}

/**
 * `cv2.resize(rgb, [outW, outH], interpolation=cv2.INTER_LINEAR)` of an RGB `Uint8Array` (H * W * 3), in OpenCV's
 * fixed-point arithmetic (an exact horizontal pass, then its vertical kernel). Returns a `Uint8Array` outH * outW * 3.
 */
export function resizeBilinearCv(rgb, inW, inH, outW, outH) {
  if (inW === outW && inH === outH) return rgb.slice();
  const xs = linearTaps(inW, outW, true);
  const ys = linearTaps(inH, outH, false);
  const rows = new Int32Array(inH * outW * 3); // horizontal pass, pre-shifted by 4 bits as the vertical kernel does
  for (let y = 0; y < inH; y++) {
    for (let x = 0; x < outW; x++) {
      const a = (y * inW + xs.first[x]) * 3;
      const b = (y * inW + xs.second[x]) * 3;
      const o = (y * outW + x) * 3;
      for (let c = 0; c < 3; c++) rows[o + c] = (rgb[a + c] * xs.wFirst[x] + rgb[b + c] * xs.wSecond[x]) >> 4;
    }
  }
  const out = new Uint8Array(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    const r0 = ys.first[y] * outW * 3;
    const r1 = ys.second[y] * outW * 3;
    const b0 = ys.wFirst[y];
    const b1 = ys.wSecond[y];
    for (let i = 0; i < outW * 3; i++) {
      const value = (((rows[r0 + i] * b0) >> 16) + ((rows[r1 + i] * b1) >> 16) + 2) >> 2;
      out[y * outW * 3 + i] = value < 0 ? 0 : value > 255 ? 255 : value;
    }
  }
  return out;
}

/** mmcv `imnormalize` in float32: `(pixel - mean) * (1 / std)`, channels first. `mean`, `std` in 0-255 units. */
export function normalize(rgb, width, height, mean, std) {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const mean32 = Math.fround(mean[c]);
    const stdInv32 = Math.fround(1 / std[c]);
    for (let i = 0; i < plane; i++) out[c * plane + i] = Math.fround(Math.fround(rgb[i * 3 + c] - mean32) * stdInv32);
  }
  return out;
}

/** Indices and weights of torch's bilinear `F.interpolate(..., align_corners=False)` along one axis, in float32. */
function torchTaps(inLen, outLen) {
  const scale = Math.fround(inLen / outLen);
  const i0 = new Int32Array(outLen);
  const i1 = new Int32Array(outLen);
  const w0 = new Float32Array(outLen);
  const w1 = new Float32Array(outLen);
  for (let o = 0; o < outLen; o++) {
    let real = Math.fround(Math.fround(scale * Math.fround(o + 0.5)) - 0.5);
    if (real < 0) real = 0;
    const index = Math.floor(real);
    const lambda = Math.min(Math.fround(real - index), 1);
    i0[o] = index;
    i1[o] = index < inLen - 1 ? index + 1 : index;
    w0[o] = Math.fround(1 - lambda);
    w1[o] = lambda;
  }
  return { i0, i1, w0, w1 };
}

/**
 * The processor's post-processing for one image: `logits` (C, lh, lw) resized to the model input (h, w), then to the
 * image (H, W), argmax over C (ties: the first class). The resized logits are made one row at a time (two rows of
 * C x w kept), so a large photo with 150 classes does not need gigabytes. Returns a `Uint16Array` H * W.
 */
export function upsampledArgmax(logits, numClasses, lh, lw, h, w, H, W) {
  const ys1 = torchTaps(lh, h);
  const xs1 = torchTaps(lw, w);
  const ys2 = torchTaps(h, H);
  const xs2 = torchTaps(w, W);
  const plane = lh * lw;
  const cache = new Map(); // input-size row index -> Float32Array (C * w)
  const inputRow = (y) => {
    let row = cache.get(y);
    if (row) return row;
    row = new Float32Array(numClasses * w);
    const a = ys1.i0[y] * lw;
    const b = ys1.i1[y] * lw;
    const h0 = ys1.w0[y];
    const h1 = ys1.w1[y];
    for (let c = 0; c < numClasses; c++) {
      const base = c * plane;
      for (let x = 0; x < w; x++) {
        const x0 = xs1.i0[x];
        const x1 = xs1.i1[x];
        const top = xs1.w0[x] * logits[base + a + x0] + xs1.w1[x] * logits[base + a + x1];
        const bottom = xs1.w0[x] * logits[base + b + x0] + xs1.w1[x] * logits[base + b + x1];
        row[c * w + x] = h0 * top + h1 * bottom;
      }
    }
    if (cache.size >= 4) cache.delete(cache.keys().next().value);
    cache.set(y, row);
    return row;
  };
  const labels = new Uint16Array(H * W);
  for (let Y = 0; Y < H; Y++) {
    const top = inputRow(ys2.i0[Y]);
    const bottom = inputRow(ys2.i1[Y]);
    const h0 = ys2.w0[Y];
    const h1 = ys2.w1[Y];
    for (let X = 0; X < W; X++) {
      const x0 = xs2.i0[X];
      const x1 = xs2.i1[X];
      const w0 = xs2.w0[X];
      const w1 = xs2.w1[X];
      let best = -Infinity;
      let arg = 0;
      for (let c = 0; c < numClasses; c++) {
        const o = c * w;
        const value = Math.fround(
          h0 * Math.fround(w0 * top[o + x0] + w1 * top[o + x1]) + h1 * Math.fround(w0 * bottom[o + x0] + w1 * bottom[o + x1]),
        );
        if (value > best) {
          best = value;
          arg = c;
        }
      }
      labels[Y * W + X] = arg;
    }
  }
  return labels;
}

/** The model folder's settings: id2label (config.json), scale, mean and std in 0-255 units (preprocessor_config.json). */
export async function loadModelFolder(base) {
  const fetchJson = async (name) => {
    const response = await fetch(new URL(name, base));
    if (!response.ok) throw new Error(`${new URL(name, base)}: HTTP ${response.status}`);
    return response.json();
  };
  const [config, processor] = await Promise.all([fetchJson("config.json"), fetchJson("preprocessor_config.json")]);
  const session = await ort.InferenceSession.create(new URL("onnx/model.onnx", base).href, {
    executionProviders: ["wasm"],
  });
  return {
    session,
    id2label: config.id2label ?? {},
    scale: processor.scale ?? [2048, 512],
    mean: (processor.image_mean ?? [0.485, 0.456, 0.406]).map((m) => 255 * m),
    std: (processor.image_std ?? [0.229, 0.224, 0.225]).map((s) => 255 * s),
  };
}

/** The label map (`Uint16Array` H * W) of an RGB `Uint8Array` image (H * W * 3). */
export async function segment(model, rgb, width, height) {
  const [w, h] = rescaleSize(width, height, model.scale);
  const resized = resizeBilinearCv(rgb, width, height, w, h);
  const pixelValues = new ort.Tensor("float32", normalize(resized, w, h, model.mean, model.std), [1, 3, h, w]);
  const { logits } = await model.session.run({ pixel_values: pixelValues });
  const [, numClasses, lh, lw] = logits.dims;
  return upsampledArgmax(logits.data, numClasses, lh, lw, h, w, height, width);
}

/** `[r, g, b]` of a class: the ADE20K palette (ids beyond it wrap around), as the Gradio app colors them. */
export function classColor(palette, classId) {
  return palette[classId % palette.length];
}

/** Legend rows `{classId, name, color, pixels, fraction}`, largest area first (ties: smaller id first). */
export function legendRows(labels, id2label, palette) {
  const counts = new Map();
  for (const label of labels) counts.set(label, (counts.get(label) ?? 0) + 1);
  return [...counts.entries()]
    .map(([classId, pixels]) => ({
      classId,
      name: id2label[classId] ?? `class ${classId}`,
      color: classColor(palette, classId),
      pixels,
      fraction: pixels / labels.length,
    }))
    .sort((a, b) => b.pixels - a.pixels || a.classId - b.classId);
}

// ------------------------------------------------------------------------------------------------------ the page
const state = { model: null, palette: null, lastLabelMap: null };

function setStatus(text, pageState) {
  document.getElementById("status").textContent = text;
  document.body.dataset.state = pageState;
}

/** The uploaded file's pixels as RGB, exactly as stored (no color-space conversion, no premultiplied alpha). */
async function readImage(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2]; // alpha dropped (not composited), as agent_hf.image_ops.to_rgb_array does
  }
  return { rgb, width: bitmap.width, height: bitmap.height };
}

function drawOverlay(rgb, labels, width, height) {
  const canvas = document.getElementById("overlay");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < labels.length; i++) {
    const color = classColor(state.palette, labels[i]);
    for (let c = 0; c < 3; c++) image.data[i * 4 + c] = Math.round((1 - ALPHA) * rgb[i * 3 + c] + ALPHA * color[c]);
    image.data[i * 4 + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  canvas.hidden = false;
}

function drawLegend(rows) {
  const table = document.getElementById("legend");
  const body = table.querySelector("tbody");
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.classId = row.classId;
      tr.dataset.pixels = row.pixels;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${row.color.join(",")})`;
      const percent = row.fraction > 0 && row.fraction < 0.0001 ? "<0.01%" : `${(100 * row.fraction).toFixed(2)}%`;
      const cells = [swatch, row.name, percent].map((content) => {
        const td = document.createElement("td");
        td.append(content); // text nodes: a label name is never parsed as HTML
        return td;
      });
      cells[1].className = "class-name";
      cells[2].className = "percent";
      tr.append(...cells);
      return tr;
    }),
  );
  table.querySelector("caption").textContent = `${rows.length} ${rows.length === 1 ? "class" : "classes"} found`;
  table.hidden = false;
}

async function onFile(file) {
  try {
    setStatus(`Segmenting ${file.name}...`, "running");
    const start = performance.now();
    const { rgb, width, height } = await readImage(file);
    const labels = await segment(state.model, rgb, width, height);
    state.lastLabelMap = { width, height, labels };
    drawOverlay(rgb, labels, width, height);
    drawLegend(legendRows(labels, state.model.id2label, state.palette));
    setStatus(`${file.name}: ${width}x${height}, ${Math.round(performance.now() - start)} ms`, "done");
  } catch (error) {
    setStatus(`Could not segment ${file.name}: ${error.message ?? error}`, "error");
  }
}

/** The last label map as base64 of its little-endian uint16 values (read by the browser test). */
function labelMapBase64() {
  const { labels } = state.lastLabelMap;
  const bytes = new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function main() {
  const params = new URLSearchParams(location.search);
  const base = new URL(params.get("model") ?? "model/", location.href);
  window.agentSegmentation = { state, labelMapBase64 };
  try {
    setStatus(`Loading the model from ${base.href}...`, "loading");
    const palette = await fetch(new URL("ade20k_palette.json", import.meta.url));
    if (!palette.ok) throw new Error(`ade20k_palette.json: HTTP ${palette.status}`);
    state.palette = await palette.json();
    state.model = await loadModelFolder(base);
    setStatus("Model loaded: choose an image.", "ready");
  } catch (error) {
    setStatus(`Could not load the model from ${base.href}: ${error.message ?? error}`, "error");
    return;
  }
  const input = document.getElementById("image");
  input.disabled = false;
  input.addEventListener("change", () => input.files.length && onFile(input.files[0]));
}

if (typeof document !== "undefined") main();
