/*
 * tok_vocab.c - loads a vocabulary from the tokenizer.* keys of a gguf_file, the way
 * llama.cpp's llama_vocab::impl::load does: the model kind and its default special ids and
 * flags, the token texts/scores/types and the text -> id map, BPE merges, special-token ids
 * (range-checked), add_bos/add_eos/add_sep/add_space_prefix, SPM byte-fallback ids.
 * The name- and text-based adjustments llama.cpp makes afterwards (EOG set, control-looking
 * tokens, per-model strip attributes) live in tok_rules.c. Also the small accessors of
 * tokenizer.h. Does not tokenize (tok_encode.c, tok_spm.c, tok_bpe.c) or render pieces
 * (tok_piece.c). Called by model/ through tok_load.
 */
#include "tok_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Caps far above real vocabularies (at most a few hundred thousand entries, a few MB). */
#define TOK_MAX_TOKENS (1u << 22)
#define TOK_MAX_MERGES (1u << 22)
#define TOK_MAX_POOL   ((size_t)1 << 30)

#define KEY_MODEL  "tokenizer.ggml.model"
#define KEY_PRE    "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES  "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"

/* "[EMPTY_<id>]" is what llama.cpp names an empty token; this bounds its length. */
#define TOK_EMPTY_NAME_MAX 24

/* ---- model kind and its defaults ------------------------------------------------------ */

static void tok_set_default_ids(tok_vocab *v, int32_t bos, int32_t eos, int32_t unk, int32_t sep,
                                int32_t pad, int32_t mask)
{
    v->bos = bos;
    v->eos = eos;
    v->unk = unk;
    v->sep = sep;
    v->pad = pad;
    v->mask = mask;
}

static bool tok_name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0) return true;
    return false;
}

/* llama.cpp sets a few flags from the pre-tokenizer name (for the names mica may support). */
static void tok_apply_pre_defaults(tok_vocab *v)
{
    static const char *const llama3[] = {"llama3",       "llama-v3", "llama-bpe", "falcon3",
                                         "falcon-h1",    "pixtral",  "midm-2.0",  "lfm2",
                                         "jina-v5-nano", NULL};
    static const char *const ignore_merges[] = {"minicpm5", "youtu", "tekken",
                                                "granite-embed-multi-97m", NULL};
    static const char *const add_bos[] = {"tekken", "chameleon", NULL};
    static const char *const add_sep[] = {"jina-v1-en", "jina-v2-code", "roberta-bpe", NULL};
    static const char *const no_bos[] = {"glm4", "chatglm-bpe", NULL};
    const char *p = v->pre_name;
    if (tok_name_in(p, llama3)) {
        v->ignore_merges = true;
        v->add_bos = true;
    }
    if (tok_name_in(p, ignore_merges)) v->ignore_merges = true;
    if (tok_name_in(p, add_bos)) v->add_bos = true;
    if (tok_name_in(p, add_sep)) v->add_sep = true;
    if (tok_name_in(p, no_bos)) v->bos = -1;
}

