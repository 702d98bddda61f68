/* Memory read bandwidth: T threads sum a 1 GiB buffer; best of 8 passes, as JSON.
 * A decode step of a dense model reads every weight once, so bandwidth / weight bytes
 * bounds single-stream decode tok/s. Used by bench/bench.py. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t n = (size_t)1 << 27; /* 2^27 x 8 bytes = 1 GiB */
    uint64_t *buf = malloc(n * sizeof *buf);
    if (!buf) return 1;
    omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0;
    uint64_t sink = 0;
    for (int pass = 0; pass < 8; pass++) {
        double t0 = omp_get_wtime();
        uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (size_t i = 0; i < n; i++) s += buf[i];
        double dt = omp_get_wtime() - t0;
        sink += s;
        double gbs = n * sizeof *buf / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("{\"read_gb_s\": %.2f, \"threads\": %d, \"checksum\": %llu}\n", best, threads,
           (unsigned long long)(sink & 0xffff));
    free(buf);
    return 0;
}
