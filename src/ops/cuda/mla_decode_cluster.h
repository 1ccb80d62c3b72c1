#pragma once
// The cluster MLA decode kernel, bf16 latent KV at (L, R) = (512, 64), any head count in groups
// of 16 (internal to ops/cuda/, chosen by mla_decode_bf16.cu; see mla_decode_bf16.h for the
// contract). Each (sequence, 16-head group) runs on thread-block clusters of up to 16 CTAs: the
// CTAs stream interleaved 32-token tiles of the sequence, then merge their (max, sum, o) partials
// through distributed shared memory and write out and lse. One launch, no grid barrier; with one
// cluster a sequence the partials never leave the chip.
#include <cuda_runtime.h>

#include <cstddef>

#include "ops/cuda/mla_decode_bf16_args.h"

namespace helix::cuda::mla_cluster {

constexpr int kHeadGroup = 16;
constexpr int kMaxCluster = 16;  // non-portable on Hopper (8 portable)
// At batch 1 a sequence may take up to kMaxClusters clusters (the tiles interleaved over all their
// CTAs): each cluster merges in DSMEM, writes its merged rows to the workspace, and the last
// cluster to arrive (an atomic counter per row set, no waiting) merges those.
constexpr int kMaxClusters = 8;

// Whether the kernel takes these sizes: L 512, R 64, bf16 KV.
bool eligible(int kv_lora_rank, int rope_dim, bool fp8);
// Raises the kernel's shared-memory limit and allows non-portable cluster sizes; reports its
// dynamic shared memory and the largest cluster (16, 8, 4, 2 or 1 CTAs) of which at least one
// fits on this device.
cudaError_t prepare(size_t* smem, int* max_cluster);
// Workspace of the several-cluster launches (partials, then the counters, which must be zero
// before the first launch; every launch leaves them zero).
size_t workspace_bytes(int heads);
size_t counters_offset(int heads);
// Grid (cluster x clusters, groups, batch) with clusters of `cluster` CTAs along x; clusters > 1
// only at batch 1, with `workspace` (workspace_bytes(heads), counters zero).
cudaError_t launch(const mla_bf16::Args& a, int cluster, int clusters, void* workspace, size_t smem,
                   cudaStream_t stream);

}  // namespace helix::cuda::mla_cluster
