/*
 * test_grad.c - gradient checks of src/train's backward pass against central finite differences
 * of an independent double-precision forward written here (the reference: the model's
 * equations, not the code under test), on tiny shapes, for every parameter of every layer
 * type: embedding, RMSNorms, attention (RoPE normal and NEOX, GQA, q/k/v biases), SwiGLU,
 * the output matrix (tied and untied), the MoE router (softmax, top-k with a margin at the
 * boundary, renormalised weights, the load-balancing loss) and experts, LoRA A and B, and the
 * loss mask. Tolerances as llm.c's checks: every element within 1e-3 of the tensor's largest
 * reference gradient.
 */
#include "test_util.h"

#include "train/train.h"

#include <math.h>

#define N_SEQ 2
#define N_TOK 5
#define N     (N_SEQ * N_TOK)
#define FD_H  1e-5

/* ---- the reference forward, in double ---------------------------------------------------- */

typedef struct ref {
    const train_model *tm;
    double **p; /* a double copy of each tensor, indexed as tm->tensors */
    const int32_t *tokens, *targets;
    double min_margin; /* smallest gap between the k-th and (k+1)-th router probability */
} ref;

static const double *P(const ref *r, const train_tensor *t)
{
    if (!t) return NULL;
    for (int i = 0; i < r->tm->n_tensors; i++)
        if (r->tm->tensors[i] == t) return r->p[i];
    fail_msg("tensor %s not in the list", t->name);
    return NULL;
}

/* y[r][o] (= or +=) sum_i W[o][i] x[r][i]. */
static void lin(const double *W, int n_in, int n_out, const double *x, int n, double *y, bool add)
{
    for (int r = 0; r < n; r++)
        for (int o = 0; o < n_out; o++) {
            double s = add ? y[r * n_out + o] : 0.0;
            for (int i = 0; i < n_in; i++) s += W[o * n_in + i] * x[r * n_in + i];
            y[r * n_out + o] = s;
        }
}

/* y = x W^T + scale * B A x + b. */
static void proj(const ref *r, const train_tensor *W, const train_tensor *b, const train_lora *lo,
                 const double *x, double *y)
{
    const int n_in = (int)W->ne[0], n_out = (int)W->ne[1];
    lin(P(r, W), n_in, n_out, x, N, y, false);
    if (lo->a) {
        const int rk = (int)lo->a->ne[1];
        double *u = calloc((size_t)N * rk, sizeof(double)), *v = calloc((size_t)N * n_out, 8);
        lin(P(r, lo->a), n_in, rk, x, N, u, false);
        lin(P(r, lo->b), rk, n_out, u, N, v, false);
        for (int i = 0; i < N * n_out; i++) y[i] += lo->scale * v[i];
        free(u);
        free(v);
    }
    for (int i = 0; b && i < N * n_out; i++) y[i] += P(r, b)[i % n_out];
}

static void rms(const double *x, const double *w, double *y, int n_rows, int n, double eps)
{
    for (int r = 0; r < n_rows; r++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += x[r * n + i] * x[r * n + i];
        const double k = 1.0 / sqrt(s / n + eps);
        for (int i = 0; i < n; i++) y[r * n + i] = x[r * n + i] * k * w[i];
    }
}

static void softmax(double *x, int n)
{
    double max = x[0], s = 0.0;
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    for (int i = 0; i < n; i++) s += (x[i] = exp(x[i] - max));
    for (int i = 0; i < n; i++) x[i] /= s;
}

/* RoPE at position pos: pairs (2i, 2i+1) or (i, i + n_rot/2), angle pos * base^(-2i/n_rot). */
static void rope(double *row, int n_heads, int hd, int pos, double base, model_rope mode)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            const int i0 = mode == MODEL_ROPE_NORM ? 2 * i : i;
            const int i1 = mode == MODEL_ROPE_NORM ? 2 * i + 1 : i + hd / 2;
            const double th = pos * pow(base, -2.0 * i / hd), c = cos(th), s = sin(th);
            double *x = row + h * hd;
            const double x0 = x[i0], x1 = x[i1];
            x[i0] = x0 * c - x1 * s;
            x[i1] = x0 * s + x1 * c;
        }
}

