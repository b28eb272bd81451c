/* Monte Carlo π, the same kernel as cli/wasm/pi.wat: for every sample index i in [start, end),
 * h = splitmix64(i), x = h >> 32, y = h & 0xffffffff, and the point is inside the quarter circle
 * when x² + y² < 2^64 (exact in u64: x² <= ~y²). stdin: {"end":E,"shard":K,"start":S} (the
 * integers in this order); stdout: {"hits":H,"samples":N}. Built for WASI with clang and
 * wasi-libc, and natively with any C compiler (agent/benches/wasm_engines.rs). */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

int main(void) {
    char buf[4096];
    size_t len = fread(buf, 1, sizeof buf - 1, stdin);
    buf[len] = 0;
    uint64_t n[3] = {0, 0, 0}, cur = 0;
    int k = 0, in = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = buf[i];
        if (c >= '0' && c <= '9') {
            cur = cur * 10 + (uint64_t)(c - '0');
            in = 1;
        } else if (in) {
            if (k < 3) n[k] = cur;
            k++;
            cur = 0;
            in = 0;
        }
    }
    uint64_t end = n[0], start = n[2], hits = 0;
    for (uint64_t s = start; s < end; s++) {
        uint64_t z = (s + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        uint64_t x = z >> 32, y = z & 0xffffffffull;
        hits += (x * x) <= ~(y * y);
    }
    printf("{\"hits\":%" PRIu64 ",\"samples\":%" PRIu64 "}", hits, end - start);
    return 0;
}