static mica_status tok_load_pre(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    gguf_str pre = {"default", 7};
    mica_status st = gguf_get_str_opt(f, KEY_PRE, &pre, err);
    if (st) return st;
    /* llama.cpp: a missing (or empty) pre-tokenizer means "default" */
    if (pre.len == 0) pre = (gguf_str){"default", 7};
    size_t n = pre.len < sizeof v->pre_name - 1 ? (size_t)pre.len : sizeof v->pre_name - 1;
    memcpy(v->pre_name, pre.ptr, n);
    v->pre_name[n] = '\0';
    if (v->kind != TOK_KIND_BPE) return MICA_OK;
    v->pre = tok_pre_from_name(pre.ptr, (size_t)pre.len);
    if (v->pre < 0)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: %s: unsupported pre-tokenizer '%.*s'",
                         f->path, KEY_PRE, (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
    tok_apply_pre_defaults(v);
    return MICA_OK;
}

static mica_status tok_load_model(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    gguf_str model;
    const gguf_kv *kv = gguf_find(f, KEY_MODEL);
    if (!kv) return core_fail(err, MICA_EFORMAT, "%s: %s: missing", f->path, KEY_MODEL);
    mica_status st = gguf_get_str(f, KEY_MODEL, &model, err);
    if (st) return st;

    v->linefeed = 13;
    if (gguf_str_eq(model, "llama")) {
        v->kind = TOK_KIND_SPM;
        tok_set_default_ids(v, 1, 2, 0, -1, -1, -1);
        v->add_space_prefix = true;
        v->add_bos = true;
    } else if (gguf_str_eq(model, "bert")) {
        v->kind = TOK_KIND_WPM;
        tok_set_default_ids(v, 101, -1, 100, 102, 0, 103);
        v->add_bos = true;
        v->add_sep = true;
    } else if (gguf_str_eq(model, "gpt2")) {
        v->kind = TOK_KIND_BPE;
        tok_set_default_ids(v, 11, 11, -1, -1, -1, -1);
    } else {
        return core_fail(err, MICA_EUNSUPPORTED, "%s: %s: unsupported tokenizer model '%.*s'",
                         f->path, KEY_MODEL, (int)(model.len > 64 ? 64 : model.len), model.ptr);
    }
    snprintf(v->model_name, sizeof v->model_name, "%.*s", (int)model.len, model.ptr);

    if ((st = tok_load_pre(v, f, err))) return st;
    return gguf_get_bool_opt(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err);
}

/* ---- tokens --------------------------------------------------------------------------- */

/* The array kv of key, checked to hold at least n elements of one of the allowed types;
 * *out is NULL when the key is absent and !required. */
static mica_status tok_get_array(const gguf_file *f, const char *key, bool required,
                                 uint32_t type_a, uint32_t type_b, uint64_t n, const gguf_kv **out,
                                 mica_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    *out = NULL;
    if (!kv) {
        if (required) return core_fail(err, MICA_EFORMAT, "%s: %s: missing", f->path, key);
        return MICA_OK;
    }
    if (kv->type != GGUF_VT_ARRAY || (kv->arr_type != type_a && kv->arr_type != type_b))
        return core_fail(err, MICA_EFORMAT, "%s: %s: expected an array of %s, found %s%s", f->path,
                         key, gguf_vtype_name(type_a),
                         kv->type == GGUF_VT_ARRAY ? "an array of " : "",
                         gguf_vtype_name(kv->type == GGUF_VT_ARRAY ? kv->arr_type : kv->type));
    if (kv->arr_n < n)
        return core_fail(err, MICA_EFORMAT, "%s: %s: %llu elements for %llu tokens", f->path, key,
                         (unsigned long long)kv->arr_n, (unsigned long long)n);
    *out = kv;
    return MICA_OK;
}

/* llama.cpp builds each token as a C string, so text after an embedded NUL is dropped. */
static size_t tok_c_len(gguf_str s)
{
    const char *nul = memchr(s.ptr, '\0', (size_t)s.len);
    return nul ? (size_t)(nul - s.ptr) : (size_t)s.len;
}

static uint32_t tok_attr_of_type(int64_t type)
{
    switch (type) {
    case TOK_TYPE_NORMAL:
        return TOK_ATTR_NORMAL;
    case TOK_TYPE_UNKNOWN:
        return TOK_ATTR_UNKNOWN;
    case TOK_TYPE_CONTROL:
        return TOK_ATTR_CONTROL;
    case TOK_TYPE_USER_DEFINED:
        return TOK_ATTR_USER_DEFINED;
    case TOK_TYPE_UNUSED:
        return TOK_ATTR_UNUSED;
    case TOK_TYPE_BYTE:
        return TOK_ATTR_BYTE;
    default:
        return 0; /* undefined */
    }
}

static mica_status tok_alloc_pool(tok_vocab *v, const gguf_file *f, const gguf_kv *kv,
                                  mica_err *err)
{
    size_t total = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        size_t len = tok_c_len(gguf_arr_str(f, kv, (uint64_t)i));
        total += (len ? len : TOK_EMPTY_NAME_MAX) + 1;
        if (total > TOK_MAX_POOL)
            return core_fail(err, MICA_ENOMEM, "%s: %s: token texts exceed the cap of %zu bytes",
                             f->path, KEY_TOKENS, TOK_MAX_POOL);
    }
    v->pool = malloc(total ? total : 1);
    v->tokens = core_calloc((size_t)v->n_tokens, sizeof *v->tokens);
    if (!v->pool || !v->tokens || tok_map_init(&v->ids, (uint64_t)v->n_tokens))
        return core_fail(err, MICA_ENOMEM, "%s: out of memory for %d tokens", f->path, v->n_tokens);
    return MICA_OK;
}

