/*
 * test_gguf.c - tests src/gguf: reading the reference models (facts from the testdata
 * READMEs and the vocabulary JSON, not from our own output), the type tables, lookups,
 * kv formatting, the writer (round trip of every value type, copy of a real model, which
 * must come out byte-identical to llama.cpp's file) and a hand-built GGUF v2 file.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "gguf_bytes.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <unistd.h>

#define MODELS  "testdata/llamacpp/models"
#define STORIES "testdata/stories260K/models"
#define VOCAB   "testdata/llamacpp/tokenizer/synthetic-spm-512"

static gguf_file *open_ok(const char *path)
{
    gguf_file *f = NULL;
    mica_err err = {0};
    if (gguf_open(&f, path, &err) != MICA_OK) fail_msg("gguf_open %s: %s", path, err.msg);
    assert_non_null(f);
    return f;
}

static gguf_file *open_model(const char *dir, const char *name)
{
    char path[1024], rel[512];
    snprintf(rel, sizeof rel, "%s/%s", dir, name);
    TU_SHARED_PATH(path, rel);
    return open_ok(path);
}

static const gguf_kv *kv_ok(const gguf_file *f, const char *key)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) fail_msg("%s: key %s missing", f->path, key);
    return kv;
}

static const gguf_tensor *tensor_ok(const gguf_file *f, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) fail_msg("%s: tensor %s missing", f->path, name);
    return t;
}

static int64_t int_ok(const gguf_file *f, const char *key)
{
    int64_t v = -12345;
    mica_err err = {0};
    if (gguf_get_int(f, key, &v, &err)) fail_msg("%s", err.msg);
    return v;
}

static void assert_str(gguf_str s, const char *want)
{
    if (!gguf_str_eq(s, want)) fail_msg("got \"%.*s\" want \"%s\"", (int)s.len, s.ptr, want);
}

static void assert_shape(const gguf_tensor *t, uint32_t type, uint32_t n_dims, int64_t ne0,
                         int64_t ne1, int64_t ne2)
{
    if (t->type != type || t->n_dims != n_dims || t->ne[0] != ne0 || t->ne[1] != ne1 ||
        t->ne[2] != ne2 || t->ne[3] != 1)
        fail_msg("tensor %s: got %s n_dims %u ne [%lld %lld %lld %lld], want %s %u [%lld %lld "
                 "%lld]",
                 t->name, gguf_ttype_name(t->type), t->n_dims, (long long)t->ne[0],
                 (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                 gguf_ttype_name(type), n_dims, (long long)ne0, (long long)ne1, (long long)ne2);
}

static uint64_t round_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

/* ---- type tables --------------------------------------------------------------------- */

static void test_ttype_layout(void **state)
{
    /* Block sizes and bytes from the table (ggml-common.h). */
    static const struct {
        uint32_t type, bs, ts;
        const char *name;
    } want[] = {
        {0, 1, 4, "F32"},       {1, 1, 2, "F16"},       {30, 1, 2, "BF16"},
        {2, 32, 18, "Q4_0"},    {3, 32, 20, "Q4_1"},    {6, 32, 22, "Q5_0"},
        {7, 32, 24, "Q5_1"},    {8, 32, 34, "Q8_0"},    {9, 32, 36, "Q8_1"},
        {10, 256, 84, "Q2_K"},  {11, 256, 110, "Q3_K"}, {12, 256, 144, "Q4_K"},
        {13, 256, 176, "Q5_K"}, {14, 256, 210, "Q6_K"}, {15, 256, 292, "Q8_K"},
        {24, 1, 1, "I8"},       {25, 1, 2, "I16"},      {26, 1, 4, "I32"},
        {27, 1, 8, "I64"},      {28, 1, 8, "F64"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint32_t bs = 0, ts = 0;
        assert_true(gguf_ttype_layout(want[i].type, &bs, &ts));
        assert_int_equal(bs, want[i].bs);
        assert_int_equal(ts, want[i].ts);
        assert_string_equal(gguf_ttype_name(want[i].type), want[i].name);
    }
    static const uint32_t unknown[] = {4, 5, 16, 17, 20, 23, 29, 31, 35, 39, 40, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        uint32_t bs = 7, ts = 7;
        assert_false(gguf_ttype_layout(unknown[i], &bs, &ts));
        assert_int_equal(bs, 7);
    }
    assert_string_equal(gguf_ttype_name(4), "type 4");
    assert_string_equal(gguf_vtype_name(GGUF_VT_U32), "u32");
    assert_string_equal(gguf_vtype_name(GGUF_VT_STRING), "string");
    assert_true(gguf_vtype_is_int(GGUF_VT_I64));
    assert_false(gguf_vtype_is_int(GGUF_VT_F32));
    assert_false(gguf_vtype_is_int(GGUF_VT_BOOL));
}

/* ---- every reference model ----------------------------------------------------------- */

/* Structural facts any valid file must satisfy, checked against the file's size on disk:
 * lookups find each entry, data pointers are aligned and inside the mapping, sizes follow
 * the type table, and the file ends with the last tensor's padded data (llama.cpp and the
 * Python writer both pad it). */
static void check_structure(const gguf_file *f, uint64_t disk_size)
{
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, 32);
    assert_int_equal(f->size, disk_size);
    assert_true(f->n_tensors > 0);
    char buf[256];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)f->kv[i].key.len, f->kv[i].key.ptr);
        assert_ptr_equal(gguf_find(f, key), &f->kv[i]);
        gguf_kv_format(&f->kv[i], buf, sizeof buf);
        assert_true(strlen(buf) > 0);
    }
    uint64_t end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        uint32_t bs, ts;
        assert_ptr_equal(gguf_find_tensor(f, t->name), t);
        assert_true(gguf_ttype_layout(t->type, &bs, &ts));
        assert_int_equal(t->nbytes, (uint64_t)gguf_tensor_nelements(t) / bs * ts);
        assert_int_equal((uintptr_t)t->data % f->alignment, 0);
        const uint8_t *d = t->data;
        assert_true(d >= f->base + f->data_offset && d + t->nbytes <= f->base + f->size);
        assert_int_equal(t->offset, end);
        end = round_up(t->offset + t->nbytes, f->alignment);
    }
    assert_int_equal(f->data_offset % f->alignment, 0);
    assert_int_equal(disk_size, f->data_offset + end);
    assert_null(gguf_find(f, "no.such.key"));
    assert_null(gguf_find_tensor(f, "no.such.tensor"));
}

