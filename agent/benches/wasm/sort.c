/* Allocates, sorts and hashes: n pseudo-random 32-bit numbers (xorshift32 from a seed) go
 * through malloc, qsort and an FNV-1a hash of the sorted array. stdin: {"n":N,"seed":S};
 * stdout: {"n":N,"min":A,"max":B,"fnv":H}. Exercises wasi-libc's allocator (memory.grow)
 * and its stdio more than the kernels do. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int main(void) {
    char buf[256];
    size_t len = fread(buf, 1, sizeof buf - 1, stdin);
    buf[len] = 0;
    unsigned long v[2] = {0, 0};
    int k = 0;
    for (char *p = buf; *p && k < 2;) {
        if (*p >= '0' && *p <= '9') v[k++] = strtoul(p, &p, 10); else p++;
    }
    size_t n = v[0];
    uint32_t x = v[1] ? (uint32_t)v[1] : 1;
    uint32_t *a = malloc(n * sizeof *a);
    if (!a) { fputs("out of memory\n", stderr); return 2; }
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        a[i] = x;
    }
    qsort(a, n, sizeof *a, cmp);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 4; b++) { h ^= (a[i] >> (8 * b)) & 0xff; h *= 0x100000001b3ull; }
    }
    printf("{\"n\":%zu,\"min\":%" PRIu32 ",\"max\":%" PRIu32 ",\"fnv\":%" PRIu64 "}",
           n, n ? a[0] : 0, n ? a[n - 1] : 0, h);
    free(a);
    return 0;
}
