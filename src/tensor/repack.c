/*
 * repack.c - TENSOR_LAYOUT_Q4_0_X16: Q4_0 weights interleaved 16 rows at a time, the layout
 * the AVX-512 VNNI kernels (dot_avx512.c) read directly. In the file's layout a prompt's
 * matmul regroups every tile of 16 rows on each call (gathering 18-byte blocks from 16 rows
 * and their scales) and decoding reads one row at a time; interleaved once at load, a tile
 * is one sequential stream of 288-byte chunks. The bytes are the file's, moved, so a tile
 * takes the same room and every result keeps its bits. The layout is in tensor_int.h.
 *
 * Does not own: the kernels that read it (dot_avx512.c), which weights a model repacks
 * (model/), the memory (the caller's). Called by: model/, matmul.c, tests.
 */
#include "tensor/tensor_int.h"

#include <string.h>

size_t tensor_view_bytes(const tensor_view *v)
{
    return (size_t)v->ne[1] * (size_t)v->ne[2] * (size_t)v->ne[3] * v->row_bytes;
}

bool tensor_view_repackable(const tensor_view *v)
{
    if (v->layout != TENSOR_LAYOUT_GGUF || v->type != GGUF_T_Q4_0 || !v->data) return false;
    const tensor_gemm *g = tensor_kernels_get()->gemm[GGUF_T_Q4_0];
    return g && g->run_x16 && v->ne[0] <= g->max_k && v->ne[0] <= TENSOR_X16_MAX_BLOCKS * QK4_0 &&
           v->ne[1] % TENSOR_X16_ROWS == 0 && v->ne[3] == 1;
}

/* Byte offset, within a tile, of the 4 quant bytes j of block b of row i, and of its scale. */
static size_t x16_quants_at(int64_t b, int i, int j)
{
    return (size_t)b * TENSOR_X16_CHUNK + (size_t)(64 * j + 4 * i);
}

static size_t x16_scale_at(int64_t b, int i)
{
    return (size_t)b * TENSOR_X16_CHUNK + 256 + 2 * (size_t)i;
}

void tensor_view_repack(tensor_view *v, void *dst)
{
    assert(tensor_view_repackable(v));
    const int64_t nb = v->ne[0] / QK4_0, n_tiles = v->ne[1] * v->ne[2] / TENSOR_X16_ROWS;
    const size_t tile_bytes = TENSOR_X16_ROWS * v->row_bytes;
    for (int64_t t = 0; t < n_tiles; t++) {
        const uint8_t *src = (const uint8_t *)v->data + (size_t)t * tile_bytes;
        uint8_t *out = (uint8_t *)dst + (size_t)t * tile_bytes;
        for (int i = 0; i < TENSOR_X16_ROWS; i++) {
            const block_q4_0 *row = (const block_q4_0 *)(src + (size_t)i * v->row_bytes);
            for (int64_t b = 0; b < nb; b++) {
                for (int j = 0; j < 4; j++)
                    memcpy(out + x16_quants_at(b, i, j), row[b].qs + 4 * j, 4);
                memcpy(out + x16_scale_at(b, i), &row[b].d, 2);
            }
        }
    }
    v->data = dst;
    v->layout = TENSOR_LAYOUT_Q4_0_X16;
}

void tensor_x16_unpack_row(const tensor_view *v, int64_t row, uint8_t *dst)
{
    assert(v->layout == TENSOR_LAYOUT_Q4_0_X16 && row >= 0 && row < v->ne[1]);
    const int64_t nb = v->ne[0] / QK4_0;
    const int i = (int)(row % TENSOR_X16_ROWS);
    const uint8_t *tile =
        (const uint8_t *)v->data + (size_t)(row / TENSOR_X16_ROWS) * TENSOR_X16_ROWS * v->row_bytes;
    block_q4_0 *out = (block_q4_0 *)dst;
    for (int64_t b = 0; b < nb; b++) {
        for (int j = 0; j < 4; j++) memcpy(out[b].qs + 4 * j, tile + x16_quants_at(b, i, j), 4);
        memcpy(&out[b].d, tile + x16_scale_at(b, i), 2);
    }
}
