/*
 * train_lora.c - LoRA adapters on the training side: choosing the adapted weights by name,
 * creating A (Kaiming-uniform, as PEFT) and B (zero) as trainable tensors while the base is
 * frozen, and writing them as a llama.cpp adapter (model/lora.h's lora_write). The products
 * themselves are in train_ops.c.
 */
#include "train/train_int.h"
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const site_names[TRAIN_LORA_N_SITES] = {"q",    "k",  "v",   "o",
                                                           "gate", "up", "down"};

train_tensor *train_lora_site_weight(const train_layer *l, train_lora_site s)
{
    switch (s) {
    case TRAIN_LORA_Q:
        return l->wq;
    case TRAIN_LORA_K:
        return l->wk;
    case TRAIN_LORA_V:
        return l->wv;
    case TRAIN_LORA_O:
        return l->wo;
    case TRAIN_LORA_GATE: /* a MoE layer's gate, up and down are its experts' */
        return l->ffn_gate ? l->ffn_gate : l->gate_exps;
    case TRAIN_LORA_UP:
        return l->ffn_up ? l->ffn_up : l->up_exps;
    case TRAIN_LORA_DOWN:
        return l->ffn_down ? l->ffn_down : l->down_exps;
    default:
        return NULL;
    }
}

/* Parses "q,k,v,o" (and query_key_value = q,k,v) into chosen[site], "output" into *output. */
static mica_status parse_targets(const char *spec, bool *chosen, bool *output, mica_err *err)
{
    memset(chosen, 0, TRAIN_LORA_N_SITES * sizeof *chosen);
    *output = false;
    bool any = false;
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        bool known = len == 15 && !strncmp(p, "query_key_value", len);
        if (known) chosen[TRAIN_LORA_Q] = chosen[TRAIN_LORA_K] = chosen[TRAIN_LORA_V] = true;
        if (len == 6 && !strncmp(p, "output", len)) known = *output = true;
        for (int s = 0; s < TRAIN_LORA_N_SITES; s++)
            if (strlen(site_names[s]) == len && !strncmp(p, site_names[s], len))
                known = chosen[s] = true;
        if (!known)
            return core_fail(err, MICA_EINVAL,
                             "LoRA target '%.*s': expected q, k, v, o, gate, up, down, output "
                             "or query_key_value",
                             (int)len, p);
        any = true;
        p = end ? end + 1 : NULL;
    }
    if (!any) return core_fail(err, MICA_EINVAL, "no LoRA targets given");
    return MICA_OK;
}

static void freeze_base(train_model *tm)
{
    for (int i = 0; i < tm->n_tensors; i++) {
        free(tm->tensors[i]->g);
        tm->tensors[i]->g = NULL;
    }
}

/* A and B for one weight: A U(-1/sqrt(n_in), 1/sqrt(n_in)) (kaiming_uniform_, a = sqrt(5)).
 * Experts' 3-D weights get one pair per expert (llama.cpp's a [n_in, r, n_expert], b [r, n_out,
 * n_expert]). */
static mica_status add_adapter(train_model *tm, train_lora *lo, const train_tensor *base,
                               const train_lora_cfg *cfg, core_rng *r, mica_err *err)
{
    const int64_t n_in = base->ne[0], n_out = base->ne[1], nx = base->n_dims > 2 ? base->ne[2] : 1;
    char name_a[2 * GGUF_MAX_NAME], name_b[2 * GGUF_MAX_NAME];
    snprintf(name_a, sizeof name_a, "%s.lora_a", base->name);
    snprintf(name_b, sizeof name_b, "%s.lora_b", base->name);
    if (strlen(name_a) >= GGUF_MAX_NAME)
        return core_fail(err, MICA_EINVAL, "tensor name '%s' is too long", name_a);
    const int dims = nx > 1 ? 3 : 2;
    lo->a = train_tensor_add(tm, name_a, dims, n_in, cfg->rank, nx);
    lo->b = lo->a ? train_tensor_add(tm, name_b, dims, cfg->rank, n_out, nx) : NULL;
    if (!lo->b) return core_fail(err, MICA_ENOMEM, "out of memory for the LoRA adapters");
    lo->scale = cfg->alpha / (float)cfg->rank;
    const double bound = 1.0 / sqrt((double)n_in);
    for (int64_t i = 0; i < lo->a->n; i++)
        lo->a->w[i] = (float)((2.0 * core_rng_uniform(r) - 1.0) * bound);
    return MICA_OK;
}

