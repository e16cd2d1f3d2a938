"""Writes ONNX models the way people publish them, with the real tools (test oracle; never used by WeightMark).

  onnx_export.py export SRC OUT.onnx          torch.onnx.export (TorchScript exporter, opset 17) of a Hugging Face folder
                                              (BERT/MiniLM through AutoModel, Llama through AutoModelForCausalLM), as
                                              optimum's exporter calls it: weights of nn.Linear become MatMul initializers
  onnx_export.py dynamic IN.onnx OUT.onnx     onnxruntime.quantization.quantize_dynamic, int8 weights (MatMulInteger)
  onnx_export.py nbits IN.onnx OUT.onnx BITS BLOCK
                                              onnxruntime's MatMulNBitsQuantizer (com.microsoft MatMulNBits, symmetric=False)
  onnx_export.py qdq IN.onnx OUT.onnx         onnxruntime.quantization.quantize_static, QDQ format, per-channel int8
                                              weights (DequantizeLinear before each MatMul), calibrated on random ids
  onnx_export.py external IN.onnx OUT.onnx    onnx.save_model(save_as_external_data=True): weights in OUT.onnx.data
  onnx_export.py dequant IN.onnx              onnxruntime computes the first MatMulNBits node's weight: the node alone, with
                                              the identity as input (Y = I·Wᵀ); prints W's first row and its shape (JSON)
  onnx_export.py seeds DIR                     small graphs of every form the reader decodes, for the ONNX fuzz target's seeds
  onnx_export.py run IN.onnx                  onnxruntime runs the model on fixed token ids; prints the first outputs (JSON)
"""
import json
import os
import sys


def export(src, out):
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(src)
    causal = config.model_type == "llama"
    cls = AutoModelForCausalLM if causal else AutoModel
    model = cls.from_pretrained(src, torch_dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 4, 8]], dtype=torch.long)
    mask = torch.ones_like(ids)

    class Wrapped(torch.nn.Module):
        # The forward optimum exports: ids and mask in, the first output out.
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False) if causal else \
                self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return out[0]

    with torch.no_grad():
        torch.onnx.export(Wrapped(model), (ids, mask), out, input_names=["input_ids", "attention_mask"],
                          output_names=["logits" if causal else "last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)


def dynamic(src, out):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(src, out, weight_type=QuantType.QInt8)


def nbits(src, out, bits, block):
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, DefaultWeightOnlyQuantConfig
    model = onnx.load(src)
    config = DefaultWeightOnlyQuantConfig(block_size=int(block), is_symmetric=False, bits=int(bits))
    q = MatMulNBitsQuantizer(model, algo_config=config)
    q.process()
    q.model.save_model_to_file(out, use_external_data_format=False)


def qdq(src, out):
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"input_ids": rng.integers(0, 200, size=(1, 8)).astype(np.int64),
                                "attention_mask": np.ones((1, 8), dtype=np.int64)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"])


def external(src, out):
    import onnx
    model = onnx.load(src)
    onnx.save_model(model, out, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(out) + ".data", size_threshold=1024)


def dequant(src):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, TensorProto
    model = onnx.load(src)
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n = attrs["K"], attrs["N"]
    inits = {i.name: i for i in model.graph.initializer}
    used = [i for i in node.input[1:] if i in inits]
    single = helper.make_node("MatMulNBits", ["X"] + list(node.input[1:]), ["Y"], domain="com.microsoft", **attrs)
    graph = helper.make_graph([single], "dequant", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [k, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [k, n])], [inits[i] for i in used])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = model.ir_version
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"X": np.eye(k, dtype=np.float32)})[0]
    print(json.dumps({"shape": [n, k], "row0": [float(v) for v in y[:, 0]]}))


def seeds(out):
    import numpy as np
    from onnx import helper, numpy_helper, TensorProto
    rng = np.random.default_rng(0)
    os.makedirs(out, exist_ok=True)

    def save(name, nodes, inits, inputs=("X",)):
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(i, TensorProto.FLOAT, None) for i in inputs],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(model.SerializeToString())

    w = rng.standard_normal((16, 8)).astype(np.float32)
    save("matmul_float", [helper.make_node("MatMul", ["X", "onnx::MatMul_1"], ["Y"], name="/layers.0/mlp/up_proj/MatMul")],
         [numpy_helper.from_array(w, "onnx::MatMul_1")])
    save("gemm_fp16", [helper.make_node("Gemm", ["X", "fc.weight"], ["Y"], transB=1)],
         [numpy_helper.from_array(w.T.astype(np.float16), "fc.weight")])
    q = rng.integers(-127, 127, size=(16, 8)).astype(np.int8)
    save("dequantize_axis", [helper.make_node("DequantizeLinear", ["W_q", "W_s", "W_z"], ["W"], axis=1),
                             helper.make_node("MatMul", ["X", "W"], ["Y"], name="/a/b/MatMul")],
         [numpy_helper.from_array(q, "W_q"), numpy_helper.from_array(np.full(8, 0.01, np.float32), "W_s"),
          numpy_helper.from_array(np.zeros(8, np.int8), "W_z")])
    save("dequantize_block", [helper.make_node("DequantizeLinear", ["W_q", "W_s"], ["W"], axis=0, block_size=4),
                              helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
                              helper.make_node("MatMul", ["X", "Wt"], ["Y"], name="/c/d/MatMul")],
         [numpy_helper.from_array(q, "W_q"), numpy_helper.from_array(np.full((4, 8), 0.02, np.float32), "W_s")])
    packed = rng.integers(0, 255, size=(8, 1, 8)).astype(np.uint8)
    save("matmul_nbits", [helper.make_node("MatMulNBits", ["X", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=16, N=8, bits=4,
                                           block_size=16, name="/e/f/MatMul_Q4")],
         [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(np.full(8, 0.1, np.float32), "S"),
          numpy_helper.from_array(np.full(8, 0x88, np.uint8), "Z")])
    u = rng.integers(0, 255, size=(16, 8)).astype(np.uint8)
    save("matmul_integer", [helper.make_node("MatMulInteger", ["X", "W_quantized", "xz", "W_zero_point"], ["Y"], name="/g/h/MatMul_quant")],
         [numpy_helper.from_array(u, "W_quantized"), numpy_helper.from_array(np.array(0.5, np.float32), "W_scale"),
          numpy_helper.from_array(np.array(128, np.uint8), "W_zero_point")])
    save("gather_dequantize", [helper.make_node("Gather", ["E_quantized", "X"], ["G"]),
                               helper.make_node("DequantizeLinear", ["G", "E_scale", "E_zero_point"], ["Y"])],
         [numpy_helper.from_array(u, "E_quantized"), numpy_helper.from_array(np.array(0.1, np.float32), "E_scale"),
          numpy_helper.from_array(np.array(128, np.uint8), "E_zero_point")])


def run(src):
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    ids = np.array([[1, 5, 9, 2, 7, 3, 4, 8]], dtype=np.int64)
    outputs = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    print(json.dumps([float(x) for x in outputs[0].reshape(-1)[:16]]))


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    {"export": export, "dynamic": dynamic, "nbits": nbits, "qdq": qdq, "external": external, "dequant": dequant, "seeds": seeds, "run": run}[verb](*args)
