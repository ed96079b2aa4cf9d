/*
 * test_sched.c - continuous batching on stories260K (a real pretrained model): requests run
 * together give the same greedy tokens as the same requests run one at a time, also when
 * they queue, are paused for more important ones (KV kept, or recomputed) or run on the
 * scheduler's own thread; a VIP request starts within one step while standard ones fill
 * every slot, and every standard one still finishes; aging lets a low priority through a
 * stream of high ones; cancellation frees the slot within one step; logprobs are the model's
 * log-softmax; bad requests are refused with a reason. Also mica_decode_multi itself.
 */
#include "test_util.h"

#include "engine/sched.h"

#include <math.h>
#include <pthread.h>

#define MAX_GEN 64

typedef struct collected {
    mica_token toks[MAX_GEN];
    int n;
    char text[4096];
    size_t text_len;
    bool done;
    eng_finish finish;
    int step_first; /* the step counter when the first token arrived */
    int n_preempted;
    float logprob[MAX_GEN];
    float top0[MAX_GEN];
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
} collected;

static int g_step; /* incremented by the tests' step loops */

static void on_event(void *ud, const eng_event *ev)
{
    collected *c = ud;
    if (c->mu) pthread_mutex_lock(c->mu);
    if (ev->text_len) {
        assert_true(c->text_len + ev->text_len < sizeof c->text);
        memcpy(c->text + c->text_len, ev->text, ev->text_len);
        c->text_len += ev->text_len;
    }
    if (!ev->done) {
        assert_true(c->n < MAX_GEN);
        if (c->n == 0) c->step_first = g_step;
        c->logprob[c->n] = ev->logprob;
        c->top0[c->n] = ev->n_top ? ev->top[0].logprob : NAN;
        c->toks[c->n++] = ev->token;
    } else {
        c->done = true;
        c->finish = ev->finish;
        c->n_preempted = ev->n_preempted;
        assert_int_equal(ev->n_gen, c->n);
    }
    if (c->cv) pthread_cond_signal(c->cv);
    if (c->mu) pthread_mutex_unlock(c->mu);
}

static mica_model *load_stories(void)
{
    char path[1024];
    TU_SHARED_PATH(path, "testdata/stories260K/models/stories260K.F32.gguf");
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    return m;
}

static const char *const prompts[8] = {
    "Once upon a time", "The little dog",  "Lily wanted to", "One day, a big",
    "Tom and Sue",      "The sun was hot", "A cat sat",      "Mom said",
};

static int tokenize(mica_model *m, const char *text, mica_token *ids)
{
    size_t n;
    mica_err err;
    if (mica_tokenize(m, text, strlen(text), true, false, ids, 64, &n, &err))
        fail_msg("%s", err.msg);
    return (int)n;
}

static eng_req_params greedy_params(mica_token *ids, int n, int max_tokens, collected *c)
{
    eng_req_params p = {0};
    p.prompt = ids;
    p.n_prompt = n;
    p.max_tokens = max_tokens;
    p.sampling = mica_sampler_default_params();
    p.sampling.temperature = 0;
    p.priority = 1;
    p.on_event = on_event;
    p.ud = c;
    return p;
}

static eng_sched *new_sched(mica_model *m, int slots, int spare, bool preempt, double aging)
{
    eng_sched_params sp = eng_sched_default_params();
    sp.n_slots = slots;
    sp.n_spare = spare;
    sp.n_ctx = 256;
    sp.n_batch = 64;
    sp.n_threads = 2;
    sp.preempt = preempt;
    sp.aging_per_s = aging;
    eng_sched *s;
    mica_err err;
    if (eng_sched_new(&s, m, &sp, &err)) fail_msg("%s", err.msg);
    return s;
}

static eng_req *submit(eng_sched *s, const eng_req_params *p)
{
    eng_req *r;
    mica_err err;
    if (eng_sched_submit(s, p, &r, &err)) fail_msg("%s", err.msg);
    return r;
}

static void run_until_idle(eng_sched *s)
{
    for (int i = 0; i < 10000 && eng_sched_step(s); i++) g_step++;
}

/* Greedy tokens of each prompt, run alone in a one-slot scheduler. */
static void reference_runs(mica_model *m, int max_tokens, collected *ref)
{
    eng_sched *s = new_sched(m, 1, 0, false, 0);
    for (int i = 0; i < 8; i++) {
        mica_token ids[64];
        const int n = tokenize(m, prompts[i], ids);
        memset(&ref[i], 0, sizeof ref[i]);
        eng_req_params p = greedy_params(ids, n, max_tokens, &ref[i]);
        eng_req *r = submit(s, &p);
        run_until_idle(s);
        assert_true(ref[i].done && ref[i].finish == ENG_FINISH_LENGTH);
        assert_int_equal(ref[i].n, max_tokens);
        eng_req_release(r);
    }
    eng_sched_free(s);
}