static mica_status check_rank(const train_tensor *base, const char *site, int32_t rank,
                              mica_err *err)
{
    const int64_t lim = base->ne[0] < base->ne[1] ? base->ne[0] : base->ne[1];
    if (rank < 1 || rank > lim)
        return core_fail(err, MICA_EINVAL, "LoRA rank %d for '%s' (%s): must be 1 to %lld", rank,
                         base->name, site, (long long)lim);
    return MICA_OK;
}

static mica_status check_site(const train_tensor *base, int s, int32_t rank, mica_err *err)
{
    if (!base)
        return core_fail(err, MICA_EUNSUPPORTED, "LoRA target '%s': the layer has no such weight",
                         site_names[s]);
    return check_rank(base, site_names[s], rank, err);
}

/* The output matrix can be adapted when it is its own tensor (a tied model's is token_embd,
 * which an adapter names differently). */
static mica_status check_output(const train_model *tm, int32_t rank, mica_err *err)
{
    if (tm->output == tm->tok_embd)
        return core_fail(err, MICA_EUNSUPPORTED,
                         "LoRA target 'output': the model ties its output matrix to the token "
                         "embeddings");
    return check_rank(tm->output, "output", rank, err);
}

mica_status train_lora_add(train_model *tm, const train_lora_cfg *cfg, mica_err *err)
{
    bool chosen[TRAIN_LORA_N_SITES], output;
    mica_status st = parse_targets(cfg->targets, chosen, &output, err);
    if (st) return st;
    for (int i = 0; i < tm->n_tensors; i++)
        if (!tm->tensors[i]->g || strstr(tm->tensors[i]->name, ".lora_"))
            return core_fail(err, MICA_EINVAL, "the model already has LoRA adapters");
    if (!(cfg->alpha > 0.0f))
        return core_fail(err, MICA_EINVAL, "LoRA alpha %g: must be > 0", (double)cfg->alpha);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return core_fail(err, MICA_EINVAL, "LoRA dropout %g: must be in [0, 1)",
                         (double)cfg->dropout);
    for (int il = 0; il < tm->hp.n_layer; il++)
        for (int s = 0; s < TRAIN_LORA_N_SITES; s++)
            if (chosen[s] &&
                (st = check_site(train_lora_site_weight(&tm->layers[il], s), s, cfg->rank, err)))
                return st;
    if (output && (st = check_output(tm, cfg->rank, err))) return st;
    freeze_base(tm);
    tm->lora_dropout = cfg->dropout;
    core_rng r;
    core_rng_seed(&r, cfg->seed);
    for (int il = 0; il < tm->hp.n_layer; il++)
        for (int s = 0; s < TRAIN_LORA_N_SITES; s++) {
            train_layer *l = &tm->layers[il];
            if (chosen[s] &&
                (st = add_adapter(tm, &l->lora[s], train_lora_site_weight(l, s), cfg, &r, err)))
                return st;
        }
    return output ? add_adapter(tm, &tm->output_lora, tm->output, cfg, &r, err) : MICA_OK;
}

static void write_weight(lora_write_weight *x, const train_lora *lo, const train_tensor *base)
{
    x->base_name = base->name;
    memcpy(x->a_ne, lo->a->ne, sizeof x->a_ne);
    memcpy(x->b_ne, lo->b->ne, sizeof x->b_ne);
    x->a = lo->a->w;
    x->b = lo->b->w;
}

mica_status train_lora_write(const train_model *tm, const char *path, float alpha, mica_err *err)
{
    const size_t cap = (size_t)tm->hp.n_layer * TRAIN_LORA_N_SITES + 1;
    lora_write_weight *ws = core_calloc(cap, sizeof *ws);
    if (!ws) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    size_t n = 0;
    for (int il = 0; il < tm->hp.n_layer; il++)
        for (int s = 0; s < TRAIN_LORA_N_SITES; s++)
            if (tm->layers[il].lora[s].a)
                write_weight(&ws[n++], &tm->layers[il].lora[s],
                             train_lora_site_weight(&tm->layers[il], s));
    if (tm->output_lora.a) write_weight(&ws[n++], &tm->output_lora, tm->output);
    mica_status st = lora_write(path, tm->arch->name, "mica-lora", alpha, GGUF_T_F32, ws, n, err);
    free(ws);
    return st;
}
