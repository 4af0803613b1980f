/** Wire and file schemas: the ONNX model format (protobufjs over the onnx-buf descriptor). */
export * from './onnx.js';