static void expect_same(const collected *got, const collected *want, const char *what, int i)
{
    if (!got->done) fail_msg("%s: request %d did not finish", what, i);
    if (got->n != want->n || memcmp(got->toks, want->toks, sizeof(mica_token) * (size_t)got->n))
        fail_msg("%s: request %d generated other tokens than when run alone", what, i);
    assert_int_equal(got->text_len, want->text_len);
    assert_memory_equal(got->text, want->text, got->text_len);
}

/* ---- mica_decode_multi ---------------------------------------------------------------- */

static void test_decode_multi(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    const int32_t nv = mica_model_n_vocab(m);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = 64;
    cp.n_seq = 3;
    cp.n_threads = 2;
    mica_context *c;
    mica_err err;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    const mica_token a[4] = {1, 400, 401, 402}, b[3] = {1, 300, 301};
    float *sep = malloc(sizeof(float) * 7 * (size_t)nv),
          *mix = malloc(sizeof(float) * 7 * (size_t)nv);
    assert_int_equal(mica_decode(c, 0, a, 4, 0, true, sep, &err), MICA_OK);
    assert_int_equal(mica_decode(c, 1, b, 3, 0, true, sep + 4 * (size_t)nv, &err), MICA_OK);
    /* The same tokens interleaved in one batch, into sequences 1 and 2. */
    const mica_batch_token t[7] = {{1, 2, 0, true},   {1, 1, 0, true},   {400, 2, 1, true},
                                   {300, 1, 1, true}, {401, 2, 2, true}, {301, 1, 2, true},
                                   {402, 2, 3, true}};
    assert_int_equal(mica_decode_multi(c, t, 7, mix, &err), MICA_OK);
    const int order_a[4] = {0, 2, 4, 6}, order_b[3] = {1, 3, 5};
    for (int i = 0; i < 4; i++)
        tu_check_close("seq a", mix + order_a[i] * (size_t)nv, sep + i * (size_t)nv, (size_t)nv,
                       1e-5);
    for (int i = 0; i < 3; i++)
        tu_check_close("seq b", mix + order_b[i] * (size_t)nv, sep + (4 + i) * (size_t)nv,
                       (size_t)nv, 1e-5);
    assert_int_equal(mica_seq_len(c, 1), 3);
    assert_int_equal(mica_seq_len(c, 2), 4);
    /* A gap in a sequence's positions is refused and nothing of the batch is kept. */
    const mica_batch_token bad[2] = {{5, 1, 3, true}, {6, 2, 5, true}};
    assert_int_equal(mica_decode_multi(c, bad, 2, mix, &err), MICA_ERANGE);
    assert_non_null(strstr(err.msg, "position 5 of sequence 2"));
    assert_int_equal(mica_seq_len(c, 1), 3);
    const mica_batch_token bad_tok[1] = {{nv, 0, 4, true}};
    assert_int_equal(mica_decode_multi(c, bad_tok, 1, mix, &err), MICA_ERANGE);
    free(sep);
    free(mix);
    mica_context_free(c);
    mica_model_free(m);
}

/* ---- batching gives the same tokens --------------------------------------------------- */

static void run_together(mica_model *m, int slots, int spare, const collected *ref, int max_tokens)
{
    eng_sched *s = new_sched(m, slots, spare, true, 0);
    collected got[8];
    mica_token ids[8][64];
    eng_req *reqs[8];
    for (int i = 0; i < 8; i++) {
        memset(&got[i], 0, sizeof got[i]);
        const int n = tokenize(m, prompts[i], ids[i]);
        eng_req_params p = greedy_params(ids[i], n, max_tokens, &got[i]);
        reqs[i] = submit(s, &p);
    }
    run_until_idle(s);
    char what[64];
    snprintf(what, sizeof what, "%d slots", slots);
    for (int i = 0; i < 8; i++) {
        expect_same(&got[i], &ref[i], what, i);
        eng_req_release(reqs[i]);
    }
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.n_running + st.n_waiting, 0);
    eng_sched_free(s);
}

static void test_concurrent_equals_sequential(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    collected ref[8];
    reference_runs(m, 40, ref);
    run_together(m, 8, 0, ref, 40); /* all at once */
    run_together(m, 3, 1, ref, 40); /* queueing */
    mica_model_free(m);
}

/* ---- priorities ---------------------------------------------------------------------- */

