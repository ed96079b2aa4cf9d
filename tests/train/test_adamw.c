/*
 * test_adamw.c - tests src/train/train_opt.c against the formulas written out here in double:
 * torch.optim.AdamW's update (bias correction from step 1, decoupled weight decay on
 * matrices only) over a few steps with changing gradients, clipping by global norm
 * (clip_grad_norm_'s factor max_norm / (norm + 1e-6)), and the warmup + cosine schedule of
 * transformers' get_cosine_schedule_with_warmup at known points.
 */
#include "test_util.h"

#include "train/train.h"

#include <math.h>

static train_model *tiny(void)
{
    train_shape s = {"llama", 11, 8, 8, 1, 2, 2, 6, 0, 0, false, false, 1e4f, 1e-5f};
    train_model *tm;
    mica_err err;
    if (train_model_init(&tm, &s, 5, &err)) fail_msg("%s", err.msg);
    return tm;
}

/* Gradient of element j at step t: varies in sign and size. */
static float grad_at(int64_t j, int t)
{
    return (float)(0.01 * sin(0.7 * (double)j + 1.3 * t) * (1 + t));
}

typedef struct adam_ref {
    double w, m, v;
} adam_ref;

/* One element of torch.optim.AdamW's step number t (1-based). */
static void adam_ref_step(adam_ref *a, double g, double lr, double wd, int t)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    a->w *= 1.0 - lr * wd;
    a->m = b1 * a->m + (1 - b1) * g;
    a->v = b2 * a->v + (1 - b2) * g * g;
    const double mhat = a->m / (1 - pow(b1, t)), vhat = a->v / (1 - pow(b2, t));
    a->w -= lr * mhat / (sqrt(vhat) + eps);
}

static void run_steps(double clip, double expect_factor_cap)
{
    mica_err err;
    train_model *tm = tiny();
    train_opt_cfg c = train_opt_default();
    c.lr = 0.01f;
    c.weight_decay = 0.1f;
    c.clip = (float)clip;
    c.total = 100;
    train_tensor *mat = tm->layers[0].wq, *vec = tm->layers[0].attn_norm;
    adam_ref rm[64], rv[8];
    assert_int_equal(mat->n, 64);
    for (int j = 0; j < 64; j++) rm[j] = (adam_ref){mat->w[j], 0, 0};
    for (int j = 0; j < 8; j++) rv[j] = (adam_ref){vec->w[j], 0, 0};
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < tm->n_tensors; i++)
            for (int64_t j = 0; j < tm->tensors[i]->n; j++)
                tm->tensors[i]->g[j] = grad_at(j + 1000 * i, t);
        const double norm = train_grad_norm(tm);
        double gscale = 1.0;
        if (clip > 0 && clip / (norm + 1e-6) < 1.0) gscale = clip / (norm + 1e-6);
        assert_true(gscale <= expect_factor_cap);
        double got_norm;
        if (train_adamw_step(tm, &c, t, &got_norm, &err)) fail_msg("%s", err.msg);
        assert_true(fabs(got_norm - norm) <= 1e-12 * norm);
        const double lr = train_lr_at(&c, t);
        for (int j = 0; j < 64; j++) {
            adam_ref_step(&rm[j], (float)grad_at(j + 1000 * 4, t) * gscale, lr, 0.1, t + 1);
            if (fabs(mat->w[j] - rm[j].w) > 1e-6 * (1 + fabs(rm[j].w)))
                fail_msg("step %d: wq[%d] = %.9g, formula %.9g", t, j, (double)mat->w[j], rm[j].w);
        }
        for (int j = 0; j < 8; j++) { /* norms: no weight decay */
            adam_ref_step(&rv[j], (float)grad_at(j + 1000 * 3, t) * gscale, lr, 0.0, t + 1);
            if (fabs(vec->w[j] - rv[j].w) > 1e-6 * (1 + fabs(rv[j].w)))
                fail_msg("step %d: attn_norm[%d] = %.9g, formula %.9g", t, j, (double)vec->w[j],
                         rv[j].w);
        }
    }
    train_model_free(tm);
}

static void test_adamw_formula(void **state)
{
    (void)state;
    train_model *tm = tiny();
    /* grad_at is indexed by 1000 * list position: attn_norm is 3, wq 4. */
    assert_string_equal(tm->tensors[2]->name, "output.weight");
    assert_string_equal(tm->tensors[3]->name, "blk.0.attn_norm.weight");
    assert_string_equal(tm->tensors[4]->name, "blk.0.attn_q.weight");
    train_model_free(tm);
    run_steps(0.0, 1.0);
}

static void test_clipping(void **state)
{
    (void)state;
    run_steps(0.05, 0.99); /* the gradients' norm is far above 0.05: always clipped */
}

static void test_schedule(void **state)
{
    (void)state;
    train_opt_cfg c = train_opt_default();
    c.lr = 2.0f;
    c.warmup = 10;
    c.total = 110;
    const struct {
        int64_t step;
        double lr;
    } want[] = {{0, 0.0},  {5, 1.0},
                {10, 2.0}, {35, 2.0 * 0.5 * (1 + cos(3.14159265358979323846 * 0.25))},
                {60, 1.0}, {110, 0.0},
                {200, 0.0}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const double got = train_lr_at(&c, want[i].step);
        if (fabs(got - want[i].lr) > 1e-6)
            fail_msg("step %lld: lr %.9g, expected %.9g", (long long)want[i].step, got, want[i].lr);
    }
    for (int64_t s = 11; s < 110; s++) assert_true(train_lr_at(&c, s) <= train_lr_at(&c, s - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_formula),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
