#!/usr/bin/env python3
"""How far transformers' own bfloat16 run of a fixture lands from its float32 run (logits rel
L2): the floor a bf16 engine can be held to on these tiny random models.
  python3 bench/hf_bf16_drift.py tests/fixtures/fp32_qnull [...]"""
import json
import os
import sys

import torch
from transformers import DeepseekV3ForCausalLM

for path in sys.argv[1:]:
    ref = json.load(open(os.path.join(path, "ref.json")))
    m32 = DeepseekV3ForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                attn_implementation="eager").eval().cuda()
    m16 = DeepseekV3ForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                attn_implementation="eager").eval().cuda()
    errs = []
    for p in ref["prompts"]:
        ids = torch.tensor([p]).cuda()
        with torch.no_grad():
            a = m32(ids).logits.float()
            b = m16(ids).logits.float()
        errs.append(((a - b).norm() / a.norm()).item())
    print(os.path.basename(path), "transformers bf16 vs fp32 rel_l2:",
          " ".join(f"{e:.3g}" for e in errs))
