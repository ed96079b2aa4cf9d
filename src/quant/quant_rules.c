/*
 * quant_rules.c - which type each tensor of a model becomes: the target types by name, the
 * rules of llama-quantize's default mix (llama_tensor_get_type and tensor_type_fallback in
 * llama.cpp's src/llama-quant.cpp, restated here), --keep-f16 glob patterns, the order and
 * dimensions llama-quantize writes, and the size budget that keeps sensitive tensors F16.
 *
 * Does not own: measuring sensitivity (quant_sens.c) or converting and writing (quant_write.c).
 * Called by: quant_model_file, `mica quantize`, tests.
 */
#include "quant/quant.h"

#include "tensor/tensor.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- types --------------------------------------------------------------------------- */

#define QUANT_FTYPE_Q4_K_M 15 /* LLAMA_FTYPE_MOSTLY_Q4_K_M */

/* Every type id the tensor module can convert rows of floats to is a target. */
static bool quant_type_writable(uint32_t t)
{
    return gguf_ttype_layout(t, NULL, NULL) && tensor_type_supported(t);
}

mica_status quant_type_from_name(const char *name, uint32_t *type, mica_err *err)
{
    for (uint32_t t = 0; t < GGUF_T_COUNT; t++) {
        if (quant_type_writable(t) && !strcasecmp(gguf_ttype_name(t), name)) {
            *type = t;
            return MICA_OK;
        }
    }
    char names[256];
    quant_type_names(names, sizeof names);
    return core_fail(err, MICA_EINVAL, "unknown type '%s' (types: %s)", name, names);
}

void quant_type_names(char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (uint32_t t = 0; t < GGUF_T_COUNT && o < cap; t++) {
        if (!quant_type_writable(t)) continue;
        char lower[GGUF_MAX_NAME];
        snprintf(lower, sizeof lower, "%s", gguf_ttype_name(t));
        for (char *c = lower; *c; c++) *c = (char)tolower((unsigned char)*c);
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", lower);
    }
}

int32_t quant_file_type(uint32_t type)
{
    switch (type) {
    case GGUF_T_F32:
        return 0; /* LLAMA_FTYPE_ALL_F32 */
    case GGUF_T_F16:
        return 1; /* LLAMA_FTYPE_MOSTLY_F16 */
    case GGUF_T_Q4_0:
        return 2; /* LLAMA_FTYPE_MOSTLY_Q4_0 */
    case GGUF_T_Q8_0:
        return 7; /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    case GGUF_T_Q4_K:
        return QUANT_FTYPE_Q4_K_M; /* q4_k follows the Q4_K_M mix */
    case GGUF_T_Q6_K:
        return 18; /* LLAMA_FTYPE_MOSTLY_Q6_K */
    case GGUF_T_BF16:
        return 32; /* LLAMA_FTYPE_MOSTLY_BF16 */
    default:
        return -1;
    }
}

bool quant_type_is_float(uint32_t type)
{
    return type == GGUF_T_F32 || type == GGUF_T_F16 || type == GGUF_T_BF16;
}

static uint32_t quant_block(uint32_t t)
{
    uint32_t bs = 1;
    gguf_ttype_layout(t, &bs, NULL);
    return bs;
}

static double quant_bpw(uint32_t t)
{
    uint32_t bs = 1, ts = 0;
    if (!gguf_ttype_layout(t, &bs, &ts)) return 0;
    return 8.0 * ts / bs;
}

/* ---- patterns ------------------------------------------------------------------------ */

bool quant_glob_match(const char *pattern, const char *name)
{
    /* Iterative matcher: on a mismatch after a '*', let that star eat one more character. */
    const char *star = NULL, *resume = NULL;
    while (*name) {
        if (*pattern == '*') {
            star = pattern++;
            resume = name;
        } else if (*pattern == '?' || *pattern == *name) {
            pattern++;
            name++;
        } else if (star) {
            pattern = star + 1;
            name = ++resume;
        } else {
            return false;
        }
    }
    while (*pattern == '*') pattern++;
    return *pattern == '\0';
}

