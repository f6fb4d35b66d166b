"""Why a target can be missed and what would close it; the report prints one under each MISSED target.

The breakdowns were measured while building the bench (135M base, 2-core EPYC, fp32);
they explain where the time goes, the run's own numbers say how much.

>>> "switch" in MISSED_NOTES
True
"""

from __future__ import annotations

_NOISE = ("Figures are medians, so a single stall is discarded, but a machine shared with other jobs slows "
          "every repeat; rerun on a quiet machine before reading a miss as a regression.")

MISSED_NOTES: dict[str, str] = {
    "switch": "`hub.switch` only records which slot un-routed rows use (well under a microsecond); a miss means "
              "per-call work (module traversal, allocation, lock contention) crept into it.",
    "load_first": "a 20 MB load is ~10 ms reading the file, ~5 ms deserialising and ~5 ms filling the per-layer "
                  "slots on a quiet CPU, plus ~11 ms of sha256 for a file changed (or never verified) since its "
                  "identity was recorded; a new process's first load also pays lazy imports and the registry's "
                  "first index connection. Worker threads of other torch work still spinning on the cores can "
                  f"double it (the bench pauses 1 s before each series). {_NOISE}",
    "load_last": f"see the 1st load: the same work, nothing scales with the number resident. {_NOISE}",
    "load_flat": "a load touches only its own slot; a later load slower than the first means something scans or "
                 f"re-allocates every resident slot. {_NOISE}",
    "forward_single": "r=16 LoRA on every linear layer adds ~3.6% to the base's multiply-adds (4.9M vs 134M per "
                      "token); on CPU the thin `x @ A.T` matmuls run at ~40% of the base GEMM's rate and each "
                      "`addmm_` re-reads and re-writes the layer's output (memory-bound), which puts the ratio at "
                      "1.04-1.07× on a quiet 2-core CPU. A fused kernel (base GEMM with the low-rank update in its "
                      "epilogue) would close it; merging the adapter into the shared base weights would not do, "
                      f"since concurrent calls use other adapters. {_NOISE}",
    "forward_mixed_8": "long rows gather each row's A and B into one batched matmul pair per layer; the gather "
                       "copies rows × adapter weights per layer, which a segmented kernel (S-LoRA / Punica style) "
                       f"reads in place. {_NOISE}",
    "generation": "decode steps are tiny, so per-step Python overhead (routing set-up, hooks) weighs more than "
                  "the matmuls; see the decode table for the per-token cost.",
    "decode_mixed_3": "a decode step multiplies one token per row, so it reads every weight once per step: a mixed "
                      "step must read each present adapter's A and B (8 × 18.7 MiB beside the 513 MiB base for 8 "
                      "adapters on the default base), which no kernel avoids. Each LoRA layer runs one matmul pair "
                      "over the present adapters' stacked pairs (bmm over equal runs of rows, else side by side "
                      "with a row mask, which multiplies every row by every adapter); a miss means the stacks are "
                      "rebuilt per step (more than two sets of adapters decoding at once) or rows have a LoRA bias "
                      f"or DoRA (those keep one matmul pair per adapter). {_NOISE}",
    "decode_mixed_8": f"see the 3-adapter decode target. {_NOISE}",
    "prefill_mixed_8": "rows of 16+ tokens gather each row's A and B and run one bmm pair per layer; a miss means "
                       "they fell back to one matmul pair per adapter (mixed ranks or targets, bias, DoRA) or took "
                       f"the decode path's stacked pairs, whose work grows with the number of adapters. {_NOISE}",
    "training_speed": "the gain comes from computing the LM head only at supervised positions and from length-"
                      "grouped batches without padding; data with long answers or uniform lengths leaves less to "
                      f"save. {_NOISE}",
    "training_memory": "on CPU the peak is the process's peak RSS, which includes the base model and the Python "
                       "heap; on CUDA it is the allocator's peak during the timed steps.",
    "time_to_accuracy": "the time is training steps only, so it follows the tokens/s ratio unless the two loops "
                        "learn at different rates per step: ours groups batches by length (PEFT's Trainer shuffles), "
                        "so its steps see other batches, and an evaluation falls only every few steps, so a run "
                        "can cross the threshold one evaluation later. Evaluating more often "
                        "(`accuracy_eval_every`) narrows that; a miss where ours never reached the threshold means "
                        f"the recipe itself regressed (see its best accuracy). {_NOISE}",
    "concurrency": "after, each training holds a seat and takes its share of the cores; before, both run torch's "
                   "default (every core), so twice as many threads as cores wait on each other at every matmul. "
                   "Check the threads each process used: fewer than its share means the 1-minute load average "
                   "still counted other work when it chose (the bench waits up to `concurrency_settle_s` for it to "
                   "fall; see the leg's load average) or other adapterhub processes held seats (`sharers`). "
                   f"{_NOISE}",
    "memory_resident": "per-slot padding or a second copy of the weights (e.g. a dtype-cast one kept beside the "
                       "original) inflates resident bytes.",
    "nf4_footprint": "bitsandbytes leaves embeddings, norms and the LM head unquantised; in a small model with a "
                     "49k vocabulary they are a large share of the weights, so the ratio is worse than for 7B models.",
}
