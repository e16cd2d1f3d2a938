"""Writes a model the way the hub's quantizers write it, with the real libraries (test oracle; never used by WeightMark).

  hub_quant.py mlx SRC OUT BITS GROUP [MODE]
                                          mlx_lm.convert -q, as mlx-community publishes models: MLX affine (the default),
                                          or MODE mxfp4 / nvfp4 / mxfp8 (microscaled: U8 scales, no biases)
  hub_quant.py bnb4 SRC OUT [nf4|fp4]     transformers + bitsandbytes load_in_4bit (double quantization), save_pretrained
  hub_quant.py bnb8 SRC OUT               transformers + bitsandbytes load_in_8bit (LLM.int8), save_pretrained
  hub_quant.py ct SRC OUT                 compressed-tensors pack-quantized W4A16 (group 128, symmetric): the library's own
                                          PackedQuantizationCompressor quantizes and packs; scales from absmax/7.5 per group
                                          (llm-compressor's min-max observer for symmetric int4), config as llm-compressor writes it
  hub_quant.py gptq SRC OUT               GPTQ 4-bit, group 128, asymmetric round-to-nearest, packed from the documented layout
                                          (AutoGPTQ/GPTQModel need CUDA builds here): qweight [in/8, out], qzeros (z-1) [groups, out/8],
                                          scales fp16 [groups, out], g_idx [in]
  hub_quant.py awq SRC OUT                AWQ gemm 4-bit, group 128, packed from the documented layout (AutoAWQ needs CUDA):
                                          qweight [in, out/8] nibble order 0 2 4 6 1 3 5 7, qzeros [in/128, out/8], scales [in/128, out]
  hub_quant.py dequant-mlx OUT NAME       prints mx.dequantize of one weight of an MLX folder as JSON floats (first 64)

SRC is a Hugging Face Llama folder (config.json + safetensors). A minimal word-level tokenizer is written next to the
weights when the folder has none (mlx_lm.convert needs one; it does not change the weights).
"""
import json
import os
import shutil
import sys
import tempfile


def with_tokenizer(src):
    if os.path.exists(os.path.join(src, "tokenizer.json")):
        return src
    tmp = tempfile.mkdtemp(prefix="hubq-src-")
    for name in os.listdir(src):
        shutil.copy(os.path.join(src, name), tmp)
    config = json.load(open(os.path.join(src, "config.json")))
    vocab = {"<unk>": 0}
    for i in range(1, config["vocab_size"]):
        vocab["w%d" % i] = i
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    json.dump(tokenizer, open(os.path.join(tmp, "tokenizer.json"), "w"))
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>"}, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    return tmp


def mlx(src, out, bits, group, mode="affine"):
    from mlx_lm import convert
    convert(with_tokenizer(src), mlx_path=out, quantize=True, q_bits=int(bits), q_group_size=int(group), q_mode=mode)


def bnb(src, out, mode, quant_type="nf4"):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    if mode == 4:
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    else:
        q = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu", torch_dtype=torch.float32)
    model.save_pretrained(out)


def linear_weights(src):
    from safetensors.numpy import load_file
    tensors = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(src, f)))
    config = json.load(open(os.path.join(src, "config.json")))
    linear = [n for n in tensors if ".layers." in n and n.endswith("_proj.weight") and tensors[n].ndim == 2]
    return tensors, config, linear


def save_folder(out, tensors, config):
    from safetensors.numpy import save_file
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)


def rtn_asymmetric(w, group):
    import numpy as np
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group, group)
    lo, hi = g.min(axis=2), g.max(axis=2)
    scale = np.maximum(hi - lo, 1e-8) / 15.0
    zero = np.clip(np.round(-lo / scale), 0, 15)
    q = np.clip(np.round(g / scale[:, :, None]) + zero[:, :, None], 0, 15).astype(np.int64).reshape(out_f, in_f)
    return q, scale.astype(np.float16), zero.astype(np.int64)   # q [out, in], scale/zero [out, groups]


