/*
 * tok_rules.c - the adjustments llama.cpp's vocabulary loader makes from token texts and model
 * names, because GGUF files do not carry them: EOT/EOM/FIM ids found by text (and such tokens
 * forced to CONTROL), control tokens named "unused", the end-of-generation set with its
 * workarounds, the special-token list that tok_encode partitions on (longest first), and the
 * per-model LSTRIP/RSTRIP attributes (phi-3, jina, modern-bert). The lists of texts are
 * llama.cpp's (src/llama-vocab.cpp at the commit of shared/testdata/llamacpp). Where llama.cpp
 * walks an unordered map and takes the first match, this takes the lowest id.
 * Called once by tok_load (tok_vocab.c); changes only attributes, ids and lists.
 */
#include "tok_int.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define FW_BAR "\xEF\xBD\x9C" /* U+FF5C FULLWIDTH VERTICAL LINE, in DeepSeek's tokens */
#define LOW_8  "\xE2\x96\x81" /* U+2581, SentencePiece's escaped space */

static const char *const eot_texts[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|end_of_text|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "<" FW_BAR "end" LOW_8 "of" LOW_8 "sentence" FW_BAR ">",
                                        "<end_of_utterance>",
                                        NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>",
                                            "<fim-prefix>",
                                            "<fim_prefix>",
                                            "<" FW_BAR "fim" LOW_8 "begin" FW_BAR ">",
                                            "<PRE>",
                                            LOW_8 "<PRE>",
                                            "<|code_prefix|>",
                                            "<|prefix|>",
                                            NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>",
                                            "<fim-suffix>",
                                            "<fim_suffix>",
                                            "<" FW_BAR "fim" LOW_8 "hole" FW_BAR ">",
                                            "<SUF>",
                                            LOW_8 "<SUF>",
                                            "<|code_suffix|>",
                                            "<|suffix|>",
                                            NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>",
                                            "<fim-middle>",
                                            "<fim_middle>",
                                            "<" FW_BAR "fim" LOW_8 "end" FW_BAR ">",
                                            "<MID>",
                                            LOW_8 "<MID>",
                                            "<|code_middle|>",
                                            "<|middle|>",
                                            NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                            "<PAD>",       "[PAD]",     NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<|flush|>",
                                        "<|calls|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "</s>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "[EOS]",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<eos>",
                                        "<turn|>",
                                        "<|tool_response>",
                                        "<" FW_BAR "end" LOW_8 "of" LOW_8 "sentence" FW_BAR ">",
                                        "[e~[",
                                        NULL};
/* gpt-oss: llama.cpp always renders these, whatever their type */
static const char *const always_render_texts[] = {"<|channel|>", "<|message|>", "<|start|>",
                                                  "<|constrain|>", NULL};

static bool tok_text_in(const tok_token *t, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == t->len && memcmp(*list, t->text, t->len) == 0) return true;
    return false;
}

static int32_t tok_find_str(const tok_vocab *v, const char *s)
{
    return tok_find(v, s, strlen(s));
}

/* ---- ids found by text ---------------------------------------------------------------- */

/* The first token whose text is in list becomes *id (when not set) and is forced CONTROL. */
static void tok_detect_id(tok_vocab *v, int32_t *id, const char *const *list)
{
    if (*id >= 0) return;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (!tok_text_in(&v->tokens[i], list)) continue;
        *id = i;
        v->tokens[i].attr |= TOK_ATTR_CONTROL;
        return;
    }
}

static void tok_detect_ids(tok_vocab *v)
{
    tok_detect_id(v, &v->eot, eot_texts);
    tok_detect_id(v, &v->eom, eom_texts);
    tok_detect_id(v, &v->fim_pre, fim_pre_texts);
    tok_detect_id(v, &v->fim_suf, fim_suf_texts);
    tok_detect_id(v, &v->fim_mid, fim_mid_texts);
    tok_detect_id(v, &v->fim_pad, fim_pad_texts);
    tok_detect_id(v, &v->fim_rep, fim_rep_texts);
    tok_detect_id(v, &v->fim_sep, fim_sep_texts);
}