static int open_dir_models(const char *rel)
{
    char dir[1024];
    TU_SHARED_PATH(dir, rel);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0) continue;
        char path[2048];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        assert_int_equal(stat(path, &st), 0);
        gguf_file *f = open_ok(path);
        check_structure(f, (uint64_t)st.st_size);
        gguf_str arch;
        mica_err err;
        assert_int_equal(gguf_get_str(f, "general.architecture", &arch, &err), MICA_OK);
        gguf_close(f);
        n++;
    }
    closedir(d);
    return n;
}

static void test_open_every_model(void **state)
{
    assert_int_equal(open_dir_models(MODELS), 32); /* 8 models x 4 types (README 2) */
    assert_int_equal(open_dir_models(STORIES), 3);
}

/* llama.cpp's vocabulary files have no tensors and end right after the metadata, without
 * padding; they must open. */
static void test_open_vocab_files(void **state)
{
    char dir[1024];
    TU_SHARED_PATH(dir, "testdata/llamacpp/tokenizer");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        gguf_file *f = open_ok(path);
        assert_int_equal(f->n_tensors, 0);
        const gguf_kv *tok;
        mica_err err;
        assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", &tok, &err), MICA_OK);
        assert_true(tok->arr_n >= 512);
        gguf_str last = gguf_arr_str(f, tok, tok->arr_n - 1);
        assert_true(last.ptr + last.len <= (const char *)f->base + f->size);
        gguf_close(f);
        n++;
    }
    closedir(d);
    assert_int_equal(n, 13); /* 12 llama.cpp vocabularies + synthetic-spm-512 */
}

/* ---- facts from the README tables ---------------------------------------------------- */

