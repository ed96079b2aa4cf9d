/*
 * train_opt.c - the optimizer: AdamW as PyTorch's torch.optim.AdamW (decoupled weight decay
 * p -= lr * wd * p, then the Adam step with bias correction from step 1), gradient clipping by
 * global norm as torch.nn.utils.clip_grad_norm_, and the warmup + cosine learning-rate
 * schedule of transformers' get_cosine_schedule_with_warmup. Walks every trainable tensor of a
 * train_model (those with gradients).
 */
#include "train/train_int.h"

#include <math.h>
#include <stdlib.h>

#define OPT_PI 3.14159265358979323846

train_opt_cfg train_opt_default(void)
{
    train_opt_cfg c = {0};
    c.lr = 1e-3f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = 0.0f;
    c.clip = 1.0f;
    c.warmup = 0;
    c.total = 1;
    return c;
}

float train_lr_at(const train_opt_cfg *c, int64_t step)
{
    if (step < c->warmup) return c->lr * (float)step / (float)(c->warmup > 1 ? c->warmup : 1);
    const int64_t span = c->total - c->warmup > 1 ? c->total - c->warmup : 1;
    double progress = (double)(step - c->warmup) / (double)span;
    if (progress > 1.0) progress = 1.0;
    return (float)(c->lr * 0.5 * (1.0 + cos(OPT_PI * progress)));
}

double train_grad_norm(const train_model *tm)
{
    double sum = 0.0;
    for (int i = 0; i < tm->n_tensors; i++) {
        const train_tensor *t = tm->tensors[i];
        for (int64_t j = 0; t->g && j < t->n; j++) sum += (double)t->g[j] * t->g[j];
    }
    return sqrt(sum);
}

static void adamw_tensor(train_tensor *t, const train_opt_cfg *c, float lr, float clip_scale,
                         double bc1, double bc2)
{
    const float decay = t->decay ? lr * c->weight_decay : 0.0f;
    for (int64_t j = 0; j < t->n; j++) {
        const float g = t->g[j] * clip_scale;
        t->adam_m[j] = c->beta1 * t->adam_m[j] + (1.0f - c->beta1) * g;
        t->adam_v[j] = c->beta2 * t->adam_v[j] + (1.0f - c->beta2) * g * g;
        const float mhat = (float)(t->adam_m[j] / bc1), vhat = (float)(t->adam_v[j] / bc2);
        t->w[j] -= decay * t->w[j];
        t->w[j] -= lr * mhat / (sqrtf(vhat) + c->eps);
    }
}

mica_status train_adamw_step(train_model *tm, const train_opt_cfg *c, int64_t step, double *norm,
                             mica_err *err)
{
    const mica_status st = train_opt_alloc(tm, err);
    if (st) return st;
    const double gnorm = train_grad_norm(tm);
    float clip_scale = 1.0f;
    if (c->clip > 0.0f && gnorm + 1e-6 > 0.0) {
        const double coef = c->clip / (gnorm + 1e-6);
        if (coef < 1.0) clip_scale = (float)coef;
    }
    const float lr = train_lr_at(c, step);
    const double t1 = (double)(step + 1);
    const double bc1 = 1.0 - pow(c->beta1, t1), bc2 = 1.0 - pow(c->beta2, t1);
    for (int i = 0; i < tm->n_tensors; i++)
        if (tm->tensors[i]->g) adamw_tensor(tm->tensors[i], c, lr, clip_scale, bc1, bc2);
    if (norm) *norm = gnorm;
    return MICA_OK;
}