/* Control tokens with "unused" in their text are unused (e.g. Gemma's <unused12>). */
static void tok_mark_unused(tok_vocab *v)
{
    for (int32_t i = 0; i < v->n_tokens; i++) {
        tok_token *t = &v->tokens[i];
        if ((t->attr & TOK_ATTR_CONTROL) && strstr(t->text, "unused")) t->attr |= TOK_ATTR_UNUSED;
    }
}

/* ---- end of generation ---------------------------------------------------------------- */

static void tok_eog_add(tok_vocab *v, int32_t id)
{
    if (id < 0 || tok_is_eog(v, id)) return;
    /* the EOG texts, three FIM ids and eos/eot/eom name fewer than TOK_MAX_EOG tokens */
    assert(v->n_eog < TOK_MAX_EOG);
    v->eog[v->n_eog++] = id;
}

static void tok_eog_remove(tok_vocab *v, int32_t id)
{
    for (size_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] != id) continue;
        v->eog[i] = v->eog[--v->n_eog];
        return;
    }
}

/* The EOG member whose text is s, or -1. */
static int32_t tok_eog_with_text(const tok_vocab *v, const char *s)
{
    for (size_t i = 0; i < v->n_eog; i++) {
        const tok_token *t = &v->tokens[v->eog[i]];
        if (strlen(s) == t->len && memcmp(s, t->text, t->len) == 0) return v->eog[i];
    }
    return -1;
}

static void tok_add_eog_by_text(tok_vocab *v)
{
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (!tok_text_in(&v->tokens[i], eog_texts)) continue;
        tok_eog_add(v, i);
        v->tokens[i].attr |= TOK_ATTR_CONTROL;
    }
}

static void tok_force_always_rendered(tok_vocab *v)
{
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (tok_text_in(&v->tokens[i], always_render_texts))
            v->tokens[i].attr = TOK_ATTR_USER_DEFINED;
}

/* o200k_harmony / solar-open: with <|return|>+<|call|> (or <|calls|>+<|flush|>), <|end|> ends a
 * message, not generation; gemma4 / paddleocr: with <|tool_response>, </s> is not EOG. */
static void tok_eog_workarounds(tok_vocab *v)
{
    int32_t ret = tok_eog_with_text(v, "<|return|>"), flush = tok_eog_with_text(v, "<|flush|>");
    int32_t call = tok_eog_with_text(v, "<|call|>"), end = tok_eog_with_text(v, "<|end|>");
    if (call < 0) call = tok_eog_with_text(v, "<|calls|>");
    if (end >= 0 && call >= 0 && (ret >= 0 || flush >= 0)) {
        tok_eog_remove(v, end);
        v->tokens[end].attr = TOK_ATTR_USER_DEFINED;
    }
    int32_t s = tok_eog_with_text(v, "</s>");
    if (s >= 0 && tok_eog_with_text(v, "<|tool_response>") >= 0) {
        tok_eog_remove(v, s);
        v->tokens[s].attr = TOK_ATTR_NORMAL;
    }
}

static void tok_build_eog(tok_vocab *v)
{
    v->n_eog = 0;
    tok_eog_add(v, v->fim_pad);
    tok_eog_add(v, v->fim_rep);
    tok_eog_add(v, v->fim_sep);
    tok_add_eog_by_text(v);
    tok_force_always_rendered(v);
    tok_eog_add(v, v->eos);
    tok_eog_add(v, v->eot);
    tok_eog_add(v, v->eom);
    tok_eog_workarounds(v);
}

/* ---- the special-token list ----------------------------------------------------------- */

typedef struct tok_special_key {
    uint32_t len;
    int32_t id;
} tok_special_key;

