// Classify JPEG photos with a model from `headstart export MODEL -o model.onnx --any-size`:
// a plain decoder gives the photo's RGB pixels, the model does the resize and crop itself.
//
//   npm ci --ignore-scripts   (the install script only fetches GPU builds)
//   node classify.mjs model.onnx photo.jpg [photo.jpg ...] [--top-k 3] [--json]
//
// Labels come from model.labels.txt beside the model. jpeg-js ignores EXIF orientation:
// rotate photos upright first, as headstart's Python decoder does.
import {readFileSync} from "node:fs";
import {parseArgs} from "node:util";
import jpeg from "jpeg-js";
import ort from "onnxruntime-node";

const MAX_MEGAPIXELS = 40; // headstart's own limit for a decoded photo

const {values: options, positionals} = parseArgs({
  allowPositionals: true,
  options: {"top-k": {type: "string", default: "3"}, json: {type: "boolean", default: false}},
});
const [modelPath, ...photos] = positionals;
const topK = Number.parseInt(options["top-k"], 10);
if (!modelPath || photos.length === 0 || !(topK > 0)) {
  console.error("usage: node classify.mjs model.onnx photo.jpg [photo.jpg ...] [--top-k K] [--json]");
  process.exit(2);
}

const labels = readFileSync(modelPath.replace(/\.onnx$/, ".labels.txt"), "utf8").split("\n").filter(Boolean);
const session = await ort.InferenceSession.create(modelPath);
if (session.inputNames[0] !== "image") {
  console.error(`${modelPath}: not an --any-size export (its input is ${session.inputNames[0]})`);
  process.exit(2);
}

let failed = false;
for (const photo of photos) {
  try {
    const answer = await classify(photo);
    console.log(options.json ? JSON.stringify(answer) : format(answer));
  } catch (error) {
    console.error(`${photo}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);

async function classify(photo) {
  const {width, height, data} = jpeg.decode(readFileSync(photo), {
    formatAsRGBA: false,
    useTArray: true,
    maxResolutionInMP: MAX_MEGAPIXELS,
  });
  const image = new ort.Tensor("uint8", data, [height, width, 3]);
  const outputs = await session.run({image});
  const probabilities = Array.from(outputs.probabilities.data);
  const top = probabilities
    .map((probability, index) => ({label: labels[index], probability}))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, topK);
  const unknownScore = outputs.unknown_score ? outputs.unknown_score.data[0] : null;
  return {path: photo, top, unknown_score: unknownScore};
}

function format(answer) {
  const ranked = answer.top.map(({label, probability}) => `${label} ${(100 * probability).toFixed(1)}%`);
  return `${answer.path}\t${ranked.join("\t")}`;
}
