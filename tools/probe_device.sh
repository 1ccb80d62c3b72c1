#!/usr/bin/env bash
# One-off probe of the GPU machine: versions and the transformers DeepSeek-V3 reference source.
set -x
mkdir -p /tmp/p
TF=$(python3 -c 'import transformers,os;print(os.path.dirname(transformers.__file__))')
cp $TF/models/deepseek_v3/*.py /tmp/p/ 2>/dev/null
cp $TF/modeling_rope_utils.py $TF/conversion_mapping.py /tmp/p/ 2>/dev/null
cp $TF/integrations/moe.py /tmp/p/ 2>/dev/null
cp $TF/core_model_loading.py /tmp/p/ 2>/dev/null
cd /tmp/p && python3 - <<'PY' > /tmp/p/tiny.txt 2>&1
import torch, json, os
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
cfg = DeepseekV3Config(vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
  num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16,
  qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=128)
m = DeepseekV3ForCausalLM(cfg)
m.save_pretrained('/tmp/p/tiny')
print(open('/tmp/p/tiny/config.json').read())
from safetensors import safe_open
with safe_open('/tmp/p/tiny/model.safetensors','pt') as f:
  for k in f.keys(): print(k, f.get_slice(k).get_shape(), f.get_slice(k).get_dtype())
print({k: v.shape for k,v in m.state_dict().items()})
PY
cd /tmp && tar czf $OUT/probe.tgz p
nvidia-smi; nvcc --version; cmake --version; mpirun --version; ls /usr/include | grep -i -E "nlohmann|CLI|spdlog|fmt|gtest|benchmark|nccl|openblas|cblas|httplib"; ls /usr/lib/x86_64-linux-gnu | grep -i -E "nccl|openblas|mpi" | head; dpkg -l | grep -i -E "nccl|openblas|mpi-dev|nlohmann|cli11" ; cat /etc/os-release | head -3; nproc
