/*
 * tok_bpe.c - byte-level BPE (placeholder until the BPE encoder lands).
 */
#include "tok_int.h"

mica_status tok_bpe_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err)
{
    return core_fail(err, MICA_EUNSUPPORTED, "byte-level BPE is not implemented yet");
}

mica_status tok_wpm_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err)
{
    return core_fail(err, MICA_EUNSUPPORTED, "WordPiece is not implemented yet");
}

int tok_pre_from_name(const char *name, size_t len) { return -1; }

size_t tok_bpe_unmap(const char *text, size_t len, char *out) { return 0; }
