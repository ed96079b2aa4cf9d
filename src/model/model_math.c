/*
 * model_math.c - the small pieces of a transformer's arithmetic that inference
 * (model/forward.c) and training (src/train) must compute identically, so that a model's
 * training logits are its inference logits bit for bit: softmax, rotary position angles and
 * rotations, top-k expert selection. Each follows ggml-cpu's order of operations.
 */
#include "model/model.h"

#include <math.h>

void model_softmax(float *x, int64_t n)
{
    /* expf(x - max), sum in double, then one multiply (ggml_soft_max). */
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void model_rope_angles(int n_rot, int32_t pos, float base, float *cs)
{
    /* Repeated float multiplication, as ggml builds them. */
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    float theta = (float)pos;
    for (int i = 0; i < n_rot / 2; i++) {
        cs[2 * i] = cosf(theta);
        cs[2 * i + 1] = sinf(theta);
        theta *= theta_scale;
    }
}

void model_rope_row(float *row, int n_heads, int head_dim, int n_rot, const float *cs,
                    model_rope mode, bool inverse)
{
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = row + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            const int i0 = mode == MODEL_ROPE_NORM ? 2 * i : i;
            const int i1 = mode == MODEL_ROPE_NORM ? 2 * i + 1 : i + half;
            const float c = cs[2 * i], s = inverse ? -cs[2 * i + 1] : cs[2 * i + 1];
            const float x0 = x[i0], x1 = x[i1];
            x[i0] = x0 * c - x1 * s;
            x[i1] = x0 * s + x1 * c;
        }
    }
}

void model_top_k(const float *probs, int n_expert, int k, int32_t *sel, float *sel_w)
{
    /* Ties go to the lower expert id, as ggml's argsort does. */
    for (int s = 0; s < k; s++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++) {
            bool taken = false;
            for (int u = 0; u < s; u++) taken |= sel[u] == e;
            if (!taken && (best < 0 || probs[e] > probs[best])) best = e;
        }
        sel[s] = best;
        sel_w[s] = probs[best];
    }
}
