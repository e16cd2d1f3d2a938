"""Fine-tunes MiniLM for real (masked-language modelling on Python standard-library text, torch on the CPU) — the
[lineage] benchmark's derivative: `minilm_finetune.py MINILM_FOLDER OUT_FOLDER [STEPS] [LR]` (defaults 1000, 5e-5).

The MLM head is the word embedding, tied (logits = h·Eᵀ + b), as BERT's is; only the encoder's weights are saved,
in the original's names and layout (model.safetensors + the original's config and tokenizer files).
"""
import glob
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer


def main(src, out, steps=1000, lr=5e-5):
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src, torch_dtype=torch.float32)
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    text = "".join(open(f, encoding="utf-8", errors="ignore").read() for f in files[:200])
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    seq, batch = 64, 8
    bias = torch.nn.Parameter(torch.zeros(model.config.vocab_size))
    opt = torch.optim.AdamW(list(model.parameters()) + [bias], lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    start = time.time()
    model.train()
    for step in range(steps):
        offsets = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        x = torch.stack([ids[o:o + seq] for o in offsets])
        labels = x.clone()
        mask = torch.rand(x.shape, generator=gen) < 0.15
        x = x.masked_fill(mask, tok.mask_token_id)
        labels[~mask] = -100
        h = model(input_ids=x).last_hidden_state
        logits = h @ model.embeddings.word_embeddings.weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(src):
        if name != "model.safetensors" and os.path.isfile(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), out)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]) if len(a) > 2 else 1000, float(a[3]) if len(a) > 3 else 5e-5)