static void check_preemption(mica_model *m, int spare, const collected *ref)
{
    eng_sched *s = new_sched(m, 2, spare, true, 0);
    collected std_out[6], vip_out[2];
    mica_token ids[8][64];
    eng_req *reqs[8];
    for (int i = 0; i < 6; i++) {
        memset(&std_out[i], 0, sizeof std_out[i]);
        const int n = tokenize(m, prompts[i], ids[i]);
        eng_req_params p = greedy_params(ids[i], n, 40, &std_out[i]);
        reqs[i] = submit(s, &p);
    }
    for (int i = 0; i < 3; i++, g_step++) assert_true(eng_sched_step(s));
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.n_running, 2);
    assert_int_equal(st.n_waiting, 4);
    for (int i = 0; i < 2; i++) {
        memset(&vip_out[i], 0, sizeof vip_out[i]);
        const int n = tokenize(m, prompts[6 + i], ids[6 + i]);
        eng_req_params p = greedy_params(ids[6 + i], n, 40, &vip_out[i]);
        p.priority = 2;
        reqs[6 + i] = submit(s, &p);
    }
    const int submitted_at = g_step;
    assert_true(eng_sched_step(s));
    g_step++;
    /* Both VIP requests ran their prompt and produced a token in the very next step. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(vip_out[i].n, 1);
        assert_int_equal(vip_out[i].step_first, submitted_at);
    }
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.running[2], 2);
    assert_int_equal(st.n_preemptions, 2);
    run_until_idle(s);
    /* Nobody starved, and pausing (KV kept or recomputed) changed no token. */
    for (int i = 0; i < 6; i++) expect_same(&std_out[i], &ref[i], "standard", i);
    for (int i = 0; i < 2; i++) expect_same(&vip_out[i], &ref[6 + i], "vip", i);
    assert_true(std_out[0].n_preempted + std_out[1].n_preempted == 2);
    for (int i = 0; i < 8; i++) eng_req_release(reqs[i]);
    eng_sched_free(s);
}

static void test_vip_preempts_without_starving(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    collected ref[8];
    reference_runs(m, 40, ref);
    check_preemption(m, 2, ref); /* paused sequences keep their KV rows */
    check_preemption(m, 0, ref); /* no spare row: paused sequences are recomputed */
    mica_model_free(m);
}

/* One slot, no preemption, a stream of VIP requests: without aging the standard request
 * waits behind every one of them; with aging it gets through. */
static bool standard_gets_through(mica_model *m, double aging, int max_steps)
{
    eng_sched *s = new_sched(m, 1, 0, false, aging);
    mica_token ids[64];
    const int n = tokenize(m, prompts[0], ids);
    collected std_out = {0}, vip_out[2];
    eng_req_params p = greedy_params(ids, n, 4, &std_out);
    eng_req *std_req = submit(s, &p), *vip[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        memset(&vip_out[k], 0, sizeof vip_out[k]);
        p = greedy_params(ids, n, 4, &vip_out[k]);
        p.priority = 3;
        vip[k] = submit(s, &p);
    }
    int steps = 0;
    for (; steps < max_steps && !std_out.done; steps++, g_step++) {
        eng_sched_step(s);
        for (int k = 0; k < 2; k++) /* keep one VIP request waiting at all times */
            if (vip_out[k].done) {
                eng_req_release(vip[k]);
                memset(&vip_out[k], 0, sizeof vip_out[k]);
                p = greedy_params(ids, n, 4, &vip_out[k]);
                p.priority = 3;
                vip[k] = submit(s, &p);
            }
    }
    const bool through = std_out.done;
    eng_sched_free(s);
    eng_req_release(std_req);
    for (int k = 0; k < 2; k++) eng_req_release(vip[k]);
    return through;
}

static void test_aging_prevents_starvation(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    assert_false(standard_gets_through(m, 0.0, 300));
    assert_true(standard_gets_through(m, 200.0, 100000));
    mica_model_free(m);
}

/* ---- cancellation, logprobs, bad requests ---------------------------------------------- */

static void test_cancel_frees_slot(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    eng_sched *s = new_sched(m, 2, 0, true, 0);
    mica_token ids[64];
    const int n = tokenize(m, prompts[0], ids);
    collected a = {0}, b = {0}, c = {0};
    eng_req_params p = greedy_params(ids, n, 50, &a);
    eng_req *ra = submit(s, &p);
    p.ud = &b;
    eng_req *rb = submit(s, &p);
    p.ud = &c;
    eng_req *rc = submit(s, &p); /* waits: two slots */
    for (int i = 0; i < 3; i++) eng_sched_step(s);
    eng_req_cancel(ra);
    eng_req_cancel(rc);
    eng_sched_step(s);
    assert_true(a.done && a.finish == ENG_FINISH_CANCELLED);
    assert_true(c.done && c.finish == ENG_FINISH_CANCELLED);
    assert_int_equal(c.n, 0);
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.n_running, 1);
    assert_int_equal(st.n_waiting, 0);
    assert_false(b.done);
    eng_req_release(ra);
    eng_req_release(rc);
    run_until_idle(s);
    assert_true(b.done && b.finish == ENG_FINISH_LENGTH);
    eng_req_release(rb);
    eng_sched_free(s);
    mica_model_free(m);
}