bool quant_patterns_match(const char *list, const char *name)
{
    if (!list) return false;
    char item[256];
    while (*list) {
        size_t n = strcspn(list, ",");
        if (n > 0 && n < sizeof item) {
            memcpy(item, list, n);
            item[n] = '\0';
            if (quant_glob_match(item, name)) return true;
        }
        list += n;
        if (*list == ',') list++;
    }
    return false;
}

/* ---- llama-quantize's rules ---------------------------------------------------------- */

typedef enum quant_cat {
    QCAT_OTHER,
    QCAT_TOKEN_EMBD,
    QCAT_OUTPUT,
    QCAT_ATTN_Q,
    QCAT_ATTN_K,
    QCAT_ATTN_V, /* attn_v, attn_qkv, attn_kv_b: llama.cpp treats them alike */
    QCAT_ATTN_OUTPUT,
    QCAT_FFN_UP,
    QCAT_FFN_GATE,
    QCAT_FFN_DOWN,
} quant_cat;

/* tensor_get_category: exact names first, then substrings in llama.cpp's order. */
static quant_cat quant_category(const char *name)
{
    if (!strcmp(name, "output.weight")) return QCAT_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight"))
        return QCAT_TOKEN_EMBD;
    static const struct {
        const char *sub;
        quant_cat cat;
    } subs[] = {
        {"attn_qkv.weight", QCAT_ATTN_V}, {"attn_kv_b.weight", QCAT_ATTN_V},
        {"attn_v.weight", QCAT_ATTN_V},   {"attn_k.weight", QCAT_ATTN_K},
        {"attn_q.weight", QCAT_ATTN_Q},   {"attn_output.weight", QCAT_ATTN_OUTPUT},
        {"ffn_up", QCAT_FFN_UP},          {"ffn_gate", QCAT_FFN_GATE},
        {"ffn_down", QCAT_FFN_DOWN},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strstr(name, subs[i].sub)) return subs[i].cat;
    return QCAT_OTHER;
}

/* ggml_n_dims: the dimensions that count, trailing 1s dropped (at least 1). */
static uint32_t quant_n_dims(const int64_t *ne)
{
    for (int i = GGUF_MAX_DIMS - 1; i >= 1; i--)
        if (ne[i] > 1) return (uint32_t)i + 1;
    return 1;
}

/* tensor_allows_quantization, for the tensors of the architectures mica runs: matrices
 * whose name ends in "weight", except norms, router gates and position/type embeddings. */
static bool quant_allowed(const char *name, const int64_t *ne)
{
    if (quant_n_dims(ne) < 2) return false;
    const size_t len = strlen(name);
    if (len < 6 || strcmp(name + len - 6, "weight")) return false;
    static const char *const never[] = {
        "_norm.weight",       "ffn_gate_inp.weight", "position_embd.weight",
        "token_types.weight", "ssm_conv1d",          "attn_rel_b.weight",
    };
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (strstr(name, never[i])) return false;
    return true;
}

/* The state llama-quantize keeps while it walks the tensors in order. */
typedef struct quant_rules {
    uint32_t target;
    int32_t ftype;
    bool mix;     /* llama.cpp has a mix for this target (a block-quantized llama ftype) */
    bool tied;    /* no output.weight: the embedding is the output matrix */
    bool is_70b;  /* LLM_TYPE_70B: llama with 80 layers and grouped KV heads */
    int n_expert; /* routed experts per layer */
    int n_layer;
    int n_attn_v, i_attn_v; /* attention-value tensors: count and index of the next */
    int i_ffn_down;
} quant_rules;

