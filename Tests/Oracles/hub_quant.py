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
  hub_quant.py ct-asym SRC OUT            compressed-tensors pack-quantized W4A16_ASYM (int4, group 128, zero points): scales and
                                          zero points from the library's calculate_qparams on per-group min/max (llm-compressor's
                                          memoryless min-max weight observer), packed by the library's PackedQuantizationCompressor;
                                          config by the library's ModelCompressor.update_config
  hub_quant.py ct-nvfp4 SRC OUT [A16]     compressed-tensors nvfp4-pack-quantized, llm-compressor's NVFP4 scheme (FP4 E2M1, group 16,
                                          E4M3 scales, F32 weight_global_scale shared by q/k/v and by gate/up as llm-compressor fuses
                                          them; input_global_scale from a min-max pass over random tokens), or NVFP4A16 with A16
  hub_quant.py ct-mxfp4 SRC OUT [A16]     compressed-tensors mxfp4-pack-quantized, the MXFP4 scheme (FP4 E2M1, group 32, U8 E8M0
                                          scales), or MXFP4A16 with A16 (same tensors, weight-only config)
  hub_quant.py gptq3 SRC OUT              GPTQ 3-bit, group 128, asymmetric round-to-nearest (GPTQ's own min-max rule), packed from
                                          the documented layout: one LSB-first 3-bit stream along in (qweight [in*3/32, out]) and
                                          along out (qzeros (z-1) [groups, out*3/32]); config as AutoGPTQ 0.7.1 writes it
  hub_quant.py awq-gemv SRC OUT           AWQ "gemv" 4-bit, group 128 (AutoAWQ's WQLinear_GEMV layout): qweight [out, in/8] and
                                          qzeros [out, zeros_width] nibbles in natural order, scales fp16 [out, zeros_width*8]
  hub_quant.py hqq SRC OUT [DTYPE]        HQQ 4-bit, group 64, axis 1 (HqqConfig's defaults) by the hqq library on the CPU: its
                                          quantize_model and save_to_safetensors (transformers 5.25 no longer quantizes with
                                          HqqConfig); config.json's quantization_config is HqqConfig's. DTYPE: hqq's compute dtype
                                          (float32 default: scales/zeros F32, other tensors unchanged; float16/bfloat16 as uploads)
  hub_quant.py dequant-ref KIND SRC OUT NAME
                                          the first 64 values of weight NAME as the format stands for it (JSON floats): the library's
                                          own decompress/dequantize for ct, ct-asym, ct-nvfp4, ct-mxfp4, hqq (of OUT); the quantizer's
                                          values before packing for gptq, awq, gptq3, awq-gemv (from SRC)
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


def linear_weights(src, torch=False):
    """The folder's tensors (numpy arrays, or torch tensors keeping BF16/F8 dtypes), its config and its linear layers."""
    if torch:
        from safetensors.torch import load_file
    else:
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


def torch_weights(src):
    """Like linear_weights, as torch tensors (keeps BF16/F8 dtypes when writing)."""
    return linear_weights(src, torch=True)


def save_torch_folder(out, tensors, config, metadata=None):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "model.safetensors"),
              metadata=metadata or {"format": "pt"})
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)


# llm-compressor fuses the global scales of these sibling layers (vLLM runs them as one matrix).
CT_FUSED = [("gate_proj", "up_proj"), ("q_proj", "k_proj", "v_proj")]


