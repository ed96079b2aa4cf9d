#!/bin/sh
# Rebuilds the embedded default model and its LoRA demo from nothing (models/README.md):
#   1. sensor-analysis data (`mica data sensors`), Chinese and English;
#   2. a byte-level BPE vocabulary trained on it;
#   3. a small Mixtral-style MoE trained from scratch (`mica train`);
#   4. Q8_0 with the embeddings, the output matrix and the attention's V kept in F16;
#   5. the site-b LoRA adapter (`mica finetune`, r 16, alpha 32, dropout 0.1, 500 examples; on
#      attention, the experts' up and down, and the output matrix),
#      and `mica eval` before and after on 1000 held-out site-b examples.
# Usage: scripts/make-default-model.sh [BUILD_DIR]   (THREADS=2 by default; about 55 min on 2
# cores). Training is deterministic for a seed and any thread count.
set -eu
build=${1:-build}
mica="$build/mica"
threads=${THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=models
mkdir -p "$out"

$mica data sensors --n 80000 --seed 1 -o "$work/train.jsonl"
$mica data sensors --n 1000 --seed 2 -o "$work/val.jsonl"
$mica tokenizer train --vocab 1024 -o "$work/vocab.gguf" "$work/train.jsonl"
$mica train --arch llama \
    --dims n_ctx=192,n_embd=128,n_layer=4,n_head=8,n_head_kv=8,n_ff=256,n_expert=4,n_expert_used=2 \
    --tokenizer "$work/vocab.gguf" --data "$work/train.jsonl" --val "$work/val.jsonl" \
    --epochs 4 --batch 16 --lr 3e-3 --seed 1 -t "$threads" -o "$work/f32.gguf"
$mica quantize "$work/f32.gguf" "$out/mica-sensor-moe.gguf" q8_0 \
    --keep-f16 'token_embd.weight,output.weight,*.attn_v.weight' -t "$threads"
$mica eval -m "$out/mica-sensor-moe.gguf" --data "$work/val.jsonl" --metric label,numbers -t "$threads"

$mica data sensors --n 500 --seed 3 --task site-b -o "$work/site-b.jsonl"
$mica data sensors --n 1000 --seed 4 --task site-b -o "$work/site-b-test.jsonl"
$mica eval -m "$out/mica-sensor-moe.gguf" --data "$work/site-b-test.jsonl" --metric label -t "$threads"
$mica finetune -m "$out/mica-sensor-moe.gguf" --train "$work/site-b.jsonl" \
    --lora-r 16 --lora-alpha 32 --lora-dropout 0.1 --target q,k,v,o,up,down,output \
    --epochs 60 --batch 2 --lr 3e-3 --seed 1 -t "$threads" -o "$out/mica-sensor-site-b-lora.gguf"
$mica eval -m "$out/mica-sensor-moe.gguf" --lora "$out/mica-sensor-site-b-lora.gguf" \
    --data "$work/site-b-test.jsonl" --metric label -t "$threads"