/* use_more_bits: the first and last eighth of the layers and every third in between. */
static bool quant_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Layer of "blk.N....", -1 for other names (the loader's weight_name_comparer). */
static int quant_layer(const char *name)
{
    if (strncmp(name, "blk.", 4) || !isdigit((unsigned char)name[4])) return -1;
    return (int)strtol(name + 4, NULL, 10);
}

static uint32_t rules_attn_v(quant_rules *r, uint32_t t)
{
    if (r->ftype == QUANT_FTYPE_Q4_K_M && quant_more_bits(r->i_attn_v, r->n_attn_v))
        t = GGUF_T_Q6_K;
    if (r->is_70b && r->ftype == QUANT_FTYPE_Q4_K_M && t == GGUF_T_Q4_K) t = GGUF_T_Q5_K;
    if (r->n_expert == 8) t = GGUF_T_Q8_0; /* "trades just ~128MB" */
    r->i_attn_v++;
    return t;
}

static uint32_t rules_ffn_down(quant_rules *r, const char *name, uint32_t t)
{
    int il = r->i_ffn_down, nl = r->n_layer;
    if (r->n_expert > 1) il = quant_layer(name); /* experts are not in layer order */
    if (r->ftype == QUANT_FTYPE_Q4_K_M && il >= 0 && quant_more_bits(il, nl)) t = GGUF_T_Q6_K;
    r->i_ffn_down++;
    return t;
}

/* llama_tensor_get_type_impl for the targets mica writes: the type a quantizable tensor
 * wants before any fallback. */
static uint32_t rules_pick(quant_rules *r, const char *name, int64_t ne0, quant_why *why)
{
    const quant_cat cat = quant_category(name);
    uint32_t t = r->target;
    *why = QUANT_WHY_DEFAULT;
    if (quant_type_is_float(t)) return t; /* llama-quantize mixes quantized targets only */
    if (cat == QCAT_OUTPUT || (r->tied && cat == QCAT_TOKEN_EMBD)) {
        /* "the higher of the chosen type and Q6_K", Q8_0 when rows do not fit the block */
        if (ne0 % quant_block(t))
            t = GGUF_T_Q8_0;
        else if (quant_bpw(t) < quant_bpw(GGUF_T_Q6_K))
            t = GGUF_T_Q6_K;
        if (t != r->target) *why = QUANT_WHY_OUTPUT;
        return t;
    }
    if (!r->mix) return t;
    switch (cat) {
    case QCAT_ATTN_V:
        t = rules_attn_v(r, t);
        break;
    case QCAT_ATTN_K:
        if (r->n_expert == 8) t = GGUF_T_Q8_0;
        break;
    case QCAT_FFN_DOWN:
        t = rules_ffn_down(r, name, t);
        break;
    case QCAT_ATTN_OUTPUT:
        if (r->n_expert == 8 && r->ftype == QUANT_FTYPE_Q4_K_M) t = GGUF_T_Q5_K;
        break;
    default:
        break;
    }
    if (t != r->target) *why = QUANT_WHY_MIX;
    return t;
}

/* tensor_type_fallback's table; GGUF_T_COUNT where llama.cpp has none (it stops there). */
static uint32_t quant_llama_fallback(uint32_t t)
{
    switch (t) {
    case GGUF_T_Q2_K:
    case GGUF_T_Q3_K:
        return GGUF_T_Q4_0;
    case GGUF_T_Q4_K:
        return GGUF_T_Q5_0;
    case GGUF_T_Q5_K:
        return GGUF_T_Q5_1;
    case GGUF_T_Q6_K:
        return GGUF_T_Q8_0;
    default:
        return GGUF_T_COUNT;
    }
}

/* A type llama.cpp chose that mica cannot write (Q5_0, Q5_K, ...) becomes the llama.cpp type
 * with the fewest bits per weight that is at least as many, is writable, and whose block
 * divides the rows; F16 when none is. */
static uint32_t quant_substitute(uint32_t t, int64_t ne0)
{
    if (quant_type_writable(t) && ne0 % quant_block(t) == 0) return t;
    static const uint32_t ladder[] = {GGUF_T_Q4_0, GGUF_T_Q4_K, GGUF_T_Q5_0, GGUF_T_Q5_K,
                                      GGUF_T_Q5_1, GGUF_T_Q6_K, GGUF_T_Q8_0, GGUF_T_F16};
    uint32_t best = GGUF_T_F16;
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++) {
        const uint32_t c = ladder[i];
        if (!quant_type_writable(c) || ne0 % quant_block(c) || quant_bpw(c) < quant_bpw(t))
            continue;
        if (quant_bpw(c) < quant_bpw(best)) best = c;
    }
    return best;
}