static void test_llama_dense_f32_facts(void **state)
{
    gguf_file *f = open_model(MODELS, "llama-dense.F32.gguf");
    mica_err err = {0};
    gguf_str s;
    assert_int_equal(gguf_get_str(f, "general.architecture", &s, &err), MICA_OK);
    assert_str(s, "llama");
    assert_int_equal(kv_ok(f, "llama.embedding_length")->type, GGUF_VT_U32);
    assert_int_equal(int_ok(f, "llama.embedding_length"), 64);
    assert_int_equal(int_ok(f, "llama.context_length"), 256);
    assert_int_equal(int_ok(f, "llama.feed_forward_length"), 192);
    assert_int_equal(int_ok(f, "llama.attention.head_count_kv"), 2);
    assert_int_equal(int_ok(f, "general.file_type"), 0);
    double eps = 0;
    assert_int_equal(kv_ok(f, "llama.attention.layer_norm_rms_epsilon")->type, GGUF_VT_F32);
    assert_int_equal(gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &eps, &err), 0);
    assert_true(eps == 9.999999747378752e-06);
    double theta = 0;
    assert_int_equal(gguf_get_float(f, "llama.rope.freq_base", &theta, &err), MICA_OK);
    assert_true(theta == 10000.0);

    /* Vocabulary (README "Synthetic vocabulary"). */
    const gguf_kv *tok;
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", &tok, &err), MICA_OK);
    assert_int_equal(tok->arr_type, GGUF_VT_STRING);
    assert_int_equal(tok->arr_n, 512);
    assert_str(gguf_arr_str(f, tok, 0), "<unk>");
    assert_str(gguf_arr_str(f, tok, 1), "<s>");
    assert_str(gguf_arr_str(f, tok, 3), "<0x00>");
    assert_str(gguf_arr_str(f, tok, 258), "<0xFF>");
    assert_str(gguf_arr_str(f, tok, 259), "\xe2\x96\x81t"); /* "▁t" */
    assert_str(gguf_arr_str(f, tok, 511), "'");
    const gguf_kv *scores = kv_ok(f, "tokenizer.ggml.scores");
    assert_int_equal(scores->type, GGUF_VT_ARRAY);
    assert_int_equal(scores->arr_type, GGUF_VT_F32);
    assert_int_equal(scores->arr_n, 512);
    assert_true(gguf_arr_float(scores, 259) == 0.0 && signbit(gguf_arr_float(scores, 259)));
    assert_true(gguf_arr_float(scores, 260) == -1.0);
    assert_true(gguf_arr_float(scores, 482) == -1000.0);
    assert_true(gguf_arr_float(scores, 511) == -1029.0);
    const gguf_kv *types = kv_ok(f, "tokenizer.ggml.token_type");
    assert_int_equal(types->arr_type, GGUF_VT_I32);
    assert_int_equal(gguf_arr_int(types, 0), 2);
    assert_int_equal(gguf_arr_int(types, 2), 3);
    assert_int_equal(gguf_arr_int(types, 100), 6);
    assert_int_equal(gguf_arr_int(types, 300), 1);
    assert_int_equal(int_ok(f, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(int_ok(f, "tokenizer.ggml.eos_token_id"), 2);
    bool add_bos = false, add_eos = true;
    assert_int_equal(gguf_get_bool_opt(f, "tokenizer.ggml.add_bos_token", &add_bos, &err), 0);
    assert_int_equal(gguf_get_bool_opt(f, "tokenizer.ggml.add_eos_token", &add_eos, &err), 0);
    assert_true(add_bos);
    assert_false(add_eos);

    /* Tensors: 2 layers x 9 + token_embd, output_norm, output. */
    assert_int_equal(f->n_tensors, 21);
    assert_shape(tensor_ok(f, "blk.0.attn_k.weight"), GGUF_T_F32, 2, 64, 32, 1);
    assert_shape(tensor_ok(f, "blk.1.ffn_down.weight"), GGUF_T_F32, 2, 192, 64, 1);
    assert_shape(tensor_ok(f, "output_norm.weight"), GGUF_T_F32, 1, 64, 1, 1);
    assert_shape(tensor_ok(f, "output.weight"), GGUF_T_F32, 2, 64, 512, 1);
    gguf_close(f);
}

static void test_vocab_matches_json(void **state)
{
    char path[1024];
    TU_SHARED_PATH(path, VOCAB ".vocab.json");
    char *json = tu_read_file(path, NULL);
    gguf_file *f = open_model("testdata/llamacpp/tokenizer", "synthetic-spm-512.gguf");
    const gguf_kv *tok = kv_ok(f, "tokenizer.ggml.tokens");
    const gguf_kv *scores = kv_ok(f, "tokenizer.ggml.scores");
    const gguf_kv *types = kv_ok(f, "tokenizer.ggml.token_type");
    assert_int_equal(tok->arr_n, 512);
    /* The JSON writes one token string per line without escapes. */
    const char *p = strchr(strstr(json, "\"tokens\""), '[') + 1;
    for (uint64_t i = 0; i < 512; i++) {
        p = strchr(p, '"');
        assert_non_null(p);
        const char *q = strchr(p + 1, '"');
        assert_non_null(q);
        assert_null(memchr(p + 1, '\\', (size_t)(q - p - 1)));
        gguf_str s = gguf_arr_str(f, tok, i);
        if (s.len != (uint64_t)(q - p - 1) || memcmp(s.ptr, p + 1, s.len) != 0)
            fail_msg("token %llu: got \"%.*s\" want \"%.*s\"", (unsigned long long)i, (int)s.len,
                     s.ptr, (int)(q - p - 1), p + 1);
        p = q + 1;
    }
    double want[512];
    assert_int_equal(tu_json_numbers(json, "scores", want, 512), 512);
    for (uint64_t i = 0; i < 512; i++)
        if (gguf_arr_float(scores, i) != want[i])
            fail_msg("score %llu: got %g want %g", (unsigned long long)i, gguf_arr_float(scores, i),
                     want[i]);
    assert_int_equal(tu_json_numbers(json, "token_type", want, 512), 512);
    for (uint64_t i = 0; i < 512; i++) assert_int_equal(gguf_arr_int(types, i), (int64_t)want[i]);
    assert_int_equal(f->n_tensors, 0);
    gguf_close(f);
    free(json);
}

static void test_quantized_mixes(void **state)
{
    /* README 2 tables: Q4_0 files keep a Q8_0 output (or tied embedding). */
    gguf_file *f = open_model(MODELS, "llama-dense.Q4_0.gguf");
    assert_shape(tensor_ok(f, "output.weight"), GGUF_T_Q8_0, 2, 64, 512, 1);
    assert_shape(tensor_ok(f, "token_embd.weight"), GGUF_T_Q4_0, 2, 64, 512, 1);
    assert_shape(tensor_ok(f, "blk.0.attn_norm.weight"), GGUF_T_F32, 1, 64, 1, 1);
    assert_int_equal(int_ok(f, "general.file_type"), 2);
    /* llama-quantize moves general.quantization_version behind the tokenizer keys (the F32
     * file has it fourth). */
    assert_true(kv_ok(f, "general.quantization_version") >
                kv_ok(f, "tokenizer.ggml.add_eos_token"));
    gguf_close(f);

    f = open_model(MODELS, "qwen2-dense.Q4_0.gguf");
    assert_shape(tensor_ok(f, "token_embd.weight"), GGUF_T_Q8_0, 2, 64, 512, 1);
    assert_null(gguf_find_tensor(f, "output.weight"));
    gguf_close(f);

    f = open_model(MODELS, "qwen3moe.Q4_0.gguf");
    assert_shape(tensor_ok(f, "blk.1.attn_k.weight"), GGUF_T_Q8_0, 2, 64, 64, 1);
    assert_shape(tensor_ok(f, "blk.1.attn_q.weight"), GGUF_T_Q4_0, 2, 64, 128, 1);
    assert_shape(tensor_ok(f, "blk.0.ffn_gate_exps.weight"), GGUF_T_Q4_0, 3, 64, 64, 8);
    gguf_close(f);

    f = open_model(MODELS, "qwen2moe.Q8_0.gguf");
    assert_shape(tensor_ok(f, "blk.0.ffn_gate_inp_shexp.weight"), GGUF_T_F32, 1, 64, 1, 1);
    assert_shape(tensor_ok(f, "blk.1.ffn_down_shexp.weight"), GGUF_T_Q8_0, 2, 128, 64, 1);
    assert_int_equal(int_ok(f, "general.file_type"), 7);
    gguf_close(f);

    f = open_model(MODELS, "qwen2moe.F32.gguf");
    assert_shape(tensor_ok(f, "blk.0.ffn_gate_inp_shexp.weight"), GGUF_T_F32, 2, 64, 1, 1);
    assert_int_equal(int_ok(f, "qwen2moe.expert_shared_feed_forward_length"), 128);
    gguf_close(f);

    /* stories260K README 1 and 4. */
    f = open_model(STORIES, "stories260K.Q8_0.gguf");
    assert_int_equal(f->n_tensors, 48);
    assert_shape(tensor_ok(f, "blk.4.ffn_down.weight"), GGUF_T_F16, 2, 172, 64, 1);
    assert_shape(tensor_ok(f, "blk.4.ffn_up.weight"), GGUF_T_Q8_0, 2, 64, 172, 1);
    assert_int_equal(int_ok(f, "llama.context_length"), 512);
    gguf_close(f);
    f = open_model(STORIES, "stories260K.F32.gguf");
    assert_null(gguf_find(f, "general.file_type"));
    assert_true(gguf_str_eq(f->kv[0].key, "general.architecture"));
    assert_true(kv_ok(f, "llama.tensor_data_layout") < kv_ok(f, "llama.context_length"));
    gguf_str s;
    mica_err err;
    assert_int_equal(gguf_get_str(f, "llama.tensor_data_layout", &s, &err), MICA_OK);
    assert_str(s, "Meta AI original pth");
    gguf_close(f);
}

/* IEEE half to float, written for this test. */
static float half_to_float(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* The F16 file holds the F32 file's values rounded to half (README 2), so reading both
 * checks that every data pointer lands on the right bytes. */
static void test_f16_data_matches_f32(void **state)
{
    gguf_file *a = open_model(MODELS, "llama-dense.F32.gguf");
    gguf_file *b = open_model(MODELS, "llama-dense.F16.gguf");
    int n_f16 = 0;
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const gguf_tensor *ta = &a->tensors[i], *tb = tensor_ok(b, ta->name);
        int64_t n = gguf_tensor_nelements(ta);
        assert_int_equal(gguf_tensor_nelements(tb), n);
        const float *x = ta->data;
        for (int64_t j = 0; j < n; j++) {
            float y;
            if (tb->type == GGUF_T_F16) {
                uint16_t h;
                memcpy(&h, (const uint8_t *)tb->data + 2 * j, 2);
                y = half_to_float(h);
            } else {
                assert_int_equal(tb->type, GGUF_T_F32);
                memcpy(&y, (const uint8_t *)tb->data + 4 * j, 4);
            }
            if (!(fabsf(y - x[j]) <= fabsf(x[j]) * (1.0f / 2048) + 6e-8f))
                fail_msg("%s[%lld]: f16 %g f32 %g", ta->name, (long long)j, y, x[j]);
        }
        n_f16 += tb->type == GGUF_T_F16;
    }
    assert_int_equal(n_f16, 16); /* token_embd, output, 2 x (q k v o gate up down) */
    gguf_close(a);
    gguf_close(b);
}

/* ---- lookups and formatting ---------------------------------------------------------- */

static void test_getters_report_key_and_type(void **state)
{
    gguf_file *f = open_model(MODELS, "llama-dense.F32.gguf");
    mica_err err = {0};
    int64_t v = 99;
    double d = 7;
    gguf_str s = {"x", 1};
    assert_int_equal(gguf_get_int(f, "general.name", &v, &err), MICA_EFORMAT);
    assert_non_null(strstr(err.msg, "general.name"));
    assert_non_null(strstr(err.msg, "string"));
    assert_non_null(strstr(err.msg, f->path));
    assert_int_equal(gguf_get_int(f, "no.such", &v, &err), MICA_EFORMAT);
    assert_non_null(strstr(err.msg, "no.such"));
    assert_int_equal(gguf_get_int_opt(f, "no.such", &v, &err), MICA_OK);
    assert_int_equal(v, 99);
    assert_int_equal(gguf_get_float_opt(f, "no.such", &d, &err), MICA_OK);
    assert_true(d == 7);
    assert_int_equal(gguf_get_float(f, "llama.block_count", &d, &err), MICA_EFORMAT);
    assert_non_null(strstr(err.msg, "u32"));
    assert_int_equal(gguf_get_str_opt(f, "llama.block_count", &s, &err), MICA_EFORMAT);
    assert_int_equal(gguf_get_str_opt(f, "no.such", &s, &err), MICA_OK);
    assert_int_equal(s.len, 1);
    bool b = false;
    assert_int_equal(gguf_get_bool_opt(f, "llama.block_count", &b, &err), MICA_EFORMAT);
    const gguf_kv *kv = NULL;
    assert_int_equal(gguf_get_arr(f, "general.name", &kv, &err), MICA_EFORMAT);
    assert_int_equal(gguf_get_str(f, "tokenizer.ggml.tokens", &s, &err), MICA_EFORMAT);
    assert_non_null(strstr(err.msg, "array of string"));
    /* A bool reads as an integer. */
    assert_int_equal(gguf_get_int(f, "tokenizer.ggml.add_bos_token", &v, &err), MICA_OK);
    assert_int_equal(v, 1);
    gguf_close(f);
}

static void test_kv_format(void **state)
{
    gguf_file *f = open_model(MODELS, "llama-dense.F32.gguf");
    char buf[256];
    gguf_kv_format(kv_ok(f, "llama.embedding_length"), buf, sizeof buf);
    assert_string_equal(buf, "64");
    gguf_kv_format(kv_ok(f, "llama.attention.layer_norm_rms_epsilon"), buf, sizeof buf);
    assert_string_equal(buf, "1e-05");
    gguf_kv_format(kv_ok(f, "general.architecture"), buf, sizeof buf);
    assert_string_equal(buf, "\"llama\"");
    gguf_kv_format(kv_ok(f, "tokenizer.ggml.add_bos_token"), buf, sizeof buf);
    assert_string_equal(buf, "true");
    gguf_kv_format(kv_ok(f, "tokenizer.ggml.tokens"), buf, sizeof buf);
    assert_string_equal(buf, "[string x 512: \"<unk>\", \"<s>\", \"</s>\", \"<0x00>\", ...]");
    gguf_kv_format(kv_ok(f, "tokenizer.ggml.token_type"), buf, sizeof buf);
    assert_string_equal(buf, "[i32 x 512: 2, 3, 3, 6, ...]");
    /* A small buffer is cut, never overrun. */
    char small[8];
    memset(small, 'x', sizeof small);
    gguf_kv_format(kv_ok(f, "tokenizer.ggml.tokens"), small, 5);
    assert_string_equal(small, "[str");
    assert_int_equal(small[5], 'x');
    gguf_close(f);
}

/* ---- writer -------------------------------------------------------------------------- */

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/gguf_%d_%s", tu_tmpdir(), (int)getpid(), name);
}