/* Copies token i's text into the pool at *pos (an empty text becomes "[EMPTY_i]"). */
static void tok_copy_text(tok_vocab *v, const gguf_file *f, const gguf_kv *kv, int32_t i,
                          size_t *pos)
{
    gguf_str s = gguf_arr_str(f, kv, (uint64_t)i);
    size_t len = tok_c_len(s);
    char *dst = v->pool + *pos;
    if (len == 0)
        len = (size_t)snprintf(dst, TOK_EMPTY_NAME_MAX + 1, "[EMPTY_%d]", i);
    else
        memcpy(dst, s.ptr, len);
    dst[len] = '\0';
    v->tokens[i].text = dst;
    v->tokens[i].len = (uint32_t)len;
    if (len > v->max_token_len) v->max_token_len = (uint32_t)len;
    *pos += len + 1;
}

static mica_status tok_load_tokens(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    const gguf_kv *kv, *scores, *types;
    mica_status st;
    if ((st = tok_get_array(f, KEY_TOKENS, true, GGUF_VT_STRING, GGUF_VT_STRING, 0, &kv, err)))
        return st;
    if (kv->arr_n == 0) return core_fail(err, MICA_EFORMAT, "%s: %s: empty", f->path, KEY_TOKENS);
    if (kv->arr_n > TOK_MAX_TOKENS)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: %s: %llu tokens exceed the cap of %u",
                         f->path, KEY_TOKENS, (unsigned long long)kv->arr_n, TOK_MAX_TOKENS);
    v->n_tokens = (int32_t)kv->arr_n;
    if ((st = tok_get_array(f, KEY_SCORES, false, GGUF_VT_F32, GGUF_VT_I32, kv->arr_n, &scores,
                            err)) ||
        (st = tok_get_array(f, KEY_TYPES, false, GGUF_VT_I32, GGUF_VT_I32, kv->arr_n, &types,
                            err)) ||
        (st = tok_alloc_pool(v, f, kv, err)))
        return st;

    size_t pos = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        tok_token *t = &v->tokens[i];
        tok_copy_text(v, f, kv, i, &pos);
        if (scores)
            t->score = scores->arr_type == GGUF_VT_F32 ? (float)gguf_arr_float(scores, (uint64_t)i)
                                                       : (float)gguf_arr_int(scores, (uint64_t)i);
        /* without token_type every token is NORMAL, as in llama.cpp */
        t->type = types ? (int32_t)gguf_arr_int(types, (uint64_t)i) : TOK_TYPE_NORMAL;
        t->attr = tok_attr_of_type(t->type);
        if (!tok_map_put(&v->ids, t->text, t->len, i))
            return core_fail(err, MICA_EFORMAT, "%s: %s: duplicate token '%.*s' has ids %d and %d",
                             f->path, KEY_TOKENS, (int)(t->len > 64 ? 64 : t->len), t->text,
                             tok_find(v, t->text, t->len), i);
    }
    return MICA_OK;
}

/* ---- BPE merges ----------------------------------------------------------------------- */

static mica_status tok_load_merges(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    const gguf_kv *kv;
    mica_status st;
    if ((st = tok_get_array(f, KEY_MERGES, true, GGUF_VT_STRING, GGUF_VT_STRING, 0, &kv, err)))
        return st;
    if (kv->arr_n > TOK_MAX_MERGES)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: %s: %llu merges exceed the cap of %u",
                         f->path, KEY_MERGES, (unsigned long long)kv->arr_n, TOK_MAX_MERGES);
    size_t total = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        total += tok_c_len(gguf_arr_str(f, kv, i)) + 1;
        if (total > TOK_MAX_POOL)
            return core_fail(err, MICA_ENOMEM, "%s: %s: merges exceed the cap of %zu bytes",
                             f->path, KEY_MERGES, TOK_MAX_POOL);
    }
    v->merge_pool = malloc(total ? total : 1);
    if (!v->merge_pool || tok_map_init(&v->merges, kv->arr_n))
        return core_fail(err, MICA_ENOMEM, "%s: out of memory for %llu merges", f->path,
                         (unsigned long long)kv->arr_n);
    size_t pos = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        gguf_str s = gguf_arr_str(f, kv, i);
        size_t len = tok_c_len(s);
        char *dst = v->merge_pool + pos;
        memcpy(dst, s.ptr, len);
        dst[len] = '\0';
        pos += len + 1;
        /* a repeated merge keeps its first (lowest) rank, like llama.cpp's emplace */
        (void)tok_map_put(&v->merges, dst, (uint32_t)len, (int32_t)i);
    }
    return MICA_OK;
}