static void attention(const ref *r, int il, const double *xn, double *out)
{
    const train_model *tm = r->tm;
    const model_hparams *hp = &tm->hp;
    const train_layer *l = &tm->layers[il];
    const int hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    double *q = calloc((size_t)N * nq, 8), *k = calloc((size_t)N * nkv, 8);
    double *v = calloc((size_t)N * nkv, 8), *att = calloc((size_t)N * nq, 8);
    proj(r, l->wq, l->bq, &l->lora[TRAIN_LORA_Q], xn, q);
    proj(r, l->wk, l->bk, &l->lora[TRAIN_LORA_K], xn, k);
    proj(r, l->wv, l->bv, &l->lora[TRAIN_LORA_V], xn, v);
    for (int t = 0; t < N; t++) {
        rope(q + t * nq, hp->n_head, hd, t % N_TOK, hp->rope_base, tm->arch->rope);
        rope(k + t * nkv, hp->n_head_kv, hd, t % N_TOK, hp->rope_base, tm->arch->rope);
    }
    const int group = hp->n_head / hp->n_head_kv;
    for (int s = 0; s < N_SEQ; s++)
        for (int h = 0; h < hp->n_head; h++)
            for (int t = 0; t < N_TOK; t++) {
                double sc[N_TOK];
                const double *qt = q + (s * N_TOK + t) * nq + h * hd;
                for (int j = 0; j <= t; j++) {
                    const double *kj = k + (s * N_TOK + j) * nkv + (h / group) * hd;
                    sc[j] = 0.0;
                    for (int d = 0; d < hd; d++) sc[j] += qt[d] * kj[d] / sqrt((double)hd);
                }
                softmax(sc, t + 1);
                for (int d = 0; d < hd; d++)
                    for (int j = 0; j <= t; j++)
                        att[(s * N_TOK + t) * nq + h * hd + d] +=
                            sc[j] * v[(s * N_TOK + j) * nkv + (h / group) * hd + d];
            }
    proj(r, l->wo, NULL, &l->lora[TRAIN_LORA_O], att, out);
    free(q);
    free(k);
    free(v);
    free(att);
}

/* down(silu(gate x) * up x) for n rows; the dense FFN's LoRA when lo is given. */
/* y += scale * B_x A_x x for n rows: expert x's slice of a per-expert adapter. */
static void expert_lora(const ref *r, const train_lora *lo, int x, const double *in, int n,
                        int n_in, int n_out, double *y)
{
    if (!lo->a) return;
    const int rk = (int)lo->a->ne[1];
    double *u = calloc((size_t)n * rk, 8), *v = calloc((size_t)n * n_out, 8);
    lin(P(r, lo->a) + (size_t)x * n_in * rk, n_in, rk, in, n, u, false);
    lin(P(r, lo->b) + (size_t)x * rk * n_out, rk, n_out, u, n, v, false);
    for (int i = 0; i < n * n_out; i++) y[i] += lo->scale * v[i];
    free(u);
    free(v);
}

/* A dense FFN (l given) or expert x's (weights given; lo: the layer's adapters, which hold
 * one pair per expert). */