/* The type of a quantizable tensor: the rules, then the fallback for rows that are not a
 * multiple of the block (F16 where llama.cpp has no fallback, as its last resort). */
static void quant_choose(quant_rules *r, quant_tensor *qt, int *n_fallback)
{
    qt->wanted = rules_pick(r, qt->name, qt->ne[0], &qt->why);
    uint32_t t = qt->wanted;
    if (qt->ne[0] % quant_block(t)) {
        t = quant_llama_fallback(t);
        if (t == GGUF_T_COUNT || qt->ne[0] % quant_block(t)) t = GGUF_T_F16;
        qt->why = QUANT_WHY_FALLBACK;
        ++*n_fallback;
    }
    qt->type = quant_substitute(t, qt->ne[0]);
}

/* ---- the plan ------------------------------------------------------------------------ */

const char *quant_why_str(quant_why w)
{
    static const char *const s[] = {"copy",     "default",  "output", "mix",
                                    "fallback", "keep-f16", "budget"};
    return (unsigned)w < sizeof s / sizeof s[0] ? s[w] : "?";
}

void quant_plan_free(quant_plan *p)
{
    if (!p) return;
    free(p->t);
    memset(p, 0, sizeof *p);
}

static uint64_t quant_pad32(uint64_t n)
{
    return (n + 31) / 32 * 32;
}

uint64_t quant_plan_file_bytes(const quant_plan *p)
{
    uint64_t n = p->meta_bytes;
    for (size_t i = 0; i < p->n; i++) n += quant_pad32(p->t[i].bytes);
    return n;
}

static uint64_t quant_nelements(const int64_t *ne)
{
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) n *= (uint64_t)ne[d];
    return n;
}

static uint64_t quant_type_bytes(uint32_t type, const int64_t *ne)
{
    return tensor_row_size(type, ne[0]) * (quant_nelements(ne) / (uint64_t)ne[0]);
}

bool quant_plan_is_candidate(const quant_plan *p, size_t i)
{
    const quant_tensor *t = &p->t[i];
    return t->why != QUANT_WHY_COPY && t->why != QUANT_WHY_KEEP && t->type != t->src_type &&
           !quant_type_is_float(t->type);
}

uint64_t quant_plan_f16_extra(const quant_plan *p, size_t i)
{
    const quant_tensor *t = &p->t[i];
    const uint64_t f16 = quant_pad32(quant_type_bytes(GGUF_T_F16, t->ne));
    const uint64_t now = quant_pad32(t->bytes);
    return f16 > now ? f16 - now : 0;
}