static void test_writer_roundtrip(void **state)
{
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = -(INT64_C(1) << 62);
    double f64 = 3.141592653589793;
    uint64_t big = UINT64_MAX - 5;
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "first"), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 64), MICA_OK);
    assert_int_equal(gguf_writer_set_val(w, "t.u8", GGUF_VT_U8, &u8), MICA_OK);
    assert_int_equal(gguf_writer_set_val(w, "t.i8", GGUF_VT_I8, &i8), MICA_OK);
    assert_int_equal(gguf_writer_set_val(w, "t.u16", GGUF_VT_U16, &u16), MICA_OK);
    assert_int_equal(gguf_writer_set_val(w, "t.i16", GGUF_VT_I16, &i16), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "t.u32", 4000000000u), MICA_OK);
    assert_int_equal(gguf_writer_set_i32(w, "t.i32", -2000000000), MICA_OK);
    assert_int_equal(gguf_writer_set_f32(w, "t.f32", 1.5f), MICA_OK);
    assert_int_equal(gguf_writer_set_bool(w, "t.bool", true), MICA_OK);
    assert_int_equal(gguf_writer_set_u64(w, "t.u64", big), MICA_OK);
    assert_int_equal(gguf_writer_set_val(w, "t.i64", GGUF_VT_I64, &i64), MICA_OK);
    assert_int_equal(gguf_writer_set_val(w, "t.f64", GGUF_VT_F64, &f64), MICA_OK);
    assert_int_equal(gguf_writer_set_str(w, "t.str", "say \"hi\"\n"), MICA_OK);
    assert_int_equal(gguf_writer_set_str(w, "t.empty", ""), MICA_OK);
    const int16_t a16[5] = {-1, 2, -300, 32767, -32768};
    const uint64_t a64[3] = {0, 1, UINT64_MAX};
    const float af[4] = {0.5f, -2.0f, 1e-30f, 3e38f};
    const double ad[2] = {-0.25, 1e300};
    const uint8_t ab[3] = {1, 0, 1};
    const char *const as[4] = {"", "a", "\xe2\x96\x81the", "a string longer than a few bytes"};
    assert_int_equal(gguf_writer_set_arr(w, "a.i16", GGUF_VT_I16, a16, 5), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.u64", GGUF_VT_U64, a64, 3), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.f32", GGUF_VT_F32, af, 4), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.f64", GGUF_VT_F64, ad, 2), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.bool", GGUF_VT_BOOL, ab, 3), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.none", GGUF_VT_U32, NULL, 0), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "a.str", as, 4), MICA_OK);
    /* Replacing keeps the position. */
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "test"), MICA_OK);
    /* Bad arguments. */
    assert_int_equal(gguf_writer_set_arr(w, "a.bad", GGUF_VT_STRING, as, 1), MICA_EINVAL);
    assert_int_equal(gguf_writer_set_u32(w, "", 1), MICA_EINVAL);

    float f32[15];
    for (int i = 0; i < 15; i++) f32[i] = (float)i * 0.25f - 1;
    uint16_t f16[8] = {0x3c00, 0xbc00, 0, 0x7bff, 1, 2, 3, 4};
    uint8_t q8[4 * 34];
    for (int i = 0; i < (int)sizeof q8; i++) q8[i] = (uint8_t)(i * 7 + 1);
    float f3[24];
    for (int i = 0; i < 24; i++) f3[i] = (float)-i;
    mica_err err = {0};
    const int64_t ne_a[2] = {5, 3}, ne_b[1] = {8}, ne_c[2] = {64, 2}, ne_d[3] = {2, 3, 4};
    assert_int_equal(gguf_writer_add_tensor(w, "a", GGUF_T_F32, 2, ne_a, f32, &err), MICA_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "b.f16", GGUF_T_F16, 1, ne_b, f16, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "c.q8", GGUF_T_Q8_0, 2, ne_c, q8, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "d.3d", GGUF_T_F32, 3, ne_d, f3, &err), 0);

    char path[512];
    tmp_path(path, sizeof path, "roundtrip.gguf");
    assert_int_equal(gguf_writer_write(w, path, &err), MICA_OK);
    gguf_writer_free(w);

    gguf_file *f = open_ok(path);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(f->n_kv, 22);
    assert_true(gguf_str_eq(f->kv[0].key, "general.architecture"));
    assert_true(gguf_str_eq(f->kv[21].key, "a.str"));
    gguf_str s;
    assert_int_equal(gguf_get_str(f, "general.architecture", &s, &err), MICA_OK);
    assert_str(s, "test");
    static const struct {
        const char *key;
        uint32_t type;
        int64_t v;
    } ints[] = {
        {"general.alignment", GGUF_VT_U32, 64},
        {"t.u8", GGUF_VT_U8, 200},
        {"t.i8", GGUF_VT_I8, -100},
        {"t.u16", GGUF_VT_U16, 60000},
        {"t.i16", GGUF_VT_I16, -30000},
        {"t.u32", GGUF_VT_U32, 4000000000},
        {"t.i32", GGUF_VT_I32, -2000000000},
        {"t.bool", GGUF_VT_BOOL, 1},
        {"t.i64", GGUF_VT_I64, -(INT64_C(1) << 62)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        assert_int_equal(kv_ok(f, ints[i].key)->type, ints[i].type);
        assert_int_equal(int_ok(f, ints[i].key), ints[i].v);
    }
    int64_t v;
    assert_int_equal(gguf_get_int(f, "t.u64", &v, &err), MICA_ERANGE);
    assert_non_null(strstr(err.msg, "t.u64"));
    char buf[128];
    gguf_kv_format(kv_ok(f, "t.u64"), buf, sizeof buf);
    assert_string_equal(buf, "18446744073709551610");
    double d;
    assert_int_equal(gguf_get_float(f, "t.f32", &d, &err), MICA_OK);
    assert_true(d == 1.5);
    assert_int_equal(gguf_get_float(f, "t.f64", &d, &err), MICA_OK);
    assert_true(d == f64);
    assert_int_equal(gguf_get_str(f, "t.str", &s, &err), MICA_OK);
    assert_str(s, "say \"hi\"\n");
    gguf_kv_format(kv_ok(f, "t.str"), buf, sizeof buf);
    assert_string_equal(buf, "\"say \\\"hi\\\"\\n\"");
    assert_int_equal(gguf_get_str(f, "t.empty", &s, &err), MICA_OK);
    assert_int_equal(s.len, 0);

    const gguf_kv *kv = kv_ok(f, "a.i16");
    assert_int_equal(kv->arr_type, GGUF_VT_I16);
    assert_int_equal(kv->arr_n, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(gguf_arr_int(kv, (uint64_t)i), a16[i]);
    kv = kv_ok(f, "a.u64");
    assert_int_equal(gguf_arr_int(kv, 1), 1);
    assert_true(gguf_arr_float(kv, 2) == 18446744073709551615.0);
    kv = kv_ok(f, "a.f32");
    for (int i = 0; i < 4; i++) assert_true(gguf_arr_float(kv, (uint64_t)i) == (double)af[i]);
    kv = kv_ok(f, "a.f64");
    for (int i = 0; i < 2; i++) assert_true(gguf_arr_float(kv, (uint64_t)i) == ad[i]);
    kv = kv_ok(f, "a.bool");
    assert_int_equal(kv->arr_type, GGUF_VT_BOOL);
    for (int i = 0; i < 3; i++) assert_int_equal(gguf_arr_int(kv, (uint64_t)i), ab[i]);
    kv = kv_ok(f, "a.none");
    assert_int_equal(kv->arr_n, 0);
    gguf_kv_format(kv, buf, sizeof buf);
    assert_string_equal(buf, "[u32 x 0]");
    kv = kv_ok(f, "a.str");
    assert_int_equal(kv->arr_n, 4);
    for (int i = 0; i < 4; i++) assert_str(gguf_arr_str(f, kv, (uint64_t)i), as[i]);

    /* Tensors: offsets in add order, each rounded up to 64. */
    assert_int_equal(f->n_tensors, 4);
    const gguf_tensor *t = tensor_ok(f, "a");
    assert_shape(t, GGUF_T_F32, 2, 5, 3, 1);
    assert_int_equal(t->offset, 0);
    assert_int_equal(t->nbytes, 60);
    assert_memory_equal(t->data, f32, 60);
    t = tensor_ok(f, "b.f16");
    assert_shape(t, GGUF_T_F16, 1, 8, 1, 1);
    assert_int_equal(t->offset, 64);
    assert_memory_equal(t->data, f16, 16);
    t = tensor_ok(f, "c.q8");
    assert_shape(t, GGUF_T_Q8_0, 2, 64, 2, 1);
    assert_int_equal(t->offset, 128);
    assert_int_equal(t->nbytes, 136);
    assert_memory_equal(t->data, q8, 136);
    t = tensor_ok(f, "d.3d");
    assert_shape(t, GGUF_T_F32, 3, 2, 3, 4);
    assert_int_equal(t->offset, 320);
    assert_memory_equal(t->data, f3, 96);
    assert_int_equal(f->data_offset % 64, 0);
    assert_int_equal(f->size, f->data_offset + 320 + 128);
    /* Padding is zeros. */
    for (uint64_t i = f->data_offset + 60; i < f->data_offset + 64; i++)
        assert_int_equal(f->base[i], 0);
    for (uint64_t i = f->data_offset + 320 + 96; i < f->size; i++) assert_int_equal(f->base[i], 0);
    gguf_close(f);
    unlink(path);
}

static void test_writer_refuses_bad_tensors(void **state)
{
    gguf_writer *w = gguf_writer_new();
    mica_err err = {0};
    float x[64] = {0};
    int64_t ne[5] = {2, 2, 2, 2, 2};
    char name[80];
    memset(name, 'n', 64);
    name[64] = '\0';
    assert_int_equal(gguf_writer_add_tensor(w, name, GGUF_T_F32, 1, ne, x, &err), MICA_EINVAL);
    name[63] = '\0';
    assert_int_equal(gguf_writer_add_tensor(w, name, GGUF_T_F32, 1, ne, x, &err), MICA_OK);
    assert_int_equal(gguf_writer_add_tensor(w, name, GGUF_T_F32, 1, ne, x, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, name));
    assert_int_equal(gguf_writer_add_tensor(w, "z", GGUF_T_F32, 0, ne, x, &err), MICA_EINVAL);
    assert_int_equal(gguf_writer_add_tensor(w, "z", GGUF_T_F32, 5, ne, x, &err), MICA_EINVAL);
    assert_int_equal(gguf_writer_add_tensor(w, "z", 4, 1, ne, x, &err), MICA_EINVAL);
    int64_t odd[2] = {33, 1};
    assert_int_equal(gguf_writer_add_tensor(w, "z", GGUF_T_Q8_0, 2, odd, x, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "block size"));
    int64_t neg[2] = {4, -1};
    assert_int_equal(gguf_writer_add_tensor(w, "z", GGUF_T_F32, 2, neg, x, &err), MICA_EINVAL);
    int64_t huge[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 2};
    assert_int_equal(gguf_writer_add_tensor(w, "z", GGUF_T_F32, 3, huge, x, &err), MICA_EINVAL);

    /* A failed write leaves neither the file nor the temporary. */
    char path[512], tmp[600];
    tmp_path(path, sizeof path, "badalign.gguf");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 48), MICA_OK);
    assert_int_equal(gguf_writer_write(w, path, &err), MICA_EINVAL);
    assert_false(tu_exists(path) || tu_exists(tmp));
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 16), MICA_OK);
    snprintf(path, sizeof path, "%s/no/such/dir/x.gguf", tu_tmpdir());
    assert_int_equal(gguf_writer_write(w, path, &err), MICA_EIO);
    assert_non_null(strstr(err.msg, "no/such/dir"));
    gguf_writer_free(w);
}