def ct_input_absmax(src, config, names, tokens=4, length=128):
    """Per-linear absmax of the layer inputs over random tokens (llm-compressor's static min-max observer, tensor-wide)."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    model.eval()
    absmax, hooks = {}, []
    for name, module in model.named_modules():
        if name + ".weight" in names:
            def hook(mod, args, key=name + ".weight"):
                a = args[0].detach().abs().amax()                              # in the model's dtype (BF16)
                absmax[key] = torch.maximum(absmax[key], a) if key in absmax else a
            hooks.append(module.register_forward_pre_hook(hook))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model(torch.randint(0, config["vocab_size"], (tokens, length), generator=gen))
    for h in hooks:
        h.remove()
    return absmax


def ct_quantize(src, out, preset):
    """compressed-tensors through its own compressors: the preset's scheme, llm-compressor's observers (per-group min/max,
    calculate_qparams; for TENSOR_GROUP a global scale over the fused siblings), the compressor that infer_module_format picks,
    and the config written by ModelCompressor.update_config (as llm-compressor's save_pretrained writes it)."""
    import torch
    from compressed_tensors import ModelCompressor
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus, preset_name_to_scheme
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
    tensors, config, linear = torch_weights(src)
    scheme = preset_name_to_scheme(preset, ["Linear"])
    fmt = infer_module_format(torch.nn.Linear, scheme)
    scheme.format = fmt
    compressor = BaseCompressor.get_value_from_registry(fmt.value)
    args = scheme.weights
    weights = {n: tensors.pop(n).to(torch.bfloat16) for n in linear}     # llm-compressor runs on the hub's bf16 weights
    stats = {}
    for n, w in weights.items():                                          # memoryless min-max: per row and group
        g = w.unflatten(-1, (-1, args.group_size))
        stats[n] = (g.amin(dim=-1), g.amax(dim=-1))
    global_scale = {}
    if args.strategy == "tensor_group":
        for n in weights:
            parent, leaf = n[: -len(".weight")].rsplit(".", 1)
            siblings = next((f for f in CT_FUSED if leaf in f), (leaf,))
            members = [m for m in (parent + "." + s + ".weight" for s in siblings) if m in weights]
            absmax = max(torch.maximum(-stats[m][0].min(), stats[m][1].max()) for m in members)   # BF16, as the observer
            global_scale[n] = generate_gparam(-absmax.reshape(1), absmax.reshape(1))
    input_global = {}
    acts = scheme.input_activations
    if acts is not None and acts.dynamic == "local":                      # NVFP4: a static global scale for the input
        for n, a in ct_input_absmax(src, config, set(weights)).items():
            input_global[n] = generate_gparam(-a.reshape(1), a.reshape(1))
    for n, w in weights.items():
        scale, zero = calculate_qparams(stats[n][0], stats[n][1], args, global_scale=global_scale.get(n))
        state = {"weight": w, "weight_scale": scale, "weight_zero_point": zero}
        if n in global_scale:
            state["weight_global_scale"] = global_scale[n]
        if n in input_global:
            state["input_global_scale"] = input_global[n]
        state = compressor.compress(state, scheme)
        p = n[: -len(".weight")]
        for k, v in state.items():
            tensors[p + "." + k] = v
    save_torch_folder(out, tensors, config)
    qconfig = QuantizationConfig(config_groups={"group_0": scheme}, format=fmt.value,
                                 quantization_status=QuantizationStatus.COMPRESSED, ignore=["lm_head"])
    ModelCompressor(quantization_config=qconfig).update_config(out)


def rtn_gptq(w, group, bits):
    """GPTQ's own round-to-nearest quantizer (asymmetric, per group, computed in float32): the range always holds 0,
    scale = (max - min) / maxq, zero = round(-min / scale), q = clamp(round(w / scale) + zero, 0, maxq); scales kept fp16."""
    import numpy as np
    maxq = 2 ** bits - 1
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group, group)
    lo, hi = np.minimum(g.min(axis=2), 0), np.maximum(g.max(axis=2), 0)
    flat = (lo == 0) & (hi == 0)
    lo, hi = np.where(flat, -1, lo), np.where(flat, 1, hi)
    scale = ((hi - lo) / maxq).astype(np.float32)
    zero = np.round(-lo / scale)
    q = np.clip(np.round(g / scale[:, :, None]) + zero[:, :, None], 0, maxq).astype(np.int64).reshape(out_f, in_f)
    return q, scale.astype(np.float16), zero.astype(np.int64)        # q [out, in], scale/zero [out, groups]


def rtn_awq(w, group, bits=4):
    """AutoAWQ's pseudo_quantize_tensor (zero_point=True): scale = max(max - min, 1e-5) / 15, zero = clamp(-round(min / scale),
    0, 15), q = clamp(round(w / scale) + zero, 0, 15); scales kept fp16."""
    import numpy as np
    maxq = 2 ** bits - 1
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group, group)
    lo, hi = g.min(axis=2), g.max(axis=2)
    scale = (np.maximum(hi - lo, 1e-5) / maxq).astype(np.float32)
    zero = np.clip(-np.round(lo / scale), 0, maxq)
    q = np.clip(np.round(g / scale[:, :, None]) + zero[:, :, None], 0, maxq).astype(np.int64).reshape(out_f, in_f)
    return q, scale.astype(np.float16), zero.astype(np.int64)