/* llama-quantize's order: tensors outside blocks first, then by layer; by name within. */
static int quant_order(const void *a, const void *b)
{
    const quant_tensor *x = a, *y = b;
    const int lx = quant_layer(x->name), ly = quant_layer(y->name);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Reads what the rules need from the metadata: experts, layers, heads. */
static void quant_rules_init(quant_rules *r, const gguf_file *f, uint32_t target,
                             const quant_tensor *t, size_t n)
{
    memset(r, 0, sizeof *r);
    r->target = target;
    r->ftype = quant_file_type(target);
    r->mix = r->ftype >= 0 && quant_block(target) > 1;
    r->tied = true;
    for (size_t i = 0; i < n; i++) {
        if (quant_category(t[i].name) == QCAT_OUTPUT) r->tied = false;
        if (quant_category(t[i].name) == QCAT_ATTN_V) r->n_attn_v++;
        if (quant_layer(t[i].name) + 1 > r->n_layer) r->n_layer = quant_layer(t[i].name) + 1;
    }
    gguf_str arch = {0};
    if (gguf_get_str_opt(f, "general.architecture", &arch, NULL) || !arch.ptr) return;
    char key[128];
    int64_t v = 0, heads = 0, heads_kv = 0;
    snprintf(key, sizeof key, "%.*s.expert_count", (int)(arch.len < 64 ? arch.len : 64), arch.ptr);
    if (!gguf_get_int_opt(f, key, &v, NULL)) r->n_expert = (int)v;
    snprintf(key, sizeof key, "%.*s.block_count", (int)(arch.len < 64 ? arch.len : 64), arch.ptr);
    v = 0;
    if (!gguf_get_int_opt(f, key, &v, NULL) && v > 0) r->n_layer = (int)v;
    snprintf(key, sizeof key, "%.*s.attention.head_count", (int)(arch.len < 64 ? arch.len : 64),
             arch.ptr);
    gguf_get_int_opt(f, key, &heads, NULL);
    heads_kv = heads;
    snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)(arch.len < 64 ? arch.len : 64),
             arch.ptr);
    gguf_get_int_opt(f, key, &heads_kv, NULL);
    r->is_70b = gguf_str_eq(arch, "llama") && r->n_layer == 80 && heads != heads_kv;
}

static mica_status quant_plan_tensor(const gguf_file *f, uint64_t i, quant_tensor *qt,
                                     mica_err *err)
{
    const gguf_tensor *s = &f->tensors[i];
    memset(qt, 0, sizeof *qt);
    snprintf(qt->name, sizeof qt->name, "%s", s->name);
    qt->src_index = i;
    memcpy(qt->ne, s->ne, sizeof qt->ne);
    qt->n_dims = quant_n_dims(s->ne);
    qt->src_type = qt->type = qt->wanted = s->type;
    qt->src_bytes = s->nbytes;
    qt->kl = -1;
    qt->why = quant_allowed(s->name, s->ne) ? QUANT_WHY_DEFAULT : QUANT_WHY_COPY;
    if (qt->why != QUANT_WHY_COPY && !quant_type_is_float(s->type))
        return core_fail(err, MICA_EUNSUPPORTED,
                         "%s: tensor '%s' is already quantized (%s); quantize from the F32, F16 "
                         "or BF16 file",
                         f->path, s->name, gguf_ttype_name(s->type));
    return MICA_OK;
}

/* Applies --keep-f16 to quantizable tensors; every pattern must match at least one. */
static mica_status quant_plan_keep(const gguf_file *f, quant_plan *p, const char *keep,
                                   mica_err *err)
{
    for (size_t i = 0; i < p->n; i++) {
        quant_tensor *t = &p->t[i];
        if (t->why == QUANT_WHY_COPY || !quant_patterns_match(keep, t->name)) continue;
        t->type = GGUF_T_F16;
        t->why = QUANT_WHY_KEEP;
    }
    char item[256];
    for (const char *s = keep; *s;) {
        size_t n = strcspn(s, ",");
        if (n == 0 || n >= sizeof item)
            return core_fail(err, MICA_EINVAL, "--keep-f16: empty or overlong pattern in '%s'",
                             keep);
        memcpy(item, s, n);
        item[n] = '\0';
        bool used = false;
        for (size_t i = 0; i < p->n && !used; i++)
            used = p->t[i].why != QUANT_WHY_COPY && quant_glob_match(item, p->t[i].name);
        if (!used)
            return core_fail(err, MICA_EINVAL,
                             "%s: --keep-f16 pattern '%s' matches no quantizable tensor", f->path,
                             item);
        s += n;
        if (*s == ',') s++;
    }
    return MICA_OK;
}