static void swiglu(const ref *r, const double *Wg, const double *Wu, const double *Wd, int e,
                   int ff, const double *x, int n, double *y, const train_layer *l,
                   const train_lora *lo, int expert)
{
    double *g = calloc((size_t)n * ff, 8), *u = calloc((size_t)n * ff, 8);
    if (l) {
        proj(r, l->ffn_gate, NULL, &l->lora[TRAIN_LORA_GATE], x, g);
        proj(r, l->ffn_up, NULL, &l->lora[TRAIN_LORA_UP], x, u);
    } else {
        lin(Wg, e, ff, x, n, g, false);
        lin(Wu, e, ff, x, n, u, false);
        expert_lora(r, &lo[TRAIN_LORA_GATE], expert, x, n, e, ff, g);
        expert_lora(r, &lo[TRAIN_LORA_UP], expert, x, n, e, ff, u);
    }
    for (int i = 0; i < n * ff; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    if (l) {
        proj(r, l->ffn_down, NULL, &l->lora[TRAIN_LORA_DOWN], g, y);
    } else {
        lin(Wd, ff, e, g, n, y, false);
        expert_lora(r, &lo[TRAIN_LORA_DOWN], expert, g, n, ff, e, y);
    }
    free(g);
    free(u);
}

/* Mixtral-style: softmax, top-k, renormalised weights; returns this layer's balance loss
 * n_expert * sum_e f_e P_e. */
static double moe(ref *r, int il, const double *xn, double *out)
{
    const train_model *tm = r->tm;
    const train_layer *l = &tm->layers[il];
    const int e = tm->hp.n_embd, ff = tm->hp.n_ff_exp, nx = tm->hp.n_expert;
    const int k = tm->hp.n_expert_used;
    double probs[N * 16], f[16] = {0}, pm[16] = {0}, y[64];
    lin(P(r, l->gate_inp), e, nx, xn, N, probs, false);
    for (int t = 0; t < N; t++) {
        double *p = probs + t * nx;
        softmax(p, nx);
        int sel[16];
        double sum = 0.0;
        for (int s = 0; s <= k && s < nx; s++) { /* one past k, for the margin */
            int best = -1;
            for (int x = 0; x < nx; x++) {
                bool taken = false;
                for (int u = 0; u < s; u++) taken |= sel[u] == x;
                if (!taken && (best < 0 || p[x] > p[best])) best = x;
            }
            sel[s] = best;
            if (s < k) sum += p[best];
        }
        if (k < nx && p[sel[k - 1]] - p[sel[k]] < r->min_margin)
            r->min_margin = p[sel[k - 1]] - p[sel[k]];
        for (int i = 0; i < e; i++) out[t * e + i] = 0.0;
        for (int s = 0; s < k; s++) {
            const size_t mo = (size_t)sel[s] * e * ff;
            swiglu(r, P(r, l->gate_exps) + mo, P(r, l->up_exps) + mo, P(r, l->down_exps) + mo, e,
                   ff, xn + t * e, 1, y, NULL, l->lora, sel[s]);
            const double w = tm->arch->moe_renorm ? p[sel[s]] / sum : p[sel[s]];
            for (int i = 0; i < e; i++) out[t * e + i] += w * y[i];
            f[sel[s]] += 1.0 / N;
        }
        for (int x = 0; x < nx; x++) pm[x] += p[x] / N;
    }
    double bal = 0.0;
    for (int x = 0; x < nx; x++) bal += f[x] * pm[x];
    return nx * bal;
}

static double ref_loss(ref *r)
{
    const train_model *tm = r->tm;
    const model_hparams *hp = &tm->hp;
    const int e = hp->n_embd, nv = hp->n_vocab;
    double *x = calloc((size_t)N * e, 8), *xn = calloc((size_t)N * e, 8);
    double *o = calloc((size_t)N * e, 8), *logits = calloc((size_t)N * nv, 8);
    double aux = 0.0;
    for (int t = 0; t < N; t++)
        for (int i = 0; i < e; i++) x[t * e + i] = P(r, tm->tok_embd)[r->tokens[t] * e + i];
    for (int il = 0; il < hp->n_layer; il++) {
        const train_layer *l = &tm->layers[il];
        rms(x, P(r, l->attn_norm), xn, N, e, hp->norm_eps);
        attention(r, il, xn, o);
        for (int i = 0; i < N * e; i++) x[i] += o[i];
        rms(x, P(r, l->ffn_norm), xn, N, e, hp->norm_eps);
        if (hp->n_expert)
            aux += moe(r, il, xn, o);
        else
            swiglu(r, NULL, NULL, NULL, e, hp->n_ff, xn, N, o, l, NULL, 0);
        for (int i = 0; i < N * e; i++) x[i] += o[i];
    }
    rms(x, P(r, tm->output_norm), xn, N, e, hp->norm_eps);
    proj(r, tm->output, NULL, &tm->output_lora, xn, logits);
    double loss = 0.0;
    int n_t = 0;
    for (int t = 0; t < N; t++) {
        if (r->targets[t] < 0) continue;
        double *l = logits + t * nv;
        softmax(l, nv);
        loss -= log(l[r->targets[t]]);
        n_t++;
    }
    free(x);
    free(xn);
    free(o);
    free(logits);
    return (n_t ? loss / n_t : 0.0) + tm->moe_aux_coef * aux / hp->n_layer;
}

/* ---- the checks ----------------------------------------------------------------------------- */

/* Random weights of magnitude ~1/sqrt(fan in) (norms near 1), so activations are O(1) and
 * attention is far from uniform; values rounded to float so both passes see the same model. */
static void randomize(train_model *tm, uint64_t seed)
{
    core_rng r;
    core_rng_seed(&r, seed);
    for (int i = 0; i < tm->n_tensors; i++) {
        train_tensor *t = tm->tensors[i];
        const bool norm = strstr(t->name, "norm") != NULL;
        const double scale = t->n_dims == 1 ? 0.2 : 1.5 / sqrt((double)t->ne[0]);
        for (int64_t j = 0; j < t->n; j++)
            t->w[j] = (float)((norm ? 1.0 : 0.0) + scale * (2.0 * core_rng_uniform(&r) - 1.0));
    }
}

static void batch(const train_model *tm, int32_t *tokens, int32_t *targets, bool mask_some)
{
    for (int t = 0; t < N; t++) {
        tokens[t] = (int32_t)((3 + 7 * t * t + 5 * t) % tm->hp.n_vocab);
        targets[t] = (int32_t)((11 + 13 * t) % tm->hp.n_vocab);
        if (mask_some && (t % N_TOK == 0 || t == 7)) targets[t] = -1;
    }
}

/* Runs the float forward/backward and the double reference, checks the loss, then every
 * element of every trainable tensor against central differences. */
static void check_grads(train_model *tm, bool mask_some)
{
    mica_err err;
    int32_t tokens[N], targets[N];
    batch(tm, tokens, targets, mask_some);
    tensor_pool *pool;
    if (tensor_pool_new(&pool, 2, &err)) fail_msg("%s", err.msg);
    train_work *w;
    if (train_work_new(&w, tm, N_SEQ, N_TOK, &err)) fail_msg("%s", err.msg);
    float loss;
    train_model_zero_grad(tm);
    if (train_forward(tm, w, pool, tokens, targets, false, 0, &loss, &err)) fail_msg("%s", err.msg);
    if (train_backward(tm, w, pool, 1.0f, &err)) fail_msg("%s", err.msg);

    ref r = {tm, calloc((size_t)tm->n_tensors, sizeof(double *)), tokens, targets, INFINITY};
    for (int i = 0; i < tm->n_tensors; i++) {
        r.p[i] = calloc((size_t)tm->tensors[i]->n, sizeof(double));
        for (int64_t j = 0; j < tm->tensors[i]->n; j++) r.p[i][j] = tm->tensors[i]->w[j];
    }
    const double l0 = ref_loss(&r);
    if (fabs(l0 - loss) > 1e-5 * fabs(l0))
        fail_msg("loss: training %.9g, reference %.9g", (double)loss, l0);
    if (tm->hp.n_expert && r.min_margin < 1e-3)
        fail_msg("router margin %g at the top-k boundary is too small for the check", r.min_margin);
    int checked = 0;
    for (int i = 0; i < tm->n_tensors; i++) {
        const train_tensor *t = tm->tensors[i];
        if (!t->g) continue;
        double *fd = calloc((size_t)t->n, sizeof(double)), max = 0.0;
        for (int64_t j = 0; j < t->n; j++) {
            const double v = r.p[i][j];
            r.p[i][j] = v + FD_H;
            const double lp = ref_loss(&r);
            r.p[i][j] = v - FD_H;
            const double lm = ref_loss(&r);
            r.p[i][j] = v;
            fd[j] = (lp - lm) / (2 * FD_H);
            max = fabs(fd[j]) > max ? fabs(fd[j]) : max;
        }
        if (max == 0.0) fail_msg("%s: reference gradient is all zero", t->name);
        for (int64_t j = 0; j < t->n; j++)
            if (fabs(t->g[j] - fd[j]) > 1e-3 * max + 1e-7)
                fail_msg("%s[%lld]: backward %.9g, finite differences %.9g (max %.3g)", t->name,
                         (long long)j, (double)t->g[j], fd[j], max);
        checked++;
        free(fd);
    }
    assert_true(checked > 0);
    for (int i = 0; i < tm->n_tensors; i++) free(r.p[i]);
    free(r.p);
    train_work_free(w);
    tensor_pool_free(pool);
}

static train_model *tiny(const char *arch, bool tied, bool bias, int n_expert)
{
    train_shape s = {0};
    s.arch = arch;
    s.n_vocab = 19;
    s.n_ctx = 16;
    s.n_embd = 8;
    s.n_layer = 2;
    s.n_head = 2;
    s.n_head_kv = 1;
    s.n_ff = n_expert ? 6 : 12;
    s.n_expert = n_expert;
    s.n_expert_used = n_expert ? 2 : 0;
    s.tied = tied;
    s.qkv_bias = bias;
    s.rope_base = 100.0f;
    s.norm_eps = 1e-5f;
    train_model *tm;
    mica_err err;
    if (train_model_init(&tm, &s, 1, &err)) fail_msg("%s", err.msg);
    randomize(tm, 42);
    return tm;
}

static void test_llama_dense(void **state)
{
    (void)state;
    train_model *tm = tiny("llama", false, false, 0);
    check_grads(tm, true);
    train_model_free(tm);
}

static void test_qwen2_tied_bias(void **state)
{
    (void)state;
    train_model *tm = tiny("qwen2", true, true, 0);
    check_grads(tm, true);
    train_model_free(tm);
}

static void test_moe_router(void **state)
{
    (void)state;
    train_model *tm = tiny("llama", false, false, 4);
    tm->moe_aux_coef = 0.1f;
    check_grads(tm, false);
    train_model_free(tm);
}

/* Adapters on every site of a dense (n_expert 0) or MoE model; B given values. */
static void check_lora(int n_expert)
{
    mica_err err;
    train_model *tm = tiny("llama", false, false, n_expert);
    train_lora_cfg c = {"query_key_value,o,gate,up,down,output", 2, 4.0f, 0.0f, 7};
    if (train_lora_add(tm, &c, &err)) fail_msg("%s", err.msg);
    assert_null(tm->layers[0].wq->g);
    assert_null(tm->tok_embd->g);
    /* B starts at zero, which would make A's gradient zero: give B values for the check. */
    core_rng r;
    core_rng_seed(&r, 3);
    for (int i = 0; i < tm->n_tensors; i++)
        if (strstr(tm->tensors[i]->name, ".lora_b"))
            for (int64_t j = 0; j < tm->tensors[i]->n; j++)
                tm->tensors[i]->w[j] = (float)(core_rng_uniform(&r) - 0.5);
    check_grads(tm, true);
    train_model_free(tm);
}

static void test_lora(void **state)
{
    (void)state;
    check_lora(0);
}

/* Per-expert adapters on gate/up/down of the experts (llama.cpp's 3-D lora_a/lora_b). */
static void test_lora_experts(void **state)
{
    (void)state;
    check_lora(4);
}

/* With every position masked the loss is 0 and no gradient flows. */
static void test_all_masked(void **state)
{
    (void)state;
    mica_err err;
    train_model *tm = tiny("llama", false, false, 0);
    int32_t tokens[N], targets[N];
    batch(tm, tokens, targets, false);
    for (int t = 0; t < N; t++) targets[t] = -1;
    train_work *w;
    if (train_work_new(&w, tm, N_SEQ, N_TOK, &err)) fail_msg("%s", err.msg);
    float loss = -1.0f;
    train_model_zero_grad(tm);
    if (train_forward(tm, w, NULL, tokens, targets, false, 0, &loss, &err)) fail_msg("%s", err.msg);
    if (train_backward(tm, w, NULL, 1.0f, &err)) fail_msg("%s", err.msg);
    assert_true(loss == 0.0f);
    assert_true(train_grad_norm(tm) == 0.0);
    train_work_free(w);
    train_model_free(tm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_dense),  cmocka_unit_test(test_qwen2_tied_bias),
        cmocka_unit_test(test_moe_router),   cmocka_unit_test(test_lora),
        cmocka_unit_test(test_lora_experts), cmocka_unit_test(test_all_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
