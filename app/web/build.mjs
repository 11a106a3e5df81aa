// `npm run build`: the page as a self-contained folder `dist/` for a static host (a static Hugging Face Space builds it
// with `app_build_command`): the page, onnxruntime-web's ES module and WebAssembly files at the paths the page imports
// them from, and `model/` when there is one (an exported model folder: config.json, preprocessor_config.json, onnx/).
import fs from "node:fs";

const RUNTIME = "node_modules/onnxruntime-web/dist/";
const files = ["index.html", "segment.js", "ade20k_palette.json"];
const runtime = fs.readdirSync(RUNTIME).filter((name) => /^ort(\.wasm\.min\.mjs|-wasm-simd-threaded\.(mjs|wasm))$/.test(name));
if (runtime.length !== 3) throw new Error(`${RUNTIME}: onnxruntime-web's wasm files are missing (run npm ci first)`);

fs.rmSync("dist", { recursive: true, force: true });
fs.mkdirSync(`dist/${RUNTIME}`, { recursive: true });
for (const name of files) fs.copyFileSync(name, `dist/${name}`);
for (const name of runtime) fs.copyFileSync(`${RUNTIME}${name}`, `dist/${RUNTIME}${name}`);
if (fs.existsSync("model")) fs.cpSync("model", "dist/model", { recursive: true, dereference: true });
console.log(`wrote dist/: ${[...files, ...runtime.map((name) => RUNTIME + name)].join(", ")}${fs.existsSync("model") ? ", model/" : ""}`);
