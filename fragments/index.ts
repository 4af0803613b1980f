/**
 * Tensor fragments: read and write ONNX models of any size, analyse their graphs, plan cuts, split
 * them into content-addressed fragments with a manifest, verify the fragments against the whole
 * model, and build synthetic models for tests, the devnet and benchmarks.
 */
export { readModel } from './onnx/read.js';
export { writeModel, type WriteOptions, type WrittenModel } from './onnx/write.js';
export { FragmentError, type FragmentErrorCode } from './onnx/errors.js';
export type { ModelDoc, GraphDoc, Weight, TensorBytes } from './onnx/model-doc.js';
export * from './onnx/dtype.js';
export { indexGraph, type GraphIndex } from './analysis/graph.js';
export { inferTensorInfo, resolveShape, nodeFlops, type TensorInfo, type Dim } from './analysis/infer.js';
export { planCuts, countCutPoints, type CutProblem, type CutPlan, type CutTarget } from './planner.js';
export { fragmentModel, analyseModel, type FragmentOptions, type FragmentResult } from './fragment.js';
export { verifyFragments, checkFragmentFiles, type VerifyOptions, type VerifyReport } from './verify.js';
export { inspectModel, type ModelInspection } from './inspect.js';
export { checkManifest, MANIFEST_SCHEMA, MANIFEST_FILE, type Manifest, type ManifestFragment, type ExpertGroup, type GenerationDefaults } from './manifest.js';
export { readManifest } from './manifest-file.js';
export { modelFileOf, readModelFolderFiles, generationDefaults, MODEL_FILE_NAMES, type ModelFolderFiles, type TokenizerCheck } from './model-folder.js';
export { cidOfBytes, cidOfFile, cidFromSha256, normalizeCid } from './cid.js';
export { statefulPairs, type StatefulPair } from './stateful.js';
export { sampleInputs, integerInputBounds } from './sample-inputs.js';
export { seededRandom } from './seeded-random.js';
export { buildModel, parameterCount, type BuildOptions } from './builder/index.js';