static void test_logprobs_are_log_softmax(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    const int32_t nv = mica_model_n_vocab(m);
    mica_token ids[64];
    const int n = tokenize(m, prompts[0], ids);
    eng_sched *s = new_sched(m, 1, 0, true, 0);
    collected got = {0};
    eng_req_params p = greedy_params(ids, n, 3, &got);
    p.logprobs = true;
    p.top_logprobs = 5;
    eng_req *r = submit(s, &p);
    run_until_idle(s);
    eng_req_release(r);
    eng_sched_free(s);
    /* Independently: the logits of the prompt through the plain API. */
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = 64;
    mica_context *c;
    mica_err err;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    float *logits = malloc(sizeof(float) * (size_t)nv);
    assert_int_equal(mica_decode(c, 0, ids, n, 0, false, logits, &err), MICA_OK);
    double max = -INFINITY, sum = 0;
    for (int i = 0; i < nv; i++) max = logits[i] > max ? logits[i] : max;
    for (int i = 0; i < nv; i++) sum += exp(logits[i] - max);
    const double want = logits[got.toks[0]] - max - log(sum);
    assert_true(fabs(got.logprob[0] - want) < 1e-4);
    assert_true(fabs(got.top0[0] - want) < 1e-4); /* greedy: the chosen token is the top one */
    free(logits);
    mica_context_free(c);
    mica_model_free(m);
}

static void test_bad_requests(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    eng_sched_params sp = eng_sched_default_params();
    sp.n_slots = 1;
    sp.n_ctx = 16;
    sp.n_batch = 8;
    sp.max_waiting = 2;
    eng_sched *s;
    mica_err err;
    if (eng_sched_new(&s, m, &sp, &err)) fail_msg("%s", err.msg);
    mica_token ids[32];
    for (int i = 0; i < 32; i++) ids[i] = 300 + i;
    collected c = {0};
    eng_req *r;
    eng_req_params p = greedy_params(ids, 20, 4, &c);
    assert_int_equal(eng_sched_submit(s, &p, &r, &err), MICA_ERANGE);
    assert_non_null(strstr(err.msg, "20 tokens"));
    assert_non_null(strstr(err.msg, "16"));
    p = greedy_params(ids, 4, 4, &c);
    p.priority = ENG_MAX_PRIORITY + 1;
    assert_int_equal(eng_sched_submit(s, &p, &r, &err), MICA_EINVAL);
    p.priority = 1;
    ids[0] = mica_model_n_vocab(m);
    assert_int_equal(eng_sched_submit(s, &p, &r, &err), MICA_EINVAL);
    ids[0] = 300;
    eng_req *ok[2];
    for (int i = 0; i < 2; i++) ok[i] = submit(s, &p);
    assert_int_equal(eng_sched_submit(s, &p, &r, &err), MICA_EBUSY); /* the queue is full */
    assert_null(r);
    eng_sched_free(s); /* finishes the queued ones as cancelled */
    for (int i = 0; i < 2; i++) eng_req_release(ok[i]);
    mica_model_free(m);
}

/* ---- the scheduler's own thread ------------------------------------------------------- */

static void test_thread(void **state)
{
    (void)state;
    mica_model *m = load_stories();
    collected ref[8];
    reference_runs(m, 20, ref);
    eng_sched *s = new_sched(m, 4, 2, true, 0.1);
    mica_err err;
    assert_int_equal(eng_sched_start(s, &err), MICA_OK);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    collected got[8];
    mica_token ids[8][64];
    eng_req *reqs[8];
    for (int i = 0; i < 8; i++) {
        memset(&got[i], 0, sizeof got[i]);
        got[i].mu = &mu;
        got[i].cv = &cv;
        const int n = tokenize(m, prompts[i], ids[i]);
        eng_req_params p = greedy_params(ids[i], n, 20, &got[i]);
        p.priority = i % 3;
        reqs[i] = submit(s, &p);
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 8; i++)
        while (!got[i].done) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 8; i++) {
        expect_same(&got[i], &ref[i], "thread", i);
        eng_req_release(reqs[i]);
    }
    eng_sched_free(s);
    mica_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_multi),
        cmocka_unit_test(test_concurrent_equals_sequential),
        cmocka_unit_test(test_vip_preempts_without_starving),
        cmocka_unit_test(test_aging_prevents_starvation),
        cmocka_unit_test(test_cancel_frees_slot),
        cmocka_unit_test(test_logprobs_are_log_softmax),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
