/*
 * test_torch_ref.c - src/train against PyTorch: the loss and every parameter's gradient of
 * small llama models from scratch (dense with grouped-query attention, and Mixtral-style MoE
 * with top-2 routing) equal what PyTorch's autograd computes from the same GGUF file and batch
 * (tests/train/torch_ref.py, the formulas written again in torch). Tolerances as llm.c's
 * test against PyTorch: the loss within 1e-5 relative, each tensor's gradients within 1e-3 of
 * its largest gradient. Also prints training tokens/s of both on the same model and threads.
 * Skips visibly when no python3 with torch is installed (Debian: python3-torch).
 */
#include "train_test_util.h"

#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#define SCRIPT MICA_SOURCE_DIR "/tests/train/torch_ref.py"

enum { NS = 2, NT = 12 };

/* A python3 that imports torch: the one on PATH, else Debian's. */
static const char *torch_python(void)
{
    static const char *const candidates[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", candidates[i]);
        if (system(cmd) == 0) return candidates[i];
    }
    return NULL;
}

/* Random tokens; every third position has no target. */
static void write_batch(const char *path, int32_t *tokens, int32_t *targets)
{
    core_rng r;
    core_rng_seed(&r, 11);
    for (int i = 0; i < NS * NT; i++) {
        tokens[i] = (int32_t)core_rng_below(&r, 64);
        targets[i] = i % 3 == 2 ? -1 : (int32_t)core_rng_below(&r, 64);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    const int32_t dims[2] = {NS, NT};
    fwrite(dims, sizeof dims, 1, f);
    fwrite(tokens, sizeof(int32_t), NS * NT, f);
    fwrite(targets, sizeof(int32_t), NS * NT, f);
    fclose(f);
}

static void compare(const train_model *tm, float loss, const char *ref_path)
{
    size_t n;
    char *ref = tu_read_file(ref_path, &n);
    double ref_loss;
    memcpy(&ref_loss, ref, sizeof ref_loss);
    printf("loss: mica %.7f, torch %.7f\n", (double)loss, ref_loss);
    assert_true(fabs((double)loss - ref_loss) <= 1e-5 * fabs(ref_loss));
    size_t off = sizeof ref_loss;
    double worst = 0.0;
    for (int i = 0; i < tm->n_tensors; i++) {
        const train_tensor *t = tm->tensors[i];
        assert_true(off + (size_t)t->n * sizeof(float) <= n);
        const float *g = (const float *)(ref + off);
        double max_ref = 0.0, max_diff = 0.0;
        for (int64_t j = 0; j < t->n; j++) {
            max_ref = fmax(max_ref, fabs((double)g[j]));
            max_diff = fmax(max_diff, fabs((double)g[j] - (double)t->g[j]));
        }
        const double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
        worst = fmax(worst, rel);
        if (rel > 1e-3)
            fail_msg("%s: gradients differ by %g of the largest (%g)", t->name, rel, max_ref);
        off += (size_t)t->n * sizeof(float);
    }
    assert_int_equal(off, n);
    printf("gradients of %d tensors: largest difference %.2e of the tensor's largest gradient\n",
           tm->n_tensors, worst);
    free(ref);
}

/* Training tokens/s of mica (forward, backward, AdamW) on this batch. */
static double mica_speed(train_model *tm, train_work *w, tensor_pool *pool, const int32_t *tokens,
                         const int32_t *targets, int steps)
{
    mica_err err;
    train_opt_cfg c = train_opt_default();
    const double t0 = core_now();
    for (int s = 0; s < steps; s++) {
        float loss;
        train_model_zero_grad(tm);
        if (train_forward(tm, w, pool, tokens, targets, true, 0, &loss, &err) ||
            train_backward(tm, w, pool, 1.0f, &err) || train_adamw_step(tm, &c, s, NULL, &err))
            fail_msg("%s", err.msg);
    }
    return steps * NS * NT / (core_now() - t0);
}

static void check_against_torch(int n_expert)
{
    const char *py = torch_python();
    if (!py) {
        printf("SKIP: no python3 with torch (apt install python3-torch); PyTorch comparison "
               "skipped\n");
        skip();
    }
    char gguf[512], batch[512], out[512];
    snprintf(gguf, sizeof gguf, "%s/torch_%d_%d.gguf", tu_tmpdir(), (int)getpid(), n_expert);
    snprintf(batch, sizeof batch, "%s/torch_%d_%d.bin", tu_tmpdir(), (int)getpid(), n_expert);
    snprintf(out, sizeof out, "%s/torch_%d_%d.out", tu_tmpdir(), (int)getpid(), n_expert);
    mica_err err;
    train_model *tm = train_test_model(64, n_expert, 7);
    if (train_model_write(tm, gguf, NULL, &err)) fail_msg("%s", err.msg);
    int32_t tokens[NS * NT], targets[NS * NT];
    write_batch(batch, tokens, targets);
    tensor_pool *pool = NULL;
    train_work *w = NULL;
    if (tensor_pool_new(&pool, 2, &err) || train_work_new(&w, tm, NS, NT, &err))
        fail_msg("%s", err.msg);
    float loss;
    train_model_zero_grad(tm);
    if (train_forward(tm, w, pool, tokens, targets, true, 0, &loss, &err) ||
        train_backward(tm, w, pool, 1.0f, &err))
        fail_msg("%s", err.msg);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s %s %s %s", py, SCRIPT, gguf, batch, out);
    assert_int_equal(system(cmd), 0);
    compare(tm, loss, out);
    const double ours = mica_speed(tm, w, pool, tokens, targets, 50);
    snprintf(cmd, sizeof cmd, "%s %s %s %s %s --bench 50 2", py, SCRIPT, gguf, batch, out);
    printf("training tokens/s on 2 threads (%s): mica %.0f, PyTorch ", n_expert ? "MoE" : "dense",
           ours);
    fflush(stdout);
    assert_int_equal(system(cmd), 0);
    train_work_free(w);
    tensor_pool_free(pool);
    train_model_free(tm);
    unlink(gguf);
    unlink(batch);
    unlink(out);
}

static void test_dense_equals_torch(void **state)
{
    (void)state;
    check_against_torch(0);
}

static void test_moe_equals_torch(void **state)
{
    (void)state;
    check_against_torch(4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_equals_torch),
        cmocka_unit_test(test_moe_equals_torch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