int32_t tok_merge_rank(const tok_vocab *v, const char *l, size_t ln, const char *r, size_t rn)
{
    char small[256];
    size_t n = ln + 1 + rn;
    /* llama.cpp splits "a b" at the first space after the first byte; a pair whose left part
     * holds such a space was stored under another split, so it is not this merge */
    if (ln == 0 || (ln > 1 && memchr(l + 1, ' ', ln - 1))) return -1;
    char *key = n <= sizeof small ? small : malloc(n);
    if (!key) return -1;
    memcpy(key, l, ln);
    key[ln] = ' ';
    memcpy(key + ln + 1, r, rn);
    int32_t rank = tok_map_get(&v->merges, key, n);
    if (key != small) free(key);
    return rank;
}

/* ---- special ids and flags ------------------------------------------------------------ */

/* An id key: absent keeps the default (dropped when out of range, as llama.cpp does); a
 * present value must name a token. */
static mica_status tok_load_id(const gguf_file *f, const char *key, int32_t n_tokens, int32_t *id,
                               mica_err *err)
{
    int64_t val = -1;
    if (*id >= n_tokens) *id = -1;
    mica_status st = gguf_get_int_opt(f, key, &val, err);
    if (st || !gguf_find(f, key)) return st;
    if (val < 0 || val >= n_tokens)
        return core_fail(err, MICA_ERANGE,
                         "%s: %s: id %lld out of range (vocabulary has %d tokens)", f->path, key,
                         (long long)val, n_tokens);
    *id = (int32_t)val;
    return MICA_OK;
}

static mica_status tok_load_special_ids(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    const struct {
        const char *key;
        int32_t *id;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos},
        {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.eot_token_id", &v->eot},
        {"tokenizer.ggml.eom_token_id", &v->eom},
        {"tokenizer.ggml.unknown_token_id", &v->unk},
        {"tokenizer.ggml.seperator_token_id", &v->sep}, /* sic: llama.cpp's spelling */
        {"tokenizer.ggml.padding_token_id", &v->pad},
        {"tokenizer.ggml.mask_token_id", &v->mask},
        {"tokenizer.ggml.fim_pre_token_id", &v->fim_pre},
        {"tokenizer.ggml.fim_suf_token_id", &v->fim_suf},
        {"tokenizer.ggml.fim_mid_token_id", &v->fim_mid},
        {"tokenizer.ggml.fim_pad_token_id", &v->fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &v->fim_rep},
        {"tokenizer.ggml.fim_sep_token_id", &v->fim_sep},
        /* deprecated names, read after the new ones as llama.cpp does */
        {"tokenizer.ggml.prefix_token_id", &v->fim_pre},
        {"tokenizer.ggml.suffix_token_id", &v->fim_suf},
        {"tokenizer.ggml.middle_token_id", &v->fim_mid},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        mica_status st = tok_load_id(f, keys[i].key, v->n_tokens, keys[i].id, err);
        if (st) return st;
    }
    return MICA_OK;
}

static mica_status tok_require_id(const gguf_file *f, bool add, int32_t id, const char *add_key,
                                  const char *id_key, mica_err *err)
{
    if (add && id < 0)
        return core_fail(err, MICA_EFORMAT, "%s: %s is true, but %s is not set", f->path, add_key,
                         id_key);
    return MICA_OK;
}

static mica_status tok_load_flags(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    mica_status st;
    if ((st = gguf_get_bool_opt(f, "tokenizer.ggml.add_bos_token", &v->add_bos, err)) ||
        (st = gguf_get_bool_opt(f, "tokenizer.ggml.add_eos_token", &v->add_eos, err)) ||
        (st = gguf_get_bool_opt(f, "tokenizer.ggml.add_sep_token", &v->add_sep, err)))
        return st;
    if ((st = tok_require_id(f, v->add_bos, v->bos, "tokenizer.ggml.add_bos_token",
                             "tokenizer.ggml.bos_token_id", err)) ||
        (st = tok_require_id(f, v->add_eos, v->eos, "tokenizer.ggml.add_eos_token",
                             "tokenizer.ggml.eos_token_id", err)) ||
        (st = tok_require_id(f, v->add_sep, v->sep, "tokenizer.ggml.add_sep_token",
                             "tokenizer.ggml.seperator_token_id", err)))
        return st;
    /* BertNormalizer: strip_accents follows lowercase unless stored itself (as in HF) */
    v->norm_lowercase = true;
    if ((st = gguf_get_bool_opt(f, "tokenizer.ggml.normalizer.lowercase", &v->norm_lowercase, err)))
        return st;
    v->norm_strip_accents = v->norm_lowercase;
    return gguf_get_bool_opt(f, "tokenizer.ggml.normalizer.strip_accents", &v->norm_strip_accents,
                             err);
}