mica_status quant_plan_make(const gguf_file *f, uint32_t target, const char *keep_f16,
                            quant_plan *out, mica_err *err)
{
    memset(out, 0, sizeof *out);
    mica_status st = MICA_OK;
    if (!quant_type_writable(target))
        return core_fail(err, MICA_EINVAL, "type %s cannot be written", gguf_ttype_name(target));
    out->target = target;
    out->n = (size_t)f->n_tensors;
    out->t = core_calloc(out->n ? out->n : 1, sizeof *out->t);
    if (!out->t) return core_fail(err, MICA_ENOMEM, "%s: out of memory", f->path);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if ((st = quant_plan_tensor(f, i, &out->t[i], err))) goto fail;
    qsort(out->t, out->n, sizeof *out->t, quant_order);
    quant_rules r;
    quant_rules_init(&r, f, target, out->t, out->n);
    for (size_t i = 0; i < out->n; i++)
        if (out->t[i].why != QUANT_WHY_COPY) quant_choose(&r, &out->t[i], &out->n_fallback);
    if (keep_f16 && (st = quant_plan_keep(f, out, keep_f16, err))) goto fail;
    for (size_t i = 0; i < out->n; i++) {
        quant_tensor *t = &out->t[i];
        t->bytes = t->type == t->src_type ? t->src_bytes : quant_type_bytes(t->type, t->ne);
        out->src_bytes += t->src_bytes;
        out->dst_bytes += t->bytes;
    }
    /* The input's metadata, plus the two u32 keys llama-quantize appends (at most 44 + 33
     * bytes), padded; writing fewer dimensions only makes it smaller. */
    out->meta_bytes = quant_pad32(f->data_offset + 96);
    return MICA_OK;
fail:
    quant_plan_free(out);
    return st;
}

/* ---- budget -------------------------------------------------------------------------- */

/* Sorts candidate indices by sensitivity, largest first (ties: file order). Insertion sort:
 * there are a few hundred tensors at most. */
static bool quant_before(const quant_plan *p, size_t a, size_t b)
{
    if (p->t[a].kl != p->t[b].kl) return p->t[a].kl > p->t[b].kl;
    return a < b;
}

static void quant_sort_idx(size_t *idx, size_t n, const quant_plan *p)
{
    for (size_t i = 1; i < n; i++) {
        size_t v = idx[i], j = i;
        while (j > 0 && quant_before(p, v, idx[j - 1])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

mica_status quant_budget_apply(quant_plan *p, uint64_t budget, mica_err *err)
{
    uint64_t size = quant_plan_file_bytes(p);
    if (size > budget)
        return core_fail(err, MICA_ERANGE,
                         "--budget-mb %.4f is less than the %.4f MiB the %s file takes with no "
                         "tensor kept in F16",
                         (double)budget / 1048576.0, (double)size / 1048576.0,
                         gguf_ttype_name(p->target));
    size_t *idx = malloc((p->n ? p->n : 1) * sizeof *idx);
    if (!idx) return core_fail(err, MICA_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        if (quant_plan_is_candidate(p, i) && p->t[i].kl >= 0) idx[n++] = i;
    quant_sort_idx(idx, n, p);
    for (size_t k = 0; k < n; k++) {
        quant_tensor *t = &p->t[idx[k]];
        const uint64_t extra = quant_plan_f16_extra(p, idx[k]);
        if (size + extra > budget) continue;
        size += extra;
        p->dst_bytes -= t->bytes;
        t->type = GGUF_T_F16;
        t->why = QUANT_WHY_BUDGET;
        t->bytes = quant_type_bytes(GGUF_T_F16, t->ne);
        p->dst_bytes += t->bytes;
    }
    free(idx);
    return MICA_OK;
}
