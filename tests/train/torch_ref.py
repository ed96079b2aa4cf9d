#!/usr/bin/env python3
"""PyTorch reference for tests/train/test_torch_ref.c: the loss and every parameter's
gradient of a small llama model (dense or Mixtral-style MoE) that mica wrote as an F32 GGUF,
on a batch that the test wrote, computed by autograd from the formulas llama.cpp implements
(RMSNorm, RoPE in its normal mode on adjacent pairs, causal grouped-query attention, SwiGLU,
softmax top-k routing renormalised by the chosen weights' sum).

usage: torch_ref.py MODEL.gguf BATCH.bin OUT.bin [--bench STEPS THREADS]
BATCH.bin: int32 n_seq, n_tok, then n_seq*n_tok token ids and as many targets (-1: none).
OUT.bin: float64 loss, then float32 gradients of the tensors in file order.
--bench: prints training tokens/s (forward, backward and an AdamW step) instead."""
import struct
import sys
import time

import torch

VT_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
VT_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.o:self.o + n].decode("utf-8", "replace")
        self.o += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        return self.take(VT_FMT[t])


def read_gguf(path):
    data = open(path, "rb").read()
    r = Reader(data)
    assert data[:4] == b"GGUF", path
    r.o = 4
    r.take("<I")
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    kv = {}
    for _ in range(n_kv):
        k = r.string()
        kv[k] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_t):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        t, off = r.take("<I"), r.take("<Q")
        assert t == 0, name + ": only F32 tensors"
        infos.append((name, ne, off))
    align = kv.get("general.alignment", 32)
    base = (r.o + align - 1) // align * align
    tensors = {}
    for name, ne, off in infos:
        n = 1
        for x in ne:
            n *= x
        a = torch.frombuffer(bytearray(data[base + off:base + off + 4 * n]), dtype=torch.float32)
        tensors[name] = a.reshape(list(reversed(ne))).clone().requires_grad_(True)
    return kv, [i[0] for i in infos], tensors


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, base, n_rot):
    """x: (n_seq, n_tok, heads, hd); llama.cpp's normal mode: pairs (2i, 2i+1)."""
    n_tok = x.shape[1]
    i = torch.arange(n_rot // 2, dtype=torch.float64)
    theta = torch.arange(n_tok, dtype=torch.float64)[:, None] * base ** (-2.0 * i / n_rot)
    cos, sin = theta.cos().float()[None, :, None, :], theta.sin().float()[None, :, None, :]
    x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return torch.cat((out, x[..., n_rot:]), dim=-1)


def forward(kv, T, tokens, targets):
    a = kv["general.architecture"]
    L, H, Hkv = kv[a + ".block_count"], kv[a + ".attention.head_count"], kv[a + ".attention.head_count_kv"]
    eps, base = kv[a + ".attention.layer_norm_rms_epsilon"], kv[a + ".rope.freq_base"]
    n_exp, k_used = kv.get(a + ".expert_count", 0), kv.get(a + ".expert_used_count", 0)
    n_seq, n_tok = tokens.shape
    x = T["token_embd.weight"][tokens]
    E = x.shape[-1]
    hd = E // H
    n_rot = kv.get(a + ".rope.dimension_count", hd)
    mask = torch.full((n_tok, n_tok), float("-inf")).triu(1)
    for il in range(L):
        p = "blk.%d." % il
        h = rms_norm(x, T[p + "attn_norm.weight"], eps)
        q = (h @ T[p + "attn_q.weight"].T).view(n_seq, n_tok, H, hd)
        k = (h @ T[p + "attn_k.weight"].T).view(n_seq, n_tok, Hkv, hd)
        v = (h @ T[p + "attn_v.weight"].T).view(n_seq, n_tok, Hkv, hd)
        q, k = rope(q, base, n_rot), rope(k, base, n_rot)
        k = k.repeat_interleave(H // Hkv, dim=2)
        v = v.repeat_interleave(H // Hkv, dim=2)
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / hd ** 0.5 + mask
        o = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v).reshape(n_seq, n_tok, E)
        x = x + o @ T[p + "attn_output.weight"].T
        h = rms_norm(x, T[p + "ffn_norm.weight"], eps)
        if n_exp:
            probs = (h @ T[p + "ffn_gate_inp.weight"].T).softmax(-1)
            w, sel = probs.topk(k_used, dim=-1)
            w = w / w.sum(-1, keepdim=True).clamp(min=6.103515625e-5)
            y = torch.zeros_like(h)
            for j in range(k_used):
                for e in range(n_exp):
                    m = (sel[..., j] == e).unsqueeze(-1).float()
                    g = h @ T[p + "ffn_gate_exps.weight"][e].T
                    u = h @ T[p + "ffn_up_exps.weight"][e].T
                    d = (torch.nn.functional.silu(g) * u) @ T[p + "ffn_down_exps.weight"][e].T
                    y = y + m * w[..., j:j + 1] * d
            x = x + y
        else:
            g = h @ T[p + "ffn_gate.weight"].T
            u = h @ T[p + "ffn_up.weight"].T
            x = x + (torch.nn.functional.silu(g) * u) @ T[p + "ffn_down.weight"].T
    x = rms_norm(x, T["output_norm.weight"], eps)
    out = T.get("output.weight", T["token_embd.weight"])
    logits = (x @ out.T).reshape(n_seq * n_tok, -1)
    return torch.nn.functional.cross_entropy(logits, targets.reshape(-1).long(), ignore_index=-1)


def main():
    kv, names, T = read_gguf(sys.argv[1])
    b = open(sys.argv[2], "rb").read()
    n_seq, n_tok = struct.unpack_from("<ii", b)
    ids = torch.tensor(struct.unpack_from("<%di" % (2 * n_seq * n_tok), b, 8)).view(2, n_seq, n_tok)
    tokens, targets = ids[0], ids[1]
    if len(sys.argv) > 4 and sys.argv[4] == "--bench":
        steps, threads = int(sys.argv[5]), int(sys.argv[6])
        torch.set_num_threads(threads)
        opt = torch.optim.AdamW(T.values(), lr=1e-3)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            forward(kv, T, tokens, targets).backward()
            opt.step()
        dt = time.perf_counter() - t0
        print("%.1f" % (steps * n_seq * n_tok / dt))
        return
    loss = forward(kv, T, tokens, targets)
    loss.backward()
    with open(sys.argv[3], "wb") as f:
        f.write(struct.pack("<d", loss.item()))
        for n in names:
            f.write(T[n].grad.contiguous().numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main()