def pack_bitstream(values, bits, axis):
    """Packs non-negative codes (< 2**bits) along axis into uint32 words as one continuous little-endian bit stream:
    code k occupies stream bits [bits*k, bits*k + bits), stream bit b is bit b % 32 of word b // 32."""
    import numpy as np
    v = np.moveaxis(np.asarray(values), axis, 0).astype(np.uint64)
    words = np.zeros(((v.shape[0] * bits + 31) // 32,) + v.shape[1:], dtype=np.uint64)
    for k in range(v.shape[0]):
        word, offset = divmod(k * bits, 32)
        words[word] |= (v[k] << np.uint64(offset)) & np.uint64(0xFFFFFFFF)
        if offset + bits > 32:
            words[word + 1] |= v[k] >> np.uint64(32 - offset)
    return np.ascontiguousarray(np.moveaxis(words.astype(np.uint32), 0, axis))


def gptq3(src, out, group=128):
    import numpy as np
    bits = 3
    tensors, config, linear = linear_weights(src)
    for name in linear:
        w = tensors.pop(name).astype(np.float32)
        q, scale, zero = rtn_gptq(w, group, bits)
        out_f, in_f = w.shape
        p = name[: -len(".weight")]
        tensors[p + ".qweight"] = pack_bitstream(q.T, bits, axis=0).view(np.int32)                  # [in*3/32, out]
        tensors[p + ".qzeros"] = pack_bitstream((zero.T - 1) & 7, bits, axis=1).view(np.int32)      # [groups, out*3/32]
        tensors[p + ".scales"] = np.ascontiguousarray(scale.T)                                      # fp16 [groups, out]
        tensors[p + ".g_idx"] = (np.arange(in_f) // group).astype(np.int32)
    qc = {"bits": bits, "group_size": group, "damp_percent": 0.01, "desc_act": False, "static_groups": False, "sym": False,
          "true_sequential": True, "model_name_or_path": None, "model_file_base_name": None, "quant_method": "gptq",
          "checkpoint_format": "gptq"}                    # AutoGPTQ 0.7.1's BaseQuantizeConfig.to_dict()
    config["quantization_config"] = qc
    from safetensors.numpy import save_file
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={
        "format": "pt", "auto_gptq_version": "0.7.1", "gptq_bits": str(bits), "gptq_group_size": str(group),
        "gptq_desc_act": "False", "gptq_damp_percent": "0.01", "gptq_checkpoint_format": "gptq", "gptq_quant_method": "gptq"})
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump(qc, open(os.path.join(out, "quantize_config.json"), "w"), indent=2)


def awq_zeros_width(in_f, group, pack=8):
    """AutoAWQ's calculate_zeros_width: ceil(groups / 8) words, rounded up to a multiple of 128 / group for group < 128."""
    multiple = {32: 4, 64: 2}.get(group, 1)
    words = -(-(in_f // group) // pack)
    return -(-words // multiple) * multiple


def awq_gemv(src, out, group=128):
    import numpy as np
    tensors, config, linear = linear_weights(src)
    for name in linear:
        w = tensors.pop(name).astype(np.float32)
        q, scale, zero = rtn_awq(w, group)
        out_f, in_f = w.shape
        width = awq_zeros_width(in_f, group)
        zeros = np.zeros((out_f, width * 8), dtype=np.int64)
        zeros[:, : in_f // group] = zero
        scales = np.zeros((out_f, width * 8), dtype=np.float16)
        scales[:, : in_f // group] = scale
        p = name[: -len(".weight")]
        tensors[p + ".qweight"] = pack_bitstream(q, 4, axis=1).view(np.int32)       # [out, in/8], nibble i = column 8c + i
        tensors[p + ".qzeros"] = pack_bitstream(zeros, 4, axis=1).view(np.int32)    # [out, width], zero z (no offset)
        tensors[p + ".scales"] = scales                                              # fp16 [out, width*8]
    config["quantization_config"] = {"quant_method": "awq", "zero_point": True, "group_size": group, "bits": 4, "version": "gemv",
                                     "modules_to_not_convert": None}                # AwqConfig.to_transformers_dict()
    save_folder(out, tensors, config)


def hqq(src, out, dtype="float32", nbits=4, group=64):
    """HQQ through the hqq library on the CPU: transformers 5.25 cannot quantize with HqqConfig any more (its loader raises
    "QuantizationMethod.HQQ is not available yet"), so hqq's own AutoHQQHFModel.quantize_model (HQQLinear, the settings
    HqqConfig(nbits=4, group_size=64) hands it) and hqq's own save_to_safetensors, with config.json's quantization_config
    the HqqConfig that transformers' save_pretrained writes. DTYPE is hqq's compute_dtype (scales, zeros and the layers
    left unquantized are cast to it; float32 keeps them as they are)."""
    import torch
    from transformers import AutoModelForCausalLM, HqqConfig
    from hqq.models.hf.base import AutoHQQHFModel
    compute = getattr(torch, dtype)
    q = HqqConfig(nbits=nbits, group_size=group)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    AutoHQQHFModel.quantize_model(model, quant_config=q.quant_config, compute_dtype=compute, device="cpu")
    model.config.quantization_config = q
    AutoHQQHFModel.save_to_safetensors(model, out, verbose=False)


def ct_dequantized(out, name):
    """The library's own decompression of one weight of a compressed-tensors folder, in float32: pack-quantized through
    the compressor's decompress with its scale upcast to F32 (its BF16 path rounds the products to BF16); nvfp4/mxfp4
    through the same helpers decompress calls (unpack_fp4_from_uint8, _decompress_scale, dequantize) with dtype F32."""
    import torch
    from safetensors.torch import load_file
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    group = next(iter(qc["config_groups"].values()))
    scheme = QuantizationScheme.model_validate(group)
    fmt = group.get("format") or qc["format"]
    compressor = BaseCompressor.get_value_from_registry(fmt)
    tensors = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(out, f)))
    p = name[: -len(".weight")]
    state = {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".")}
    if fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized"):
        from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
        from compressed_tensors.quantization.lifecycle.forward import dequantize
        packed = state["weight_packed"]
        m, n = packed.shape
        x = unpack_fp4_from_uint8(packed, m, n * 2, dtype=torch.float32)
        return dequantize(x_q=x, scale=compressor._decompress_scale(state["weight_scale"], torch.float32),
                          args=scheme.weights, global_scale=state.get("weight_global_scale"), dtype=torch.float32)
    state["weight_scale"] = state["weight_scale"].float()
    return compressor.decompress(state, scheme)["weight"].float()


def hqq_dequantized(out, name):
    """hqq's own dequantization of one weight: HQQLinear rebuilt from the saved state dict (load_state_dict), .dequantize()."""
    import torch
    from safetensors.torch import load_file
    from hqq.core.quantize import HQQLinear
    tensors = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(out, f)))
    p = name[: -len(".weight")]
    state = {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".")}
    layer = HQQLinear(None, quant_config=None, compute_dtype=torch.float32, device="cpu", initialize=False)
    layer.load_state_dict(state)
    return layer.dequantize().float()


def dequant_ref(kind, src, out, name, group=128):
    """The first 64 values of a weight as the format stands for it: for gptq/awq/gptq3/awq-gemv the round-to-nearest
    result computed before packing (from SRC), for ct the library's own decompress of OUT, for ct-asym/ct-nvfp4/ct-mxfp4
    the library's decompression of OUT in float32 (ct_dequantized), for hqq hqq's own dequantize of OUT in float32."""
    import numpy as np
    if kind in ("ct-asym", "ct-nvfp4", "ct-mxfp4"):
        print(json.dumps([float(x) for x in ct_dequantized(out, name).reshape(-1)[:64].tolist()]))
        return
    if kind == "hqq":
        print(json.dumps([float(x) for x in hqq_dequantized(out, name).reshape(-1)[:64].tolist()]))
        return
    if kind in ("gptq3", "awq-gemv"):
        tensors, _, _ = linear_weights(src)
        w = tensors[name].astype(np.float32)
        q, scale, zero = rtn_gptq(w, group, 3) if kind == "gptq3" else rtn_awq(w, group)
        out_f, in_f = q.shape
        w = (q.reshape(out_f, in_f // group, group) - zero[:, :, None]) * scale.astype(np.float32)[:, :, None]
        print(json.dumps([float(x) for x in w.reshape(-1)[:64]]))
        return
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
    elif cmd == "ct-asym":
        ct_quantize(sys.argv[2], sys.argv[3], "W4A16_ASYM")
    elif cmd == "ct-nvfp4":
        ct_quantize(sys.argv[2], sys.argv[3], "NVFP4A16" if sys.argv[4:5] == ["A16"] else "NVFP4")
    elif cmd == "ct-mxfp4":
        ct_quantize(sys.argv[2], sys.argv[3], "MXFP4A16" if sys.argv[4:5] == ["A16"] else "MXFP4")
    elif cmd == "gptq3":
        gptq3(sys.argv[2], sys.argv[3])
    elif cmd == "awq-gemv":
        awq_gemv(sys.argv[2], sys.argv[3])
    elif cmd == "hqq":
        hqq(*sys.argv[2:5])
    elif cmd == "dequant-ref":
        dequant_ref(*sys.argv[2:6])
    elif cmd == "dequant-mlx":
        dequant_mlx(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)
