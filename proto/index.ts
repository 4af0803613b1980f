/** Wire and file schemas: the ONNX model format and the gridpipe wire (grid.proto), both through protobufjs. */
export * from './onnx.js';
export * from './grid.js';
