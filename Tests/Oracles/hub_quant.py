"""Writes a model the way the hub's quantizers write it, with the real libraries (test oracle; never used by WeightMark).

  hub_quant.py mlx SRC OUT BITS GROUP     mlx_lm.convert -q (MLX affine), as mlx-community publishes models
  hub_quant.py bnb4 SRC OUT [nf4|fp4]     transformers + bitsandbytes load_in_4bit (double quantization), save_pretrained
  hub_quant.py bnb8 SRC OUT               transformers + bitsandbytes load_in_8bit (LLM.int8), save_pretrained
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


def mlx(src, out, bits, group):
    from mlx_lm import convert
    convert(with_tokenizer(src), mlx_path=out, quantize=True, q_bits=int(bits), q_group_size=int(group))


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


def dequant_mlx(folder, name):
    import mlx.core as mx
    config = json.load(open(os.path.join(folder, "config.json")))
    q = config.get("quantization") or config["quantization_config"]
    tensors = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            tensors.update(mx.load(os.path.join(folder, f)))
    prefix = name[: -len(".weight")]
    w = mx.dequantize(tensors[name], tensors[prefix + ".scales"], tensors[prefix + ".biases"], group_size=q["group_size"], bits=q["bits"])
    print(json.dumps([float(x) for x in w.astype(mx.float32).reshape(-1)[:64].tolist()]))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "mlx":
        mlx(*sys.argv[2:6])
    elif cmd == "bnb4":
        bnb(sys.argv[2], sys.argv[3], 4, sys.argv[4] if len(sys.argv) > 4 else "nf4")
    elif cmd == "bnb8":
        bnb(sys.argv[2], sys.argv[3], 8)
    elif cmd == "dequant-mlx":
        dequant_mlx(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)
