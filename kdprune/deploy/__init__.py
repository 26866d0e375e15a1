"""Deployment: a model directory exported to ONNX in the layout transducer runtimes use
(encoder, decoder = predictor, joiner, tokens, metadata; a cached chunk-by-chunk encoder for
streaming models), and decoding those graphs with onnxruntime.

- `graphs`: the exported computations as nn.Modules around the model's own modules;
- `onnx_export`: `export_onnx(model_dir, out_dir)` writes and verifies the graphs;
- `runtime`: `OnnxTransducer` (sessions, metadata, tokens), greedy search, chunk windows;
- `evaluate`: `kdprune evaluate --runtime onnx` (the same JSON contract as PyTorch's).
"""