/* Longest text first; equal lengths by id, so the order does not depend on the sort. */
static int tok_cmp_special(const void *a, const void *b)
{
    const tok_special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static mica_status tok_build_special(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    const uint32_t mask = TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN;
    size_t n = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) n += (v->tokens[i].attr & mask) != 0;
    tok_special_key *keys = malloc((n ? n : 1) * sizeof *keys);
    free(v->special);
    v->special = malloc((n ? n : 1) * sizeof *v->special);
    if (!keys || !v->special) {
        free(keys);
        return core_fail(err, MICA_ENOMEM, "%s: out of memory for %zu special tokens", f->path, n);
    }
    n = 0;
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (v->tokens[i].attr & mask) keys[n++] = (tok_special_key){v->tokens[i].len, i};
    qsort(keys, n, sizeof *keys, tok_cmp_special);
    for (size_t i = 0; i < n; i++) v->special[i] = keys[i].id;
    v->n_special = n;
    free(keys);
    return MICA_OK;
}

/* ---- per-model strip attributes ------------------------------------------------------- */

static void tok_set_attr(tok_vocab *v, const char *text, uint32_t attr, bool on)
{
    int32_t id = tok_find_str(v, text);
    if (id < 0) return; /* llama.cpp would fail the load here; mica just skips the token */
    if (on)
        v->tokens[id].attr |= attr;
    else
        v->tokens[id].attr &= ~attr;
}

static bool tok_contains(const char *s, const char *const *subs)
{
    for (; *subs; subs++)
        if (strstr(s, *subs)) return true;
    return false;
}

/* A string key as a NUL-terminated lower-case copy ("" when absent). */
static mica_status tok_key_lower(const gguf_file *f, const char *key, char *buf, size_t cap,
                                 bool lower, mica_err *err)
{
    gguf_str s = {"", 0};
    mica_status st = gguf_get_str_opt(f, key, &s, err);
    if (st) return st;
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = lower ? (char)tolower((unsigned char)s.ptr[i]) : s.ptr[i];
    buf[n] = '\0';
    return MICA_OK;
}

static mica_status tok_apply_model_attrs(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    static const char *const jina_pre[] = {"jina-v2-de", "jina-v2-es", "jina-v2-code", NULL};
    static const char *const mask_arch[] = {"nomic-bert-moe", "jina-bert-v3", NULL};
    static const char *const phi3[] = {"phi-3", "phi3", NULL};
    static const char *const modern_bert[] = {"modern-bert", NULL};
    char name[256], pre[256], arch[256];
    mica_status st;
    if ((st = tok_key_lower(f, "general.name", name, sizeof name, true, err)) ||
        (st = tok_key_lower(f, "tokenizer.ggml.pre", pre, sizeof pre, false, err)) ||
        (st = tok_key_lower(f, "general.architecture", arch, sizeof arch, false, err)))
        return st;
    if (tok_contains(pre, jina_pre) || tok_contains(arch, mask_arch)) {
        tok_set_attr(v, "<mask>", TOK_ATTR_LSTRIP, true);
    } else if (tok_contains(name, phi3)) {
        for (size_t i = 0; i < v->n_special; i++) v->tokens[v->special[i]].attr |= TOK_ATTR_RSTRIP;
        tok_set_attr(v, "</s>", TOK_ATTR_RSTRIP, true);
        tok_set_attr(v, "<unk>", TOK_ATTR_RSTRIP, false);
        tok_set_attr(v, "<s>", TOK_ATTR_RSTRIP, false);
        tok_set_attr(v, "<|endoftext|>", TOK_ATTR_RSTRIP, false);
    } else if (tok_contains(name, modern_bert)) {
        tok_set_attr(v, "[MASK]", TOK_ATTR_LSTRIP, true);
    }
    return MICA_OK;
}

mica_status tok_apply_rules(tok_vocab *v, const gguf_file *f, mica_err *err)
{
    mica_status st;
    tok_detect_ids(v);
    tok_mark_unused(v);
    tok_build_eog(v);
    if ((st = tok_build_special(v, f, err))) return st;
    return tok_apply_model_attrs(v, f, err);
}