/* Copying llama.cpp's own quantized file (kvs + tensors in order) must reproduce it byte
 * for byte: same layout rules, same padding. */
static void test_copy_real_model(void **state)
{
    char src[1024], path[512];
    TU_SHARED_PATH(src, MODELS "/qwen2moe.Q4_0.gguf");
    gguf_file *f = open_ok(src);
    gguf_writer *w = gguf_writer_new();
    mica_err err = {0};
    assert_int_equal(gguf_writer_copy_kv(w, f), MICA_OK);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        assert_int_equal(
            gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &err), 0);
    }
    tmp_path(path, sizeof path, "copy.gguf");
    assert_int_equal(gguf_writer_write(w, path, &err), MICA_OK);
    gguf_writer_free(w);

    gguf_file *g = open_ok(path);
    assert_int_equal(g->n_kv, f->n_kv);
    assert_int_equal(g->n_tensors, f->n_tensors);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        char a[256], b[256];
        assert_int_equal(g->kv[i].key.len, f->kv[i].key.len);
        assert_memory_equal(g->kv[i].key.ptr, f->kv[i].key.ptr, f->kv[i].key.len);
        assert_int_equal(g->kv[i].type, f->kv[i].type);
        gguf_kv_format(&f->kv[i], a, sizeof a);
        gguf_kv_format(&g->kv[i], b, sizeof b);
        assert_string_equal(a, b);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *a = &f->tensors[i], *b = &g->tensors[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->offset, b->offset);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(a->data, b->data, a->nbytes);
    }
    assert_int_equal(g->size, f->size);
    assert_memory_equal(g->base, f->base, f->size);
    gguf_close(g);
    gguf_close(f);
    unlink(path);
}

