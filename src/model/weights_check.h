#pragma once
// Checks of a checkpoint against its config.json that run before any weight is loaded, and the
// optional full scan of the weights for NaN/Inf (--check-weights).
#include "model/config.h"
#include "model/safetensors.h"

namespace helix {

// Cheap: compares the shapes of a few tensors (embedding, first attention, last layer, first
// router) with the config, so that a config with absurd dimensions fails here with the tensor's
// real shape instead of sizing buffers from the config.
void weights_check_config(const ModelConfig& mc, const WeightStore& ws);

// Reads every floating-point tensor (as fp32, FP8 block scales applied) and fails naming the
// first one that holds a NaN or Inf.
void weights_check_finite(const WeightStore& ws);

}  // namespace helix