/* ---- byte tokens and the newline ------------------------------------------------------ */

/* byte_ids[b] = "<0xXX>" (upper-case hex); for SPM, failing that, the one-byte token, which is
 * llama.cpp's byte_to_token fallback. */
static void tok_set_byte_ids(tok_vocab *v)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        v->byte_ids[b] = tok_find(v, name, 6);
        if (v->byte_ids[b] < 0 && v->kind == TOK_KIND_SPM) {
            char c = (char)b;
            v->byte_ids[b] = tok_find(v, &c, 1);
        }
    }
}

/* llama.cpp's linefeed_id: SPM's byte token for '\n', WPM's pad, BPE's first token of "\n". */
static void tok_set_linefeed(tok_vocab *v)
{
    if (v->kind == TOK_KIND_SPM) {
        v->linefeed = v->byte_ids['\n'] >= 0 ? v->byte_ids['\n'] : v->pad;
    } else if (v->kind == TOK_KIND_WPM) {
        v->linefeed = v->pad;
    } else {
        tok_ids ids;
        tok_ids_init(&ids, 64);
        v->linefeed = v->pad;
        if (tok_bpe_encode(v, "\n", 1, &ids, NULL) == MICA_OK && ids.n > 0) v->linefeed = ids.v[0];
        tok_ids_free(&ids);
    }
}

/* ---- load / free ---------------------------------------------------------------------- */

static tok_vocab *tok_alloc(void)
{
    tok_vocab *v = core_calloc(1, sizeof *v);
    if (!v) return NULL;
    int32_t *ids[] = {&v->bos,     &v->eos,     &v->unk,      &v->pad,     &v->sep,
                      &v->eot,     &v->eom,     &v->linefeed, &v->mask,    &v->fim_pre,
                      &v->fim_suf, &v->fim_mid, &v->fim_pad,  &v->fim_rep, &v->fim_sep};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) *ids[i] = -1;
    for (int b = 0; b < 256; b++) v->byte_ids[b] = -1;
    return v;
}

mica_status tok_load(tok_vocab **out, const gguf_file *f, mica_err *err)
{
    mica_status st;
    *out = NULL;
    tok_vocab *v = tok_alloc();
    if (!v) return core_fail(err, MICA_ENOMEM, "%s: out of memory for the vocabulary", f->path);
    if ((st = tok_load_model(v, f, err))) goto fail;
    if ((st = tok_load_tokens(v, f, err))) goto fail;
    if (v->kind == TOK_KIND_BPE && (st = tok_load_merges(v, f, err))) goto fail;
    tok_set_byte_ids(v);
    if ((st = tok_load_special_ids(v, f, err))) goto fail;
    if ((st = tok_load_flags(v, f, err))) goto fail;
    if ((st = tok_apply_rules(v, f, err))) goto fail;
    tok_set_linefeed(v);
    *out = v;
    return MICA_OK;
fail:
    tok_free(v);
    return st;
}

void tok_free(tok_vocab *v)
{
    if (!v) return;
    tok_map_free(&v->ids);
    tok_map_free(&v->merges);
    free(v->tokens);
    free(v->pool);
    free(v->merge_pool);
    free(v->special);
    free(v);
}

/* ---- accessors ------------------------------------------------------------------------ */

int32_t tok_n_vocab(const tok_vocab *v)
{
    return v->n_tokens;
}
int32_t tok_bos(const tok_vocab *v)
{
    return v->bos;
}
int32_t tok_eos(const tok_vocab *v)
{
    return v->eos;
}
bool tok_add_bos(const tok_vocab *v)
{
    return v->add_bos;
}
bool tok_add_eos(const tok_vocab *v)
{
    return v->add_eos;
}
const char *tok_model_name(const tok_vocab *v)
{
    return v->model_name;
}
const char *tok_pre_name(const tok_vocab *v)
{
    return v->pre_name;
}

bool tok_is_eog(const tok_vocab *v, int32_t id)
{
    for (size_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return true;
    return false;
}

bool tok_is_control(const tok_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens && (v->tokens[id].attr & TOK_ATTR_CONTROL);
}
