"""Sentence embeddings of a BERT encoder for given token ids, by the independent numpy forward pass of
Benchmarks/fidelity.py (float64; written from the Hugging Face BERT definition). A test oracle only.

  python3 scripts/oracles/bert_embeddings.py MODEL.safetensors HEADS '[[101, ..., 102], ...]'

Prints a JSON list of embeddings (one list of floats per sentence).
"""
import json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Benchmarks"))
from fidelity import embed  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

def main():
    path, heads, ids = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    weights = load_file(path)
    print(json.dumps([[float(v) for v in embed(weights, sentence, heads=heads)] for sentence in ids]))

if __name__ == "__main__":
    main()
