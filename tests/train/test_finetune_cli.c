/*
 * test_finetune_cli.c - tests `mica finetune` (src/cli/cmd_finetune.c) end to end on a random
 * F32 model: it trains, prints the validation loss each epoch, and writes an adapter that
 * model/lora.c loads against the base with the chosen targets and rank; a malformed record is
 * reported as FILE:LINE with exit status 1; records longer than --ctx are skipped and counted.
 * Skips visibly when the binary was built without the command (no Jansson).
 */
#define _GNU_SOURCE /* wait4 in cli_run.h */
#include "cli/cli_run.h"

#include "model/lora.h"
#include "model/model_synth.h"

typedef struct paths {
    char model[512], train[512], val[512], bad[512], out[512];
} paths;

static void setup_files(paths *p)
{
    mica_err err;
    run_tmp_path(p->model, sizeof p->model, "ft", "base.gguf");
    run_tmp_path(p->train, sizeof p->train, "ft", "train.jsonl");
    run_tmp_path(p->val, sizeof p->val, "ft", "val.jsonl");
    run_tmp_path(p->bad, sizeof p->bad, "ft", "bad.jsonl");
    run_tmp_path(p->out, sizeof p->out, "ft", "adapter.gguf");
    model_synth_params sp = model_synth_default_params();
    sp.type = GGUF_T_F32;
    if (model_synth_write(p->model, &sp, &err)) fail_msg("%s", err.msg);
    char buf[4096] = "";
    for (int i = 0; i < 10; i++) {
        char line[160];
        snprintf(line, sizeof line, "{\"prompt\": \"item %d is\", \"completion\": \" %s\"}\n", i,
                 i % 2 ? "odd" : "even");
        strcat(buf, line);
    }
    strcat(buf, "\n{\"prompt\": \"a very long prompt that will not fit in eight tokens at all\", "
                "\"completion\": \" long\"}\n");
    run_write_text(p->train, buf);
    run_write_text(p->val, "{\"prompt\": \"item 12 is\", \"completion\": \" even\"}\n");
    run_write_text(p->bad, "{\"prompt\": \"x\", \"completion\": \"y\"}\n{\"prompt\": 1}\n");
}

static void cleanup(const paths *p)
{
    unlink(p->model);
    unlink(p->train);
    unlink(p->val);
    unlink(p->bad);
    unlink(p->out);
}

static void test_finetune_writes_adapter(void **state)
{
    (void)state;
    run_skip_without("finetune");
    paths p;
    setup_files(&p);
    const char *args[] = {"finetune", "-m",       p.model, "--train",  p.train,    "--val",
                          p.val,      "-o",       p.out,   "--epochs", "2",        "--batch",
                          "4",        "--lora-r", "4",     "--target", "q,v,down", "--ctx",
                          "40",       "-t",       "2",     NULL};
    run_result r = run_mica(args);
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    assert_non_null(strstr(r.err, "epoch 2/2"));
    assert_non_null(strstr(r.err, "validation loss"));
    assert_non_null(strstr(r.err, "1 records longer than 40 tokens skipped"));
    run_free(&r);
    mica_err err;
    model *m;
    lora_adapter *a;
    if (model_load(&m, p.model, &err)) fail_msg("%s", err.msg);
    if (lora_load(&a, m, p.out, &err)) fail_msg("%s", err.msg);
    for (int il = 0; il < m->hp.n_layer; il++) {
        assert_non_null(lora_find(a, il, LORA_ATTN_Q));
        assert_non_null(lora_find(a, il, LORA_ATTN_V));
        assert_non_null(lora_find(a, il, LORA_FFN_DOWN));
        assert_null(lora_find(a, il, LORA_ATTN_K));
        assert_int_equal(lora_find(a, il, LORA_ATTN_Q)->rank, 4);
    }
    assert_true(lora_alpha(a) == 32.0f);
    lora_free(a);
    model_free(m);
    cleanup(&p);
}

static void test_finetune_bad_record(void **state)
{
    (void)state;
    run_skip_without("finetune");
    paths p;
    setup_files(&p);
    const char *args[] = {"finetune", "-m", p.model, "--train", p.bad, "-o", p.out, NULL};
    run_result r = run_mica(args);
    assert_int_equal(r.status, 1);
    char want[600];
    snprintf(want, sizeof want, "mica: %s:2: expected \"prompt\" and \"completion\"", p.bad);
    if (!strstr(r.err, want)) fail_msg("stderr: %s (expected '%s')", r.err, want);
    assert_false(tu_exists(p.out));
    run_free(&r);
    cleanup(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finetune_writes_adapter),
        cmocka_unit_test(test_finetune_bad_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