/* Many keys and tensors: every lookup goes through the hash index. */
static void test_many_keys(void **state)
{
    enum { N = 3000 };
    gguf_writer *w = gguf_writer_new();
    char key[64];
    static float zero[N];
    mica_err err = {0};
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k.%d", i);
        assert_int_equal(gguf_writer_set_u32(w, key, (uint32_t)i * 3), MICA_OK);
        snprintf(key, sizeof key, "t.%d", i);
        const int64_t ne[1] = {1};
        assert_int_equal(gguf_writer_add_tensor(w, key, GGUF_T_F32, 1, ne, zero + i, &err), 0);
    }
    char path[512];
    tmp_path(path, sizeof path, "many.gguf");
    assert_int_equal(gguf_writer_write(w, path, &err), MICA_OK);
    gguf_writer_free(w);
    gguf_file *f = open_ok(path);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k.%d", i);
        assert_int_equal(int_ok(f, key), i * 3);
        snprintf(key, sizeof key, "t.%d", i);
        const gguf_tensor *t = tensor_ok(f, key);
        assert_int_equal(t->offset, (uint64_t)i * 32);
    }
    gguf_close(f);
    unlink(path);
}

/* ---- GGUF v2 ------------------------------------------------------------------------- */

static void test_read_v2(void **state)
{
    bb b = {{0}, 0};
    bb_put(&b, "GGUF", 4);
    bb_u32(&b, 2);
    bb_u64(&b, 1); /* tensors */
    bb_u64(&b, 2); /* kvs */
    bb_str(&b, "general.architecture");
    bb_u32(&b, GGUF_VT_STRING);
    bb_str(&b, "v2test");
    bb_str(&b, "v2.count");
    bb_u32(&b, GGUF_VT_U32);
    bb_u32(&b, 7);
    bb_str(&b, "w");
    bb_u32(&b, 2);
    bb_u64(&b, 4);
    bb_u64(&b, 2);
    bb_u32(&b, GGUF_T_F32);
    bb_u64(&b, 0);
    size_t data = (b.n + 31) / 32 * 32;
    b.n = data;
    for (int i = 0; i < 8; i++) {
        float x = (float)i + 0.5f;
        bb_put(&b, &x, 4);
    }
    gguf_file *f = NULL;
    mica_err err = {0};
    if (gguf_open_memory(&f, b.d, b.n, "v2.gguf", &err)) fail_msg("%s", err.msg);
    assert_int_equal(f->version, 2);
    assert_string_equal(f->path, "v2.gguf");
    assert_int_equal(f->data_offset, data);
    assert_int_equal(int_ok(f, "v2.count"), 7);
    gguf_str s;
    assert_int_equal(gguf_get_str(f, "general.architecture", &s, &err), MICA_OK);
    assert_str(s, "v2test");
    const gguf_tensor *t = tensor_ok(f, "w");
    assert_shape(t, GGUF_T_F32, 2, 4, 2, 1);
    assert_ptr_equal(t->data, b.d + data);
    float x;
    memcpy(&x, (const uint8_t *)t->data + 28, 4);
    assert_true(x == 7.5f);
    gguf_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttype_layout),
        cmocka_unit_test(test_open_every_model),
        cmocka_unit_test(test_open_vocab_files),
        cmocka_unit_test(test_llama_dense_f32_facts),
        cmocka_unit_test(test_vocab_matches_json),
        cmocka_unit_test(test_quantized_mixes),
        cmocka_unit_test(test_f16_data_matches_f32),
        cmocka_unit_test(test_getters_report_key_and_type),
        cmocka_unit_test(test_kv_format),
        cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_writer_refuses_bad_tensors),
        cmocka_unit_test(test_copy_real_model),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_read_v2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
