/*
 * test_sensors.c - the sensor-analysis dataset against the thresholds docs/sensors.md
 * publishes (written out again here, not taken from the generator): every reading's level
 * and every record's status follow the table; the answer names the status in the prompt's
 * language and task vocabulary, copies the number of every out-of-range reading exactly and no
 * normal one; all statuses occur often; the same seed gives the same records; JSON lines.
 */
#define _GNU_SOURCE
#include "test_util.h"

#include "data/data.h"

#include <math.h>
#include <stdlib.h>

/* docs/sensors.md: normal range, warning range (outside: critical), canonical units. */
static const double doc[2][DATA_N_SENSORS][4] = {
    {{10, 35, 0, 45},
     {30, 70, 20, 85},
     {95, 105, 90, 110},
     {-1e9, 4.5, -1e9, 7.1},
     {210, 240, 200, 250},
     {-1e9, 1000, -1e9, 2000}},
    {{2, 8, 0, 12},
     {40, 80, 30, 90},
     {97, 103, 93, 107},
     {-1e9, 2.8, -1e9, 4.5},
     {216, 244, 207, 253},
     {-1e9, 800, -1e9, 1500}},
};

static data_level doc_level(data_task task, const data_sensor_reading *r)
{
    double v = strtod(r->value, NULL);
    if (!strcmp(r->unit, "hPa")) v /= 10;
    const double *t = doc[task][r->sensor];
    if (v >= t[0] && v <= t[1]) return DATA_NORMAL;
    return v >= t[2] && v <= t[3] ? DATA_WARNING : DATA_CRITICAL;
}

static bool has(const core_buf *b, const char *s)
{
    return b->len && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

static void check_record(const data_record *r)
{
    data_level worst = DATA_NORMAL;
    for (int i = 0; i < r->n_readings; i++) {
        const data_sensor_reading *x = &r->readings[i];
        const data_level want = doc_level(r->task, x);
        if (x->level != want)
            fail_msg("%.*s: %s%s is level %d, the table says %d", (int)r->prompt.len,
                     r->prompt.data, x->value, x->unit, x->level, want);
        if (want > worst) worst = want;
        char text[48];
        snprintf(text, sizeof text, "%s%s%s", x->value,
                 r->lang == DATA_EN && strcmp(x->unit, "°C") && strcmp(x->unit, "%") ? " " : "",
                 x->unit);
        assert_true(has(&r->prompt, text));
        /* Out-of-range readings are quoted exactly; normal ones are not mentioned. */
        if (has(&r->answer, text) != (want != DATA_NORMAL))
            fail_msg("answer '%.*s' and reading %s (level %d)", (int)r->answer.len, r->answer.data,
                     text, want);
    }
    assert_int_equal(r->status, worst);
    assert_int_equal(data_answer_level(r->task, r->answer.data, r->answer.len), worst);
    assert_true(has(&r->answer, r->lang == DATA_ZH ? "状态:" : "Status: "));
    assert_true(has(&r->answer, data_level_label(r->task, r->lang, worst)));
}

static void test_records_follow_the_table(void **state)
{
    (void)state;
    for (int task = 0; task < 2; task++) {
        const data_sensors_opts o = {.seed = 77, .zh = true, .en = true, .task = task};
        long counts[3] = {0}, langs[2] = {0};
        for (uint64_t i = 0; i < 3000; i++) {
            data_record r;
            mica_err err;
            if (data_sensors_record(&o, i, &r, &err)) fail_msg("%s", err.msg);
            check_record(&r);
            counts[r.status]++;
            langs[r.lang]++;
            data_record_free(&r);
        }
        for (int k = 0; k < 3; k++) assert_true(counts[k] > 3000 / 7);
        assert_true(langs[0] > 1200 && langs[1] > 1200);
    }
}

static void test_deterministic(void **state)
{
    (void)state;
    const data_sensors_opts a = {.seed = 5, .zh = true}, b = {.seed = 6, .zh = true};
    data_record r1, r2, r3;
    mica_err err;
    assert_int_equal(data_sensors_record(&a, 17, &r1, &err), MICA_OK);
    assert_int_equal(data_sensors_record(&a, 17, &r2, &err), MICA_OK);
    assert_int_equal(data_sensors_record(&b, 17, &r3, &err), MICA_OK);
    assert_int_equal(r1.prompt.len, r2.prompt.len);
    assert_memory_equal(r1.prompt.data, r2.prompt.data, r1.prompt.len);
    assert_true(r1.prompt.len != r3.prompt.len ||
                memcmp(r1.prompt.data, r3.prompt.data, r1.prompt.len));
    assert_int_equal(r1.lang, DATA_ZH);
    data_record_free(&r1);
    data_record_free(&r2);
    data_record_free(&r3);
    const data_sensors_opts none = {.seed = 1};
    assert_int_equal(data_sensors_record(&none, 0, &r1, &err), MICA_EINVAL);
    data_record_free(&r1);
}

static void test_answer_level(void **state)
{
    (void)state;
    const char *en = "Status: warning. Out of range: ...";
    const char *zh = "状态:严重。超出范围:...";
    const char *sb = "Status: shutdown.";
    assert_int_equal(data_answer_level(DATA_TASK_BASE, en, strlen(en)), DATA_WARNING);
    assert_int_equal(data_answer_level(DATA_TASK_BASE, zh, strlen(zh)), DATA_CRITICAL);
    assert_int_equal(data_answer_level(DATA_TASK_SITE_B, sb, strlen(sb)), DATA_CRITICAL);
    assert_int_equal(data_answer_level(DATA_TASK_BASE, sb, strlen(sb)), -1);
    assert_int_equal(data_answer_level(DATA_TASK_BASE, "warning", 7), -1);
}

static void test_jsonl_line(void **state)
{
    (void)state;
    const data_sensors_opts o = {.seed = 2, .en = true, .task = DATA_TASK_SITE_B};
    data_record r;
    mica_err err;
    assert_int_equal(data_sensors_record(&o, 0, &r, &err), MICA_OK);
    core_buf line;
    core_buf_init(&line, 1 << 16);
    assert_int_equal(data_record_jsonl(&r, &line), MICA_OK);
    assert_true(line.len > 0 && line.data[line.len - 1] == '\n');
    assert_non_null(strstr(line.data, "\"task\":\"site-b\""));
    assert_non_null(strstr(line.data, "\"lang\":\"en\""));
    core_buf_free(&line);
    data_record_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_follow_the_table),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_answer_level),
        cmocka_unit_test(test_jsonl_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