def gptq(src, out, group=128):
    import numpy as np
    tensors, config, linear = linear_weights(src)
    for name in linear:
        w = tensors.pop(name).astype(np.float32)
        q, scale, zero = rtn_asymmetric(w, group)
        out_f, in_f = w.shape
        qt = q.T                                           # [in, out]
        qweight = np.zeros((in_f // 8, out_f), dtype=np.uint32)
        for j in range(8):
            qweight |= (qt[j::8, :].astype(np.uint32) << (4 * j))
        zt = (zero.T - 1) & 0xF                            # stored z - 1, [groups, out]
        qzeros = np.zeros((in_f // group, out_f // 8), dtype=np.uint32)
        for j in range(8):
            qzeros |= (zt[:, j::8].astype(np.uint32) << (4 * j))
        p = name[: -len(".weight")]
        tensors[p + ".qweight"] = qweight.view(np.int32)
        tensors[p + ".qzeros"] = qzeros.view(np.int32)
        tensors[p + ".scales"] = np.ascontiguousarray(scale.T)
        tensors[p + ".g_idx"] = (np.arange(in_f) // group).astype(np.int32)
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False, "sym": False,
                                     "checkpoint_format": "gptq"}
    save_folder(out, tensors, config)


def awq(src, out, group=128):
    import numpy as np
    tensors, config, linear = linear_weights(src)
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    for name in linear:
        w = tensors.pop(name).astype(np.float32)
        q, scale, zero = rtn_asymmetric(w, group)
        out_f, in_f = w.shape
        qt, zt = q.T, np.repeat(zero.T, 1, axis=0)        # [in, out], [groups, out]
        qweight = np.zeros((in_f, out_f // 8), dtype=np.uint32)
        qzeros = np.zeros((in_f // group, out_f // 8), dtype=np.uint32)
        for i in range(8):
            qweight |= (qt[:, order[i]::8].astype(np.uint32) << (4 * i))
            qzeros |= (zt[:, order[i]::8].astype(np.uint32) << (4 * i))
        p = name[: -len(".weight")]
        tensors[p + ".qweight"] = qweight.view(np.int32)
        tensors[p + ".qzeros"] = qzeros.view(np.int32)
        tensors[p + ".scales"] = np.ascontiguousarray(scale.T)
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    save_folder(out, tensors, config)


def compressed(src, out, group=128):
    import numpy as np
    import torch
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    tensors, config, linear = linear_weights(src)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    for name in linear:
        w = torch.from_numpy(tensors.pop(name).astype(np.float32)).to(torch.bfloat16)
        out_f, in_f = w.shape
        absmax = w.float().reshape(out_f, in_f // group, group).abs().amax(dim=2)
        scale = (absmax / 7.5).clamp(min=1e-8).to(torch.bfloat16)
        state = PackedQuantizationCompressor.compress({"weight": w, "weight_scale": scale,
                                                       "weight_zero_point": torch.zeros_like(scale, dtype=torch.int8)}, scheme)
        p = name[: -len(".weight")]
        tensors[p + ".weight_packed"] = state["weight_packed"].numpy()
        tensors[p + ".weight_scale"] = state["weight_scale"].float().numpy()
        tensors[p + ".weight_shape"] = state["weight_shape"].numpy().astype(np.int64)
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                                          "strategy": "group", "group_size": group}}},
        "ignore": ["lm_head"]}
    save_folder(out, tensors, config)


def dequant_ref(kind, src, out, name, group=128):
    """The first 64 values of a weight as the format stands for it: for gptq/awq the round-to-nearest result computed
    before packing (from SRC), for ct the library's own decompress of OUT."""
    import numpy as np
    if kind == "ct":
        import torch
        from safetensors.torch import load_file
        from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        t = load_file(os.path.join(out, "model.safetensors"))
        p = name[: -len(".weight")]
        scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group))
        state = {k[len(p) + 1:]: v for k, v in t.items() if k.startswith(p + ".")}
        w = PackedQuantizationCompressor.decompress(state, scheme)["weight"].float().numpy()
    else:
        tensors, _, _ = linear_weights(src)
        q, scale, zero = rtn_asymmetric(tensors[name].astype(np.float32), group)
        out_f, in_f = q.shape
        w = (q.reshape(out_f, in_f // group, group) - zero[:, :, None]) * scale.astype(np.float32)[:, :, None]
        w = w.reshape(out_f, in_f)
    print(json.dumps([float(x) for x in w.reshape(-1)[:64]]))


def dequant_mlx(folder, name):
    import mlx.core as mx
    config = json.load(open(os.path.join(folder, "config.json")))
    q = config.get("quantization") or config["quantization_config"]
    tensors = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            tensors.update(mx.load(os.path.join(folder, f)))
    prefix = name[: -len(".weight")]
    mode = q.get("mode", "affine")
    biases = tensors.get(prefix + ".biases") if mode == "affine" else None
    w = mx.dequantize(tensors[name], tensors[prefix + ".scales"], biases, group_size=q["group_size"], bits=q["bits"], mode=mode)
    print(json.dumps([float(x) for x in w.astype(mx.float32).reshape(-1)[:64].tolist()]))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "mlx":
        mlx(*sys.argv[2:7])
    elif cmd == "bnb4":
        bnb(sys.argv[2], sys.argv[3], 4, sys.argv[4] if len(sys.argv) > 4 else "nf4")
    elif cmd == "bnb8":
        bnb(sys.argv[2], sys.argv[3], 8)
    elif cmd == "gptq":
        gptq(sys.argv[2], sys.argv[3])
    elif cmd == "awq":
        awq(sys.argv[2], sys.argv[3])
    elif cmd == "ct":
        compressed(sys.argv[2], sys.argv[3])
    elif cmd == "dequant-ref":
        dequant_ref(*sys.argv[2:6])
    elif cmd == "dequant-mlx":
        dequant_mlx(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)
