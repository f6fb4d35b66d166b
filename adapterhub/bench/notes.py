"""Why a target can be missed and what would close it, shown under the report's table for each MISSED target.

>>> "switch" in MISSED_NOTES
True
"""

from __future__ import annotations

MISSED_NOTES: dict[str, str] = {
    "switch": "a switch should only rebind which slot un-routed rows use; a miss means per-call work "
              "(locks, module traversal or allocation) crept into `hub.switch`.",
    "load_first": "load time is reading and hashing the files plus copying tensors into slots; on a shared "
                  "2-core CPU the sha256 pass alone is a few tens of ms per 20 MB.",
    "load_last": "see the 1st load; a gap between 1st and last points at per-resident work during load.",
    "load_flat": "a load should touch only its own slot; growth with the number resident means something "
                 "scans or re-allocates all slots.",
    "forward_single": "on CPU the LoRA delta of r=16 on every linear layer is ~5% of the base's FLOPs, "
                      "so ≤1.05× leaves almost no room for overhead; merged weights would close it for one adapter.",
    "forward_mixed_8": "mixed rows each pay their own adapter's delta; gathering the rows per adapter adds copies "
                       "that a fused segmented kernel (S-LoRA/Punica style) would avoid.",
    "generation": "decode steps are tiny, so per-step Python overhead dominates; see the forward ratios.",
    "training_speed": "most of the gain comes from not computing the LM head at unsupervised positions and not "
                      "padding; short classification rows leave less to save.",
    "training_memory": "peak memory includes the base load; compare the peak above the loaded model.",
    "memory_resident": "per-slot padding or keeping a second copy (e.g. a dtype-cast one) inflates resident bytes.",
    "nf4_footprint": "embeddings and the LM head stay unquantised under bitsandbytes; for a small model they are a "
                     "large share of the weights.",
}
